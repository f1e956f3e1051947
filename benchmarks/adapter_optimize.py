"""YOLOv5 adapter forward with and without ``optimize`` (BatchNorm folded, channels-last weights).

Both adapters load the same checkpoint; their forwards run interleaved (alternating order) on
random inputs of each size, medians after a warm-up. Small sizes stand for packed-crop canvases.

    python benchmarks/adapter_optimize.py --threads 2 --weights ../shared/weights/yolov5n.pt
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="checkpoint (default: yolov5n.pt from the assets)")
    ap.add_argument("--cfg", default=None, help="ultralytics yaml instead of weights (random init)")
    ap.add_argument("--sizes", nargs="+", default=["480x640", "224x320", "160x224", "128x128"], help="HxW")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=4)
    args = ap.parse_args()

    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.assets import asset_path

    torch.set_num_threads(args.threads)
    source = {"cfg": args.cfg} if args.cfg else {"weights": args.weights or asset_path("weights/yolov5n.pt")}
    plain, fast = YOLOv5Adapter(**source, optimize=False), YOLOv5Adapter(**source, optimize=True)
    print(f"threads={args.threads}, medians of {args.repeats}, ms per forward (batch 1)")
    print(f"{'input':>10} {'original':>9} {'optimized':>10} {'ratio':>6}")
    with torch.inference_mode():
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            x = torch.rand(1, 3, h, w)
            times = {"plain": [], "fast": []}
            for r in range(args.warmup + args.repeats):
                order = (("plain", plain), ("fast", fast)) if r % 2 == 0 else (("fast", fast), ("plain", plain))
                for name, adapter in order:
                    t0 = time.perf_counter()
                    adapter.forward(x)
                    if r >= args.warmup:
                        times[name].append((time.perf_counter() - t0) * 1e3)
            a, b = statistics.median(times["plain"]), statistics.median(times["fast"])
            print(f"{size:>10} {a:9.2f} {b:10.2f} {b / a:6.2f}", flush=True)


if __name__ == "__main__":
    main()
