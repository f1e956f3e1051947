"""The same detector under PyTorch, ONNX Runtime and OpenVINO, unwrapped and wrapped by argos.

For each frame, interleaved (the order rotates frame by frame), every runtime runs:

- the unwrapped detector on the whole frame;
- argos's default configuration (``proposer="auto", executor="auto"``) on that runtime.

Per runtime it reports frames/s over the run (mean time) and the median frame, the runtime's
baseline speed against PyTorch's, argos's speedup against *its own runtime's* unwrapped model
(the fastest way that user runs the model today), and argos's agreement with that model (recall
at IoU 0.5, score >= 0.25). A runtime's unwrapped detections are also scored against PyTorch's.

    python benchmarks/exported_backends.py ../shared/data/video/pets2009_s2l1_480x360.avi \\
        --weights ../shared/weights/yolov5n.pt --onnx outputs/yolov5n_640.onnx --img-size 640 \\
        --limit 300 --threads 2 --json benchmarks/exported_backends_pets.json

The ``.onnx`` file is exported first (``argos export detector``) when it does not exist.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("--weights", required=True, help="the torch checkpoint (.pt)")
    p.add_argument("--onnx", required=True, help="its ONNX export (written here first when missing)")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--warmup", type=int, default=3, help="frames run but not timed or scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    import argos
    from argos.data.video import VideoReader
    from argos.metrics.detection import recall_vs_reference
    from tqdm import tqdm

    torch.set_num_threads(a.threads)
    if not Path(a.onnx).exists():
        from argos.tools.export_detector import export_detector

        print(export_detector(a.weights, a.onnx, a.img_size, dynamic_batch=True))
    adapters = {}
    for b in a.backends:
        if b == "torch":
            adapters[b] = argos.build_adapter(a.weights, img_size=a.img_size, conf=a.conf)
        else:
            adapters[b] = argos.build_adapter(a.onnx, backend=b, img_size=a.img_size, conf=a.conf, threads=a.threads)
    wrapped = {b: argos.wrap(ad, proposer="auto", executor="auto") for b, ad in adapters.items()}
    jobs = [(b, "base") for b in adapters] + [(b, "argos") for b in adapters]
    ms: Dict[tuple, List[float]] = {j: [] for j in jobs}
    dets: Dict[tuple, list] = {j: [] for j in jobs}
    reader = VideoReader(a.video, start=a.start, limit=a.limit + a.warmup)
    for i, (_, rgb) in enumerate(tqdm(reader, total=a.limit + a.warmup, desc="frames")):  # RGB frames
        k = i % len(jobs)
        for backend, kind in jobs[k:] + jobs[:k]:
            t0 = time.perf_counter()
            if kind == "base":
                (d,) = adapters[backend].predict([rgb])
            else:
                d = wrapped[backend](rgb)
            t = (time.perf_counter() - t0) * 1e3
            if i >= a.warmup:
                ms[(backend, kind)].append(t)
                dets[(backend, kind)].append(d)
    n = len(ms[jobs[0]])
    torch_mean = statistics.mean(ms[("torch", "base")]) if "torch" in adapters else None
    rows = []
    for b in adapters:
        base, arg = ms[(b, "base")], ms[(b, "argos")]
        row = {
            "backend": b,
            "baseline_fps": 1e3 / statistics.mean(base),
            "baseline_median_ms": statistics.median(base),
            "baseline_vs_torch": (torch_mean / statistics.mean(base)) if torch_mean else None,
            "baseline_agreement_vs_torch": (recall_vs_reference(dets[(b, "base")], dets[("torch", "base")], 0.5, 0.25)
                                            if torch_mean else None),
            "argos_fps": 1e3 / statistics.mean(arg),
            "argos_median_ms": statistics.median(arg),
            "speedup": statistics.mean(base) / statistics.mean(arg),
            "speedup_median": statistics.median(base) / statistics.median(arg),
            "agreement": recall_vs_reference(dets[(b, "argos")], dets[(b, "base")], 0.5, 0.25),
        }
        for k in (2, 3):
            held = [dets[(b, "base")][j - j % k] for j in range(n)]
            row[f"skip{k}_agreement"] = recall_vs_reference(held, dets[(b, "base")], 0.5, 0.25)
        rows.append(row)
    head = "| runtime | unwrapped fps | vs torch | argos fps | speedup (median frame) | agreement | skip-2 / skip-3 agreement |"
    print(f"\n{Path(a.video).name}, frames {a.start}+{n}, yolov5n at {a.img_size}, {a.threads} threads\n")
    print(head)
    print("|" + "---|" * 7)
    for r in rows:
        vs = f"{r['baseline_vs_torch']:.2f}x" if r["baseline_vs_torch"] else "-"
        print(f"| {r['backend']} | {r['baseline_fps']:.1f} | {vs} | {r['argos_fps']:.1f} | {r['speedup']:.2f}x "
              f"({r['speedup_median']:.2f}x) | {r['agreement']:.3f} | {r['skip2_agreement']:.3f} / {r['skip3_agreement']:.3f} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"video": a.video, "start": a.start, "frames": n, "img_size": a.img_size,
                                            "threads": a.threads, "rows": rows}, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
