"""Old import paths that keep working for one release, with a :class:`DeprecationWarning`."""
from __future__ import annotations

import importlib
import runpy
import sys
import warnings

__all__ = ["moved", "moved_names"]


def moved(old: str, new: str) -> None:
    """Make module ``old`` an alias of module ``new`` and warn the importer once.

    Called from the shim file at ``old``; afterwards ``sys.modules[old] is sys.modules[new]``, so
    classes keep one identity whichever path a user imported them by.
    """
    if old == "__main__":  # ``python -m old.path``: run the new module as the script
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        name = spec.name if spec is not None else old
        warnings.warn(f"python -m {name} is deprecated and will be removed in the next release; "
                      f"use python -m {new}", DeprecationWarning, stacklevel=2)
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    warnings.warn(f"{old} is deprecated and will be removed in the next release; import {new} instead",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


def moved_names(module: str, new: str, names) -> None:
    """Let ``from module import NAME`` keep working for ``names`` that moved to module ``new``.

    Installs a module ``__getattr__`` that imports ``new`` on first use (by name, so the two
    modules do not import each other) and warns.
    """
    names = frozenset(names)
    mod = sys.modules[module]

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated and will be removed in the next release; "
                      f"import it from {new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)

    mod.__getattr__ = __getattr__
