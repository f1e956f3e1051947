"""Where the distill proposer's area comes from: the share of the frame each of its three sources
(student blobs, motion blobs, tracked detections) proposes alone, and their union, on the PETS
video with yolov5n as teacher.

No timing: full-frame yolov5n detections of every frame are computed once (the reference), then
the proposer runs over the video; on non-key frames its proposal is scored by the share of
reference person boxes it covers fully ("covered"), and each source's boxes are rasterised on
their own. The detections carried to the next frame are the reference boxes inside the proposal
(what an executor that reproduces the full-frame detector there would return).

    python benchmarks/distill_sources.py --threads 2 [--proposer-opt threshold=0.8 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

import numpy as np
import torch
from tqdm import tqdm

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=None, help="assets root (default: $ARGOS_ASSETS or ../shared)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N frames")
    ap.add_argument("--proposer-opt", nargs="+", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.assets import assets_dir
    from argos.tools.options import parse_kv
    from argos.data.video import VideoReader
    from argos.geometry import boxes_to_mask
    from argos.proposers.distill import DistillProposer
    from argos.structures import Detections

    torch.set_num_threads(args.threads)
    root = args.assets or assets_dir()
    if root is None:
        sys.exit("assets not found: pass --assets or set ARGOS_ASSETS")
    adapter = YOLOv5Adapter(weights=os.path.join(root, "weights/yolov5n.pt"), classes=[0])
    frames = [f for _, f in VideoReader(os.path.join(root, "data/video/pets2009_s2l1_480x360.avi"))]
    frames = frames[: args.limit] if args.limit else frames

    reference: List[torch.Tensor] = []
    for f in tqdm(frames, desc="full-frame yolov5n", unit="frame"):
        batch, metas = adapter.preprocess([f])
        (d,) = adapter.postprocess(adapter.forward(batch), metas)
        reference.append(d.boxes[d.scores >= 0.25])

    prop = DistillProposer(**parse_kv(args.proposer_opt))
    prop.bind(adapter)
    areas: Dict[str, List[float]] = {"student": [], "motion": [], "tracked": [], "union": []}
    covered = total = 0
    for i, f in enumerate(tqdm(frames, desc="distill", unit="frame")):
        size = f.shape[:2]
        tracked = prop._tracked_boxes(size)  # before propose(): what this frame carries over
        (r,) = prop.propose([f])
        if r.detections is not None:  # key frame: the teacher's own output
            prop.observe([r.detections])
            continue
        _, grid = prop._student_prob(prop._student_input(f), size)
        sources = {
            "student": prop._grid_boxes(grid >= prop.threshold, size),
            "motion": prop._grid_boxes(prop.motion.last_small, size),
            "tracked": tracked,
        }
        for name, boxes in sources.items():
            areas[name].append(float(boxes_to_mask(boxes, size).float().mean()))
        areas["union"].append(r.area_fraction)
        inside = torch.tensor([bool(r.mask[max(int(b[1]), 0):int(b[3]), max(int(b[0]), 0):int(b[2])].all())
                               for b in reference[i].round()], dtype=torch.bool)  # fmt: skip
        covered += int(inside.sum())
        total += len(inside)
        kept = reference[i][inside] if len(inside) else reference[i][:0]
        prop.observe([Detections(kept, torch.ones(len(kept)), torch.zeros(len(kept), dtype=torch.int64), size)])

    result = {
        "frames": len(frames),
        "key_fraction": prop.teacher_fraction,
        "area": {k: float(np.mean(v)) if v else 0.0 for k, v in areas.items()},
        "covered": covered / total if total else 1.0,
        "proposer_opt": args.proposer_opt,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
