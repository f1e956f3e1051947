"""How a detector's CPU time scales with the pixels it is given: why packed crops save less time
than FLOPs on a small model.

    python benchmarks/canvas_scaling.py --threads 2

For each input shape (the full PETS frame letterboxed to 640x480, then the canvas shapes
``packed_crops`` picks for street scenes) it times the network forward alone and the whole
``predict`` (letterbox, forward, NMS at conf 0.001) on a real frame, median of ``--runs``
after a warm-up, shapes interleaved run by run. Time per megapixel that grows as the input
shrinks is the fixed per-call cost (layer dispatch, small GEMMs that use the cores badly, NMS).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

SHAPES: Tuple[Tuple[int, int, int], ...] = (
    # (batch, h, w): the full frame, then canvases packed_crops uses on PETS
    (1, 480, 640), (1, 320, 320), (1, 256, 256), (2, 192, 192), (1, 160, 160), (1, 128, 128),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    assets = Path(os.environ.get("ARGOS_ASSETS", "../shared"))
    p.add_argument("--weights", default=str(assets / "weights/yolov5n.pt"))
    p.add_argument("--cfg", default=None, help="ultralytics yaml instead of weights (e.g. yolov5mu.yaml)")
    p.add_argument("--video", default=str(assets / "data/video/pets2009_s2l1_480x360.avi"))
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.data.video import VideoReader

    torch.set_num_threads(args.threads)
    adapter = YOLOv5Adapter(cfg=args.cfg) if args.cfg else YOLOv5Adapter(weights=args.weights)
    _, frame = next(iter(VideoReader(args.video, limit=1)))
    tensors = {}
    images = {}
    for b, h, w in SHAPES:
        # A real crop of the frame, resized, so NMS sees realistic candidate counts.
        crop = frame[: min(h, frame.shape[0]), : min(w, frame.shape[1])]
        import cv2

        img = cv2.resize(crop, (w, h))
        images[(b, h, w)] = [img] * b
        batch, _ = adapter.preprocess_native([img] * b)
        tensors[(b, h, w)] = batch
    fwd: Dict[Tuple[int, int, int], List[float]] = {s: [] for s in SHAPES}
    full: Dict[Tuple[int, int, int], List[float]] = {s: [] for s in SHAPES}
    with torch.inference_mode():
        for r in range(args.runs + 3):
            for s in SHAPES:
                t0 = time.perf_counter()
                adapter.forward(tensors[s])
                t1 = time.perf_counter()
                batch, metas = adapter.preprocess_native(images[s])
                adapter.postprocess(adapter.forward(batch), metas)
                t2 = time.perf_counter()
                if r >= 3:
                    fwd[s].append((t1 - t0) * 1e3)
                    full[s].append((t2 - t1) * 1e3)
    base = SHAPES[0]
    base_px = base[0] * base[1] * base[2]
    print(f"{Path(args.cfg or args.weights).name} | threads {args.threads} | median of {args.runs}")
    print("| input (batch x h x w) | pixels vs full | forward ms | vs full | predict ms (with NMS) | vs full | forward ms / Mpx |")
    print("|---|---|---|---|---|---|---|")
    f0, p0 = statistics.median(fwd[base]), statistics.median(full[base])
    for s in SHAPES:
        px = s[0] * s[1] * s[2]
        f, pr = statistics.median(fwd[s]), statistics.median(full[s])
        print(f"| {s[0]} x {s[1]} x {s[2]} | {px / base_px:.3f} | {f:.1f} | {f / f0:.3f} | {pr:.1f} | {pr / p0:.3f} "
              f"| {f / (px / 1e6):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
