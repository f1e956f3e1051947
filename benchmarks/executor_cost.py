"""Does the executor's detector time fall with the area? Oracle proposals from the unwrapped model.

For each frame of a video, interleaved (the order alternates frame by frame):

- the unwrapped detector on the whole frame (``predict``);
- for each executor configuration: the ``oracle`` proposer on the unwrapped detector's own boxes
  (score >= ``--score``), then the executor.

Per configuration it reports medians over the frames of:

- ``area``: the proposal mask's share of the frame;
- ``canvas px``: pixels the detector ran on (canvases, or the whole input when a frame falls back)
  over the full frame's network input;
- ``det / full``: the executor's detector time over the unwrapped ``predict`` time of the same
  frame, and the target ``area + 0.10`` (issue 14);
- the executor's own time outside the detector (planning, canvas copies, map-back, NMS), canvases
  per frame, and agreement with the unwrapped detections (recall at IoU 0.5, score >= 0.25).

    python benchmarks/executor_cost.py ../shared/data/video/overhead_pedestrians_1280x720_part1.mp4 \\
        --weights ../shared/weights/yolov5n.pt --img-size 1280 --limit 30 --threads 2 \\
        --config packed_crops --config packed_crops:gap=0 --json outputs/executor_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch


def _median(xs: List[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def parse_config(spec: str):
    """``"packed_crops:gap=0,align=16"`` -> ("packed_crops", {"gap": 0, "align": 16})."""
    name, _, opts = spec.partition(":")
    kwargs: Dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"bad option {item!r} in {spec!r}: expected KEY=VALUE")
        try:
            kwargs[k] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k] = v
    return name, kwargs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("--weights", required=True)
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--score", type=float, default=0.25, help="oracle boxes: unwrapped detections at or above this")
    p.add_argument("--config", action="append", default=None,
                   help="EXECUTOR[:k=v,...]; repeat (default: packed_crops)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from tqdm import tqdm

    import argos
    from argos.data.video import VideoReader
    from argos.metrics.detection import recall_vs_reference
    from argos.wrap import build_adapter

    configs = [parse_config(c) for c in (a.config or ["packed_crops"])]
    adapter = build_adapter("yolov5", weights=a.weights, img_size=a.img_size, conf=0.25)
    fasts = [argos.wrap(adapter, "oracle", name, executor_kwargs=kw) for name, kw in configs]
    labels = [f"{n}" + (":" + ",".join(f"{k}={v}" for k, v in kw.items()) if kw else "") for n, kw in configs]

    rows: List[Dict[str, List[float]]] = [
        {"area": [], "canvas_px": [], "ratio": [], "det_ms": [], "exec_ms": [], "canvases": [], "agree": []}
        for _ in configs
    ]
    full_ms: List[float] = []
    reader = VideoReader(a.video, start=a.start, limit=a.limit + a.warmup)
    for i, (_, frame) in enumerate(tqdm(reader, total=a.limit + a.warmup, desc="executor cost")):
        order = list(range(len(configs)))
        if i % 2:
            order.reverse()
        t0 = time.perf_counter()
        (ref,) = adapter.predict([frame])
        t_full = (time.perf_counter() - t0) * 1e3
        boxes = ref.boxes[ref.scores >= a.score]
        results = {}
        for j in order:
            t0 = time.perf_counter()
            dets = fasts[j](frame, targets={"boxes": boxes})
            wall = (time.perf_counter() - t0) * 1e3
            results[j] = (dets, wall, dict(fasts[j].executor.last_stats), fasts[j].last_stats)
        if i < a.warmup:
            continue
        full_ms.append(t_full)
        for j, (dets, wall, ex, st) in results.items():
            r = rows[j]
            r["area"].append(float(st.area_processed))
            r["canvas_px"].append(float(ex.get("packed_fraction", [1.0])[0]) if "packed_fraction" in ex
                                  else float(st.area_processed))
            r["det_ms"].append(float(ex["detector_ms"]))
            r["ratio"].append(float(ex["detector_ms"]) / t_full)
            r["exec_ms"].append(wall - float(ex["detector_ms"]) - float(st.proposer_ms))
            r["canvases"].append(float(ex.get("canvases", 1)))
            r["agree"].append(float(recall_vs_reference([dets], [ref], iou=0.5, min_score=0.25)))

    out = {"video": a.video, "img_size": a.img_size, "frames": len(full_ms), "threads": a.threads,
           "full_ms_median": _median(full_ms), "configs": {}}
    print(f"{Path(a.video).name} frames {a.start}..{a.start + a.warmup + a.limit - 1} (first {a.warmup} warm-up), "
          f"yolov5 @ {a.img_size}, {a.threads} threads; unwrapped predict median {_median(full_ms):.1f} ms")
    print(f"{'config':34s} {'area':>6s} {'canvas px':>9s} {'det/full':>8s} {'target':>7s} {'det ms':>7s} "
          f"{'exec ms':>7s} {'canv':>5s} {'agree':>6s}")
    for label, r in zip(labels, rows):
        m = {k: _median(v) for k, v in r.items()}
        agree = float(np.mean(r["agree"])) if r["agree"] else float("nan")
        out["configs"][label] = {**m, "agree_mean": agree}
        print(f"{label:34s} {m['area']:6.3f} {m['canvas_px']:9.3f} {m['ratio']:8.3f} {m['area'] + 0.10:7.3f} "
              f"{m['det_ms']:7.1f} {m['exec_ms']:7.1f} {m['canvases']:5.1f} {agree:6.3f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
