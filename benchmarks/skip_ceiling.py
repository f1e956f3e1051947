"""How faithful can any method be that runs the detector on every k-th frame only?

Between key frames, frame skipping, argos's default (key frames + motion or optical flow) and any
tracker can only output the key frame's detections, moved. This script measures, from one pass of
the unwrapped detector, the best agreement such a method can reach at key-frame interval k, by
an oracle that moves every key-frame detection exactly onto the reference box of the frame it is
held into:

- ``skip``: the key frame's boxes held still (the agreement ``argos pareto`` reports for skip k;
  it is recomputed here from the same references, as a check);
- ``ceiling (overlap)`` (:func:`argos.metrics.held_ceiling`): each reference detection of an in-between frame counts as found if it
  can be paired, one to one and with the same label, with a key-frame detection whose box
  overlaps it at all (a maximum bipartite matching): perfect motion for objects that moved less
  than their size;
- ``ceiling (count)``: paired by label alone, wherever the boxes are. No method that outputs
  only key-frame detections can do better, whatever its motion model.

Both key-frame detections and references are taken at score >= 0.25, as agreement counts them
(:func:`argos.metrics.recall_vs_reference`). A reference that the key frame's detector scored
below 0.25, or did not see, is out of reach of any such method; only running the detector again
(on the frame or on part of it) can find it.

    python benchmarks/skip_ceiling.py VIDEO --weights W [--img-size 640] [--start 0] [--limit N]
        [--intervals 2 3 4] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence


def ceilings(refs: Sequence, intervals: Sequence[int], min_score: float = 0.25) -> List[Dict[str, float]]:
    """Per interval: skip agreement (recomputed), and the overlap and count ceilings."""
    from argos.metrics.detection import held_ceiling, recall_vs_reference
    from argos.tools.pareto import skip_point

    rows = []
    for k in intervals:
        c = held_ceiling(refs, k, min_score)
        skip = recall_vs_reference(skip_point(refs, k), list(refs), iou=0.5, min_score=min_score)
        rows.append({"interval": int(k), "skip": skip, "ceiling_overlap": c["overlap"],
                     "ceiling_count": c["count"], "references": c["references"]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--intervals", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    from argos.data.video import VideoReader
    from argos.wrap import build_adapter

    torch.set_num_threads(args.threads)
    for path in (args.source, args.weights):
        if not Path(path).exists():
            raise SystemExit(f"not found: {path}")
    if any(k < 2 for k in args.intervals):
        raise SystemExit(f"intervals must be >= 2, got {args.intervals}")
    det = build_adapter(args.weights, img_size=args.img_size)
    reader = VideoReader(args.source, start=args.start, limit=args.limit)
    refs = []
    for _, frame in tqdm(reader, total=len(reader) if reader.frame_count is not None else None,
                         desc="unwrapped detector", unit="frame"):
        refs.append(det.predict([frame])[0])
    rows = ceilings(refs, args.intervals)
    name = f"{Path(args.source).name} at {args.img_size}, frames {args.start}+{len(refs)}"
    print(f"# {name}: {rows[0]['references']} reference detections\n")
    print("| key frame every | skip (held still) | ceiling (overlap) | ceiling (count) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['interval']} | {r['skip']:.3f} | {r['ceiling_overlap']:.3f} | {r['ceiling_count']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"source": args.source, "weights": args.weights,
                                               "img_size": args.img_size, "start": args.start,
                                               "frames": len(refs), "rows": rows}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
