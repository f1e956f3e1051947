"""Returning freed heap memory to the operating system on long runs."""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

__all__ = ["release_free_memory"]

_libc: Optional[ctypes.CDLL] = None
_checked = False


def release_free_memory() -> bool:
    """Ask glibc to give freed heap pages back (``malloc_trim(0)``); False where there is no glibc.

    A detector fed inputs of many shapes (packed canvases vary frame to frame) frees tensors of
    many sizes; glibc keeps the freed pages in its arenas, so resident memory creeps up over hours
    though nothing is leaked. Trimming now and then keeps it flat.
    """
    global _libc, _checked
    if not _checked:
        _checked = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else None
        except OSError:
            _libc = None
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
