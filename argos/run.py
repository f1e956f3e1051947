"""Deprecated path: moved to :mod:`argos.tools.run` (one release of grace)."""
from argos._deprecation import moved

__deprecated_shim__ = True
moved(__name__, "argos.tools.run")
