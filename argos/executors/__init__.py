"""Executors: run an adapter only where proposals say. Built by name through ``argos.registry.EXECUTORS``."""
from argos.executors.base import Executor

__all__ = ["Executor"]
