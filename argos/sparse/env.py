"""Settings the sparse kernels read from the environment, without importing triton."""
from __future__ import annotations

import os

__all__ = ["triton_interpreting"]


def triton_interpreting() -> bool:
    """Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``); read without
    importing triton."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
