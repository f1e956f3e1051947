"""Deprecated path: moved to :mod:`argos.tools.qunet.train` (one release of grace)."""
from argos._deprecation import moved

__deprecated_shim__ = True
moved(__name__, "argos.tools.qunet.train")
