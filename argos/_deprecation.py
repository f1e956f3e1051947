"""Old import paths that keep working for one release, with a :class:`DeprecationWarning`."""
from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["moved"]


def moved(old: str, new: str) -> None:
    """Make module ``old`` an alias of module ``new`` and warn the importer once.

    Called from the shim file at ``old``; afterwards ``sys.modules[old] is sys.modules[new]``, so
    classes keep one identity whichever path a user imported them by.
    """
    warnings.warn(f"{old} is deprecated and will be removed in the next release; import {new} instead",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
