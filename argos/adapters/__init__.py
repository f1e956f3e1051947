"""Adapters: one file per framework, imported lazily by name through ``argos.registry.ADAPTERS``."""
from argos.adapters.base import Adapter

__all__ = ["Adapter"]
