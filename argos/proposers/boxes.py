"""Deprecated path: mask/box geometry moved to :mod:`argos.geometry` (one release of grace)."""
from argos._deprecation import moved

__deprecated_shim__ = True
moved(__name__, "argos.geometry")
