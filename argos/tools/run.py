"""``argos run``: a wrapped detector over a video, an image folder or a camera.

Per-frame detections go to a JSON-lines file as they are made (flushed every frame), so a
crash or a truncated video loses nothing already written. On SIGINT (Ctrl-C) or SIGTERM the
run stops after the frame in hand: the JSON-lines file holds exactly the frames processed, the
video is finalized so it decodes, and the summary says ``"interrupted": true`` (a second signal
stops at once). Every summary says why the run ``ended``. The summary JSON has ``frames``,
``fps``, ``teacher_fraction``, ``area_processed``, ``latency_ms`` (``median``, ``proposer``,
``detector``, ``mean``) and ``memory_mb`` (resident memory after the first frame and at the end);
with ``compare=True`` the unwrapped detector also runs on every frame, interleaved, and the
summary adds ``baseline_fps``, ``speedup``, ``speedup_median``, ``agreement``,
``reference_detections`` (the unwrapped detections at the agreement score) and
``map50_vs_baseline`` (``None`` when there are no reference detections).

``fps`` and ``speedup`` are throughput figures: frames over the summed per-frame times. A video
proposer's key frames (full detector plus student training) are few and slow, so the median
frame hides them; the mean counts them. ``speedup_median`` is the ratio of medians.
"""
from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import cv2
import torch

from argos.data.video import VideoReader
from argos.metrics.flops import counting_ms
from argos.structures import Detections
from argos.tools.outputs import check_outputs
from argos.wrap import Wrapped

__all__ = ["RunConfig", "run_stream"]


@dataclass
class RunConfig:
    """Where ``run_stream`` reads and writes."""

    source: Union[str, int]
    #: first frame read (frames before it are skipped: e.g. the ones a calibration used)
    start: int = 0
    out_video: Optional[str] = None
    detections: Optional[str] = None
    summary: Optional[str] = None
    compare: bool = False
    stride: int = 1
    limit: Optional[int] = None
    classes: Optional[List[str]] = None
    gt_score: float = 0.25
    agreement_score: float = 0.25
    #: write the running fps (and, with ``compare``, the speedup) on each frame of ``out_video``
    caption: bool = False
    #: keep per-frame times and areas in the summary (``per_frame``: argos_ms, baseline_ms, area)
    per_frame: bool = False


def _rss_mb() -> float:
    """Resident memory of this process now, MiB (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _median(xs: List[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def _record(index: int, d: Detections, names: Dict[int, str]) -> str:
    return json.dumps({
        "frame": index,
        "boxes": [[round(v, 2) for v in b] for b in d.boxes.tolist()],
        "scores": [round(s, 4) for s in d.scores.tolist()],
        "labels": d.labels.tolist(),
        "names": [names.get(int(c), str(c)) for c in d.labels.tolist()],
    })


class _StopRequest:
    """SIGINT/SIGTERM while a run is in progress: the first finishes the frame in hand, the second
    stops at once (KeyboardInterrupt). Installed only from the main thread (Python's rule)."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\nargos run: {self.signal}: stopping after this frame (send it again to stop at once)",
              file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_stream(fast: Wrapped, cfg: RunConfig, progress: bool = True, min_score: float = 0.25,
               on_frame: Optional[Callable[..., None]] = None) -> Dict[str, Any]:
    """Run ``fast`` on every frame of ``cfg.source``; returns the summary dict (also written to ``cfg.summary``).

    Args:
        min_score: detections below it are not written to the JSON-lines file or drawn.
        on_frame: called after each frame as ``on_frame(index, frame, dets, baseline_dets or None,
            proposals)`` (e.g. to keep a still).
    """
    from tqdm import tqdm

    from argos.metrics.coco_eval import map_against, reference_targets
    from argos.metrics.detection import recall_vs_reference
    from argos.viz import caption, draw_overlay

    source = int(cfg.source) if isinstance(cfg.source, str) and cfg.source.isdigit() else cfg.source
    check_outputs([source], [cfg.detections, cfg.summary], [cfg.out_video])
    reader = VideoReader(source, start=cfg.start, stride=cfg.stride, limit=cfg.limit)
    adapter, names = fast.adapter, fast.adapter.names
    keep_labels = adapter.class_ids(cfg.classes)
    fast.proposer.reset()
    total = len(reader) if reader.frame_count is not None else None
    lines = open(cfg.detections, "w") if cfg.detections else None
    writer = None
    times: Dict[str, List[float]] = {"argos": [], "proposer": [], "detector": [], "baseline": []}
    areas: List[float] = []
    key_frames = 0
    ours: List[Detections] = []
    theirs: List[Detections] = []
    frames = 0
    rss_first = 0.0
    first_shape = None
    size_changes: List[str] = []
    ended = "end of source"
    stop = _StopRequest()

    def select(d: Detections, score: float) -> Detections:
        ok = d.scores >= score
        if keep_labels is not None:
            ok &= torch.isin(d.labels, keep_labels)
        return d[ok]

    try:
        with stop:
            for i, (index, frame) in enumerate(tqdm(reader, total=total, desc="argos run", unit="frame",
                                                    disable=not progress)):
                if stop.signal is not None:
                    break
                if first_shape is None:
                    first_shape = frame.shape
                elif frame.shape != first_shape:
                    # A new frame size is a new scene for a video proposer: start its state afresh.
                    size_changes.append(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} after "
                                        f"{first_shape[1]}x{first_shape[0]} frames")
                    first_shape = frame.shape
                    fast.proposer.reset()
                if cfg.compare and i % 2 == 1:
                    # Alternate the order so neither side always runs on a warmer cache.
                    t0 = time.perf_counter()
                    (base,) = adapter.predict([frame])
                    times["baseline"].append((time.perf_counter() - t0) * 1e3)
                counted0 = counting_ms()
                t0 = time.perf_counter()
                dets = fast(frame)
                # A new input shape makes the FLOP statistics run a counting forward: not inference.
                times["argos"].append((time.perf_counter() - t0) * 1e3 - (counting_ms() - counted0))
                if cfg.compare and i % 2 == 0:
                    t0 = time.perf_counter()
                    (base,) = adapter.predict([frame])
                    times["baseline"].append((time.perf_counter() - t0) * 1e3)
                st = fast.last_stats
                times["proposer"].append(st.proposer_ms)
                times["detector"].append(st.detector_ms)
                areas.append(st.area_processed)
                key_frames += st.key_frames
                if lines is not None:
                    lines.write(_record(index, dets[dets.scores >= min_score], names) + "\n")
                    lines.flush()
                frames += 1  # right after its line: the JSON-lines file holds exactly the frames counted
                if frames == 1:
                    rss_first = _rss_mb()
                if cfg.compare:
                    ours.append(select(dets, 0.0))
                    theirs.append(select(base, 0.0))
                if cfg.out_video:
                    if writer is None:
                        h, w = frame.shape[:2]
                        fps = reader.fps or 10.0
                        writer = cv2.VideoWriter(cfg.out_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise ValueError(f"cannot write video {cfg.out_video} (unknown extension or codec)")
                    shown = draw_overlay(frame, fast.last_proposals[0], dets, names, min_score=min_score)
                    if cfg.caption:
                        text = f"argos {1e3 / max(_mean(times['argos']), 1e-9):.1f} fps"
                        if cfg.compare:
                            b = _mean(times["baseline"])
                            text += (f" | unwrapped {1e3 / max(b, 1e-9):.1f} fps | speedup "
                                     f"{b / max(_mean(times['argos']), 1e-9):.2f}x")
                        text += f" | area {st.area_processed:.2f}" + (" | key frame" if st.key_frames else "")
                        shown = caption(shown, text)
                    writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if on_frame is not None:
                    on_frame(index, frame, dets, base if cfg.compare else None, fast.last_proposals[0])
    except KeyboardInterrupt:  # a second signal, or Ctrl-C where no handler could be installed
        stop.signal = stop.signal or "SIGINT"
    finally:
        if lines is not None:
            lines.close()
        if writer is not None:
            writer.release()
    if stop.signal is not None:
        ended = f"interrupted by {stop.signal}"
    elif reader.stopped_early:
        ended = f"the source stopped: {reader.error}"
    if frames == 0 and stop.signal is None:
        raise ValueError(f"no frame could be decoded from {cfg.source!r}" + (f": {reader.error}" if reader.error else ""))

    argos_med, argos_mean = _median(times["argos"]), _mean(times["argos"])
    summary: Dict[str, Any] = {
        "source": str(cfg.source),
        "start": int(cfg.start),
        "frames": frames,
        "interrupted": stop.signal is not None,
        "ended": ended,
        "fps": 1e3 / argos_mean if argos_mean else 0.0,
        "teacher_fraction": key_frames / max(frames, 1),
        "area_processed": sum(areas) / max(frames, 1),
        "latency_ms": {"median": argos_med, "mean": argos_mean, "proposer": _median(times["proposer"]),
                       "detector": _median(times["detector"])},
        # Resident memory after the first frame and at the end: a stream must not grow.
        "memory_mb": {"rss_first_frame": round(rss_first, 1), "rss_end": round(_rss_mb(), 1)},
        "config": {"proposer": type(fast.proposer).__name__, "executor": type(fast.executor).__name__,
                   "stride": cfg.stride, "limit": cfg.limit, "classes": cfg.classes,
                   "torch_threads": torch.get_num_threads()},
    }
    if size_changes:
        summary["size_changes"] = size_changes
    if cfg.per_frame:
        summary["per_frame"] = {"argos_ms": [round(t, 2) for t in times["argos"]],
                                "baseline_ms": [round(t, 2) for t in times["baseline"]],
                                "area": [round(a, 4) for a in areas]}
    if cfg.compare and frames:
        base_med, base_mean = _median(times["baseline"]), _mean(times["baseline"])
        gts = reference_targets(theirs, cfg.gt_score)
        summary.update(
            baseline_fps=1e3 / base_mean if base_mean else 0.0,
            speedup=base_mean / argos_mean if argos_mean else 0.0,
            speedup_median=base_med / argos_med if argos_med else 0.0,
            agreement=recall_vs_reference(ours, theirs, iou=0.5, min_score=cfg.agreement_score),
            reference_detections=int(sum(int((d.scores >= cfg.agreement_score).sum()) for d in theirs)),
        )
        # With nothing to reproduce, agreement is 1 by definition and mAP is undefined: None, not 0.
        summary["map50_vs_baseline"] = (map_against(gts, [d.image_size for d in theirs], ours)["map50"]
                                        if summary["reference_detections"] else None)
        summary["latency_ms"]["baseline"] = base_med
        summary["latency_ms"]["baseline_mean"] = base_mean
    if reader.stopped_early:
        summary["decode_error"] = reader.error
        summary["stopped_at_frame"] = frames * cfg.stride
    if cfg.summary:
        Path(cfg.summary).write_text(json.dumps(summary, indent=2))
    return summary
