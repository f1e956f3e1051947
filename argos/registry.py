"""Small name -> factory registries, one per plug-in kind.

Entries are either registered objects or ``"module:attr"`` strings resolved on first use, so
that heavy frameworks are imported only when their plug-in is chosen.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Union

__all__ = ["Registry", "PROPOSERS", "EXECUTORS", "ADAPTERS"]


class Registry:
    """Maps names to factories. Duplicate names are refused; unknown names explain themselves."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Union[str, Callable[..., Any]]] = {}

    def register(self, name: str, obj: Union[str, Callable[..., Any], None] = None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        ``obj`` may be a ``"package.module:attr"`` string, imported lazily by :meth:`get`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(target):
            existing = self._entries.get(name)
            if existing is not None and existing is not target:
                # A lazy entry being replaced by the class it names is not a duplicate.
                if not (isinstance(existing, str) and _qualname(target) == existing):
                    raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            return target

        return add if obj is None else add(obj)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (str), got {type(name).__name__}")
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


PROPOSERS = Registry("proposer")
EXECUTORS = Registry("executor")
ADAPTERS = Registry("adapter")

PROPOSERS.register("full", "argos.proposers.full:FullProposer")
PROPOSERS.register("oracle", "argos.proposers.oracle:OracleProposer")
PROPOSERS.register("motion", "argos.proposers.motion:MotionProposer")
PROPOSERS.register("qunet", "argos.proposers.qunet.proposer:QUNetProposer")
PROPOSERS.register("distill", "argos.proposers.distill:DistillProposer")
PROPOSERS.register("temporal", "argos.proposers.temporal:TemporalProposer")
EXECUTORS.register("masked", "argos.executors.masked:MaskedExecutor")
EXECUTORS.register("gather_scatter", "argos.executors.gather_scatter:GatherScatterExecutor")
EXECUTORS.register("packed_crops", "argos.executors.packed_crops:PackedCropsExecutor")
ADAPTERS.register("yolov5", "argos.adapters.yolov5:YOLOv5Adapter")
ADAPTERS.register("resnet_yolo", "argos.adapters.resnet_yolo:ResNetYOLOAdapter")
ADAPTERS.register("dynconv", "argos.adapters.dynconv:DynConvAdapter")
ADAPTERS.register("pspnet", "argos.adapters.pspnet:PSPNetAdapter")
ADAPTERS.register("cascade_mask_rcnn", "argos.adapters.cascade_mask_rcnn:CascadeMaskRCNNAdapter")
ADAPTERS.register("torchvision", "argos.adapters.tv_detection:TorchvisionAdapter")
ADAPTERS.register("onnx", "argos.adapters.exported:ExportedAdapter")
ADAPTERS.register("openvino", "argos.adapters.exported:OpenVINOAdapter")
