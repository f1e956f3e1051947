"""Resident memory of a wrapped detector over a long stream: the PETS video played several times.

    python benchmarks/memory_soak.py --passes 3 --executor packed_crops --threads 2

One process, one ``argos.wrap(...)`` for the whole run; the proposer keeps its state across
passes (as on a camera that keeps running). Prints resident memory (``/proc/self/statm``) every
``--every`` frames and the process's peak (``ru_maxrss``), so growth shows as a trend rather than
two end points. Growth that stops after the first pass is caches filling (allocator, oneDNN
primitives for each new canvas shape); growth that continues pass after pass is a leak.
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    assets = Path(os.environ.get("ARGOS_ASSETS", "../shared"))
    p.add_argument("--video", default=str(assets / "data/video/pets2009_s2l1_480x360.avi"))
    p.add_argument("--weights", default=str(assets / "weights/yolov5n.pt"))
    p.add_argument("--proposer", default="distill")
    p.add_argument("--executor", default="packed_crops")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--every", type=int, default=100, help="print memory every N frames")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import argos
    from argos.data.video import VideoReader

    torch.set_num_threads(args.threads)
    fast = argos.wrap("yolov5", args.proposer, args.executor, weights=args.weights, conf=0.25)
    print(f"{args.proposer} + {args.executor}, yolov5n, {args.passes} passes of {Path(args.video).name}, "
          f"threads {args.threads}")
    print("| pass | frames so far | RSS MiB | peak RSS MiB | ms / frame (last block) |")
    print("|---|---|---|---|---|")
    frames, t0, first = 0, time.perf_counter(), None
    for k in range(args.passes):
        for _, frame in VideoReader(args.video):
            fast(frame)
            frames += 1
            if first is None:
                first = rss_mb()
                print(f"| 1 | 1 | {first:.0f} | {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} | - |")
            if frames % args.every == 0:
                now = time.perf_counter()
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"| {k + 1} | {frames} | {rss_mb():.0f} | {peak:.0f} | {(now - t0) / args.every * 1e3:.1f} |",
                      flush=True)
                t0 = now
    print(f"RSS after the first frame {first:.0f} MiB, at the end {rss_mb():.0f} MiB "
          f"({frames} frames); peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
