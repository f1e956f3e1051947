"""A camera's calibration file: the argos configuration measured best on its earlier footage.

``argos calibrate VIDEO --weights W --out CAM.json`` writes it (see :mod:`argos.tools.calibrate`);
``argos run LATER --weights W --calibration CAM.json`` and
``argos.wrap(W, "auto", "auto", calibration="CAM.json")`` use it. The file is JSON::

    {"format": "argos-calibration", "version": 1,
     "config": {"proposer": "temporal", "executor": "packed_crops",
                "proposer_kwargs": {...}, "executor_kwargs": {...}},
     "detector": {"weights": "yolov5n.pt", "img_size": 640, "names": {"0": "person", ...}},
     "frame_size": [H, W],
     "calibration": {"source": ..., "start": 0, "frames": 150, "seconds": 41.2, "target": 0.97,
                     "reached_target": true, "chosen": {point}, "points": [...]}}

A file from another detector's classes, another input size or another frame size is refused
with an error that names both sides: its choice was measured for that setting only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

__all__ = ["Calibration", "load_calibration"]

FORMAT, VERSION = "argos-calibration", 1


@dataclass
class Calibration:
    """What one camera's calibration chose, and for which detector and frame size."""

    proposer: str
    executor: str
    proposer_kwargs: Dict[str, Any] = field(default_factory=dict)
    executor_kwargs: Dict[str, Any] = field(default_factory=dict)
    names: Dict[int, str] = field(default_factory=dict)
    img_size: Optional[int] = None
    frame_size: Optional[Tuple[int, int]] = None
    weights: Optional[str] = None
    report: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION,
            "config": {"proposer": self.proposer, "executor": self.executor,
                       "proposer_kwargs": self.proposer_kwargs, "executor_kwargs": self.executor_kwargs},
            "detector": {"weights": self.weights, "img_size": self.img_size,
                         "names": {str(k): v for k, v in self.names.items()}},
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "calibration": self.report,
        }

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1))
        return path

    # -- checks against what it is used with ------------------------------------------------------

    def _where(self) -> str:
        return f"calibration {self.path}" if self.path else "the calibration"

    def check_detector(self, names: Dict[int, str], img_size: Optional[int]) -> None:
        """Refuse a detector with other classes, or another input size, than the calibration's."""
        if self.names and {int(k): v for k, v in names.items()} != self.names:
            ours = ", ".join(list(self.names.values())[:4])
            theirs = ", ".join(list(names.values())[:4])
            raise ValueError(f"{self._where()} was made for a detector with {len(self.names)} classes ({ours}, ...); "
                             f"this one has {len(names)} ({theirs}, ...): calibrate again with this detector")
        if self.img_size and img_size and int(img_size) != int(self.img_size):
            raise ValueError(f"{self._where()} was made at input size {self.img_size}, not {img_size}: "
                             f"pass --img-size {self.img_size} (img_size={self.img_size}), or calibrate at {img_size}")

    def check_frame(self, shape: Sequence[int]) -> None:
        """Refuse frames of another size than the calibration footage's (another camera, or a resize)."""
        h, w = int(shape[0]), int(shape[1])
        if self.frame_size and (h, w) != tuple(self.frame_size):
            fh, fw = self.frame_size
            raise ValueError(f"{self._where()} was made on {fw}x{fh} frames; these are {w}x{h}. A calibration "
                             "holds for one camera at one resolution: calibrate on this camera's footage")


def load_calibration(path: Union[str, Path]) -> Calibration:
    """Read a calibration file; a missing, empty, corrupt or foreign file raises with its path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path} (write one with argos calibrate VIDEO --out {path})")
    text = path.read_text()
    if not text.strip():
        raise ValueError(f"calibration file is empty: {path}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"calibration file {path} is not valid JSON ({err}); write it again with argos calibrate") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an argos calibration file (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise ValueError(f"calibration file {path} has version {data.get('version')}; this argos reads version {VERSION}")
    try:
        cfg, det = data["config"], data.get("detector") or {}
        cal = Calibration(
            proposer=str(cfg["proposer"]), executor=str(cfg["executor"]),
            proposer_kwargs=dict(cfg.get("proposer_kwargs") or {}),
            executor_kwargs=dict(cfg.get("executor_kwargs") or {}),
            names={int(k): str(v) for k, v in (det.get("names") or {}).items()},
            img_size=det.get("img_size"), weights=det.get("weights"),
            frame_size=tuple(int(v) for v in data["frame_size"]) if data.get("frame_size") else None,
            report=dict(data.get("calibration") or {}), path=str(path),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"calibration file {path} is incomplete or malformed ({type(err).__name__}: {err})") from err
    return cal
