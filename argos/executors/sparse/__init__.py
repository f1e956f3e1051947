"""Deprecated path: sparse convolution moved to :mod:`argos.sparse` (one release of grace)."""
import warnings

from argos.sparse import *  # noqa: F401,F403
from argos.sparse import __all__  # noqa: F401

__deprecated_shim__ = True
warnings.warn("argos.executors.sparse is deprecated and will be removed in the next release; "
              "import argos.sparse instead", DeprecationWarning, stacklevel=2)
