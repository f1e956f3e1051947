"""``argos run SRC1 SRC2 ... --out-dir DIR``: several streams, one executor call per tick.

Per stream it writes ``DIR/<stem>.jsonl`` (one line per frame, as ``argos run`` writes) and
``DIR/<stem>.json`` (its summary); with ``videos``, ``DIR/<stem>.mp4``. ``DIR/summary.json`` has
``streams``, ``frames``, ``fps_total`` and, with ``compare``, ``baseline_fps_total`` (the
unwrapped detector batched over the same ticks: frames of one size in one call) and ``speedup``.

Each tick reads one frame of every stream still running, runs :meth:`argos.MultiStream.step`
and, with ``compare``, the batched baseline; the two alternate which goes first. A source that
fails to open or decode is reported in its summary and in ``summary.json`` (``errors``), and the
others go on. Ctrl-C / SIGTERM stop after the tick in hand, as ``argos run`` does.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import torch

from argos.adapters.base import predict_by_shape
from argos.streams import MultiStream, Sources
from argos.structures import Detections
from argos.tools.outputs import check_outputs
from argos.tools.run import _record, _StopRequest
from argos.wrap import Wrapped

__all__ = ["stream_paths", "run_streams", "StreamShare", "stream_summary", "new_record", "add_frame",
           "run_header", "finish_run"]


def stream_paths(sources: Sequence[Union[str, int]], out_dir: Union[str, Path]) -> List[Dict[str, Path]]:
    """``{"jsonl", "json", "mp4"}`` under ``out_dir`` per source, named by the source's stem (a
    camera index as ``camera<N>``). Two sources with one stem are refused before anything starts."""
    out_dir = Path(out_dir)
    seen: Dict[str, Union[str, int]] = {}
    paths = []
    for src in sources:
        text = str(src)
        stem = f"camera{text}" if text.isdigit() else Path(text.rstrip("/")).stem or "stream"
        if stem in seen:
            raise ValueError(f"sources {seen[stem]!r} and {src!r} would both write {out_dir / stem}.jsonl; "
                             "rename one, or run them in separate --out-dir folders")
        if stem == "summary":
            raise ValueError(f"source {src!r} would write {out_dir}/summary.json, which holds the run's summary")
        seen[stem] = src
        paths.append({k: out_dir / f"{stem}.{k}" for k in ("jsonl", "json", "mp4")})
    return paths


def _baseline(adapter, frames: Dict[int, Any]) -> Dict[int, Detections]:
    """The unwrapped detector batched over one tick: one call per frame size."""
    keys = list(frames)
    dets, _ = predict_by_shape(adapter, [frames[k] for k in keys])
    return dict(zip(keys, dets))


class StreamShare:
    """The tick loop over a share of the sources, as ``run_streams`` and each Ray worker run it.

    Each :meth:`tick` reads one frame of every stream still running, runs
    :meth:`argos.MultiStream.step` and, with ``compare``, the batched baseline (the two alternate
    which goes first). ``starts`` / ``limits`` resume streams part-way (see :class:`Sources`).
    """

    def __init__(self, fast: Wrapped, sources: Sequence[Union[str, int]], compare: bool = False, stride: int = 1,
                 limit: Optional[int] = None, starts: Optional[Sequence[int]] = None,
                 limits: Optional[Sequence[Optional[int]]] = None, min_score: float = 0.25) -> None:
        self.multi = MultiStream(fast, len(sources))
        for m in self.multi.members:
            m.proposer.reset()
            m.channel_order = "rgb"
        self.compare, self.min_score, self.ticks = compare, min_score, 0
        self.srcs = Sources(sources, self.multi, stride=stride, limit=limit, starts=starts, limits=limits)

    def tick(self) -> Optional[Dict[str, Any]]:
        """One tick: ``{"ms", "base_ms", "frames", "images"}``, or ``None`` when every stream has ended.

        ``frames`` maps stream -> ``{"index", "dets", "base", "ms", "area", "key"}``: detections at
        ``min_score`` or above, the baseline's (with ``compare``), and the stream's share of the step.
        """
        index_frame = self.srcs.next_tick()
        if not index_frame:
            return None
        tick = {k: f for k, (_, f) in index_frame.items()}
        base, base_ms = None, None
        if self.compare and self.ticks % 2 == 1:
            t0 = time.perf_counter()
            base = _baseline(self.multi.adapter, tick)
            base_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        dets = self.multi.step(tick)
        ms = (time.perf_counter() - t0) * 1e3
        if self.compare and self.ticks % 2 == 0:
            t0 = time.perf_counter()
            base = _baseline(self.multi.adapter, tick)
            base_ms = (time.perf_counter() - t0) * 1e3
        self.ticks += 1
        frames = {}
        for k, d in dets.items():
            st = self.multi.members[k].last_stats
            frames[k] = {"index": index_frame[k][0], "dets": d[d.scores >= self.min_score],
                         "base": None if base is None else base[k][base[k].scores >= self.min_score],
                         "ms": st.total_ms, "area": st.area_processed, "key": st.key_frames}
        return {"ms": ms, "base_ms": base_ms, "frames": frames, "images": tick}


def new_record() -> Dict[str, Any]:
    """A stream's running totals, for :func:`add_frame` and :func:`stream_summary`."""
    return {"frames": 0, "ms": [], "area": [], "key": 0, "ours": [], "theirs": []}


def add_frame(rec: Dict[str, Any], fr: Dict[str, Any], compare: bool) -> None:
    """Count one frame of :meth:`StreamShare.tick`'s ``frames`` into its stream's record."""
    rec["frames"] += 1
    rec["ms"].append(fr["ms"])
    rec["area"].append(fr["area"])
    rec["key"] += fr["key"]
    if compare:
        rec["ours"].append(fr["dets"])
        rec["theirs"].append(fr["base"])


def stream_summary(source: Union[str, int], rec: Dict[str, Any], compare: bool, min_score: float,
                   error: Optional[str] = None) -> Dict[str, Any]:
    """One stream's ``<stem>.json`` from its :func:`new_record`: frames, fps, area processed,
    key-frame share and, with ``compare``, agreement."""
    from argos.metrics.detection import recall_vs_reference

    frames = rec["frames"]
    s: Dict[str, Any] = {"source": str(source), "frames": frames}
    if error is not None:
        s["error"] = error
    if frames:
        s.update(fps=1e3 * frames / sum(rec["ms"]), area_processed=statistics.mean(rec["area"]),
                 teacher_fraction=rec["key"] / frames)
        if compare:
            s["agreement"] = recall_vs_reference(rec["ours"], rec["theirs"], iou=0.5, min_score=min_score)
    return s


def run_header(streams: int, frames: int, signal: Optional[str]) -> Dict[str, Any]:
    """The first keys of ``summary.json``, the same for the local and the Ray runner."""
    return {"streams": streams, "frames": frames, "interrupted": signal is not None,
            "ended": f"interrupted by {signal}" if signal else "end of every source"}


def finish_run(summary: Dict[str, Any], sources: Sequence[Union[str, int]], paths: List[Dict[str, Path]],
               per: Dict[int, Dict[str, Any]], errors: Dict[int, str], opened: set, compare: bool,
               min_score: float, out_dir: Union[str, Path]) -> Dict[str, Any]:
    """Add ``errors`` and ``per_stream`` to ``summary``, write each opened stream's ``.json`` and
    ``summary.json``; raise when no stream delivered a frame (unless interrupted)."""
    summary["errors"] = {str(sources[k]): msg for k, msg in sorted(errors.items())}
    summary["per_stream"] = {}
    for k, src in enumerate(sources):
        s = stream_summary(src, per[k], compare, min_score, errors.get(k))
        if k in opened:
            paths[k]["json"].write_text(json.dumps(s, indent=2))
        summary["per_stream"][str(src)] = s
    Path(out_dir, "summary.json").write_text(json.dumps(summary, indent=2))
    if not summary["frames"] and not summary["interrupted"]:
        raise ValueError("no stream delivered a frame: " + "; ".join(f"{sources[k]}: {m}" for k, m in errors.items()))
    return summary


def run_streams(fast: Wrapped, sources: Sequence[Union[str, int]], out_dir: Union[str, Path], compare: bool = False,
                stride: int = 1, limit: Optional[int] = None, videos: bool = False, progress: bool = True,
                min_score: float = 0.25) -> Dict[str, Any]:
    """Run ``fast``'s configuration over ``sources`` at once; returns the ``summary.json`` dict."""
    from tqdm import tqdm

    from argos.viz import draw_overlay

    sources = [int(s) if isinstance(s, str) and s.isdigit() else s for s in sources]
    paths = stream_paths(sources, out_dir)
    check_outputs(sources, [p[k] for p in paths for k in ("jsonl", "json")] + [Path(out_dir) / "summary.json"],
                  [p["mp4"] for p in paths] if videos else [])
    share = StreamShare(fast, sources, compare=compare, stride=stride, limit=limit, min_score=min_score)
    multi, srcs, names = share.multi, share.srcs, share.multi.adapter.names
    lines = {k: open(paths[k]["jsonl"], "w") for k in srcs.open}
    writers: Dict[int, Any] = {}
    per: Dict[int, Dict[str, Any]] = {k: new_record() for k in range(len(sources))}
    tick_ms: List[float] = []
    base_ms: List[float] = []
    stop = _StopRequest()
    readers = srcs.readers
    total = None
    if all(r.frame_count is not None for r in readers.values()) and readers:
        total = sum(len(r) for r in readers.values())
    bar = tqdm(total=total, desc=f"{len(sources)} streams", unit="frame", disable=not progress)
    try:
        with stop:
            while stop.signal is None:
                out = share.tick()
                if out is None:
                    break
                tick_ms.append(out["ms"])
                if out["base_ms"] is not None:
                    base_ms.append(out["base_ms"])
                for k, fr in out["frames"].items():
                    lines[k].write(_record(fr["index"], fr["dets"], names) + "\n")
                    lines[k].flush()
                    add_frame(per[k], fr, compare)
                    if videos:
                        image = out["images"][k]
                        if k not in writers:
                            h, w = image.shape[:2]
                            writers[k] = cv2.VideoWriter(str(paths[k]["mp4"]), cv2.VideoWriter_fourcc(*"mp4v"),
                                                         readers[k].fps or 10.0, (w, h))
                        shown = draw_overlay(image, multi.members[k].last_proposals[0], fr["dets"], names,
                                             min_score=min_score)
                        writers[k].write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                bar.update(len(out["frames"]))
    except KeyboardInterrupt:
        stop.signal = stop.signal or "SIGINT"
    finally:
        bar.close()
        for f in lines.values():
            f.close()
        for w in writers.values():
            w.release()
    ticks = share.ticks

    frames = sum(r["frames"] for r in per.values())
    argos_total = sum(tick_ms)
    summary: Dict[str, Any] = {
        **run_header(len(sources), frames, stop.signal),
        "ticks": ticks,
        "fps_total": 1e3 * frames / argos_total if argos_total else 0.0,
        "tick_ms": {"median": statistics.median(tick_ms) if tick_ms else 0.0,
                    "mean": statistics.mean(tick_ms) if tick_ms else 0.0},
        "config": {"proposer": type(fast.proposer).__name__, "executor": type(fast.executor).__name__,
                   "stride": stride, "limit": limit, "torch_threads": torch.get_num_threads()},
    }
    if compare and base_ms:
        summary["baseline_fps_total"] = 1e3 * frames / sum(base_ms)
        summary["speedup"] = sum(base_ms) / argos_total
    return finish_run(summary, sources, paths, per, srcs.errors, set(lines), compare, min_score, out_dir)
