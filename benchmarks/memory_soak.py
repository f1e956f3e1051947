"""Resident memory of a wrapped detector over a long stream: the PETS video looped to N frames.

    python benchmarks/memory_soak.py --frames 10000 --threads 2 \\
        --json benchmarks/memory_soak.json --plot benchmarks/memory_soak.png

Each configuration (``--config PROPOSER+EXECUTOR``, repeatable; default: the distill and temporal
proposers with every executor) runs in its own process, so one's caches do not count against
another. One ``argos.wrap(...)`` serves the whole run and the proposer keeps its state across
loops, as on a camera that keeps running. Resident memory (``/proc/self/statm``) is sampled every
``--every`` frames. Growth is measured from frame ``--from`` (default 1000: allocator pools,
oneDNN primitives for each canvas shape and the online student's optimizer fill up before
that) to the last frame; the target is at most 30 MiB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

DEFAULT_CONFIGS = [f"{p}+{e}" for p in ("temporal", "distill") for e in ("packed_crops", "masked", "gather_scatter")]
TARGET_MIB = 30.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> int:
    """One configuration: print one JSON line per sample, then a summary line."""
    import torch

    import argos
    from argos.data.video import VideoReader

    torch.set_num_threads(args.threads)
    proposer, _, executor = args.worker.partition("+")
    fast = argos.wrap("yolov5", proposer, executor, weights=args.weights, img_size=args.img_size, conf=0.25)
    frames, t0 = 0, time.perf_counter()
    while frames < args.frames:
        for _, frame in VideoReader(args.video):
            fast(frame)
            frames += 1
            if frames == 1 or frames % args.every == 0:
                print(json.dumps({"frame": frames, "rss_mb": round(rss_mb(), 2),
                                  "s": round(time.perf_counter() - t0, 2)}), flush=True)
            if frames >= args.frames:
                break
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    assets = Path(os.environ.get("ARGOS_ASSETS", "../shared"))
    p.add_argument("--video", default=str(assets / "data/video/pets2009_s2l1_480x360.avi"))
    p.add_argument("--weights", default=str(assets / "weights/yolov5n.pt"))
    p.add_argument("--config", action="append", default=None, help="PROPOSER+EXECUTOR (repeatable)")
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--every", type=int, default=100, help="sample memory every N frames")
    p.add_argument("--from", dest="start", type=int, default=1000, help="growth is measured from this frame")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.frames <= args.start:
        raise SystemExit(f"--frames ({args.frames}) must exceed --from ({args.start})")

    results: Dict[str, Dict] = {}
    for cfg in args.config or DEFAULT_CONFIGS:
        cmd = [sys.executable, __file__, "--worker", cfg, "--video", args.video, "--weights", args.weights,
               "--frames", str(args.frames), "--every", str(args.every), "--img-size", str(args.img_size),
               "--threads", str(args.threads)]
        samples: List[Dict] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                samples.append(json.loads(line))
                s = samples[-1]
                print(f"\r{cfg}: frame {s['frame']} RSS {s['rss_mb']:.0f} MiB ({s['s']:.0f} s)", end="", flush=True)
        print()
        if proc.returncode != 0 or not samples:
            raise SystemExit(f"{cfg}: the worker failed (exit {proc.returncode})")
        at = {s["frame"]: s["rss_mb"] for s in samples}
        base = at.get(args.start, min(at.items(), key=lambda kv: abs(kv[0] - args.start))[1])
        end_frame = samples[-1]["frame"]
        growth = samples[-1]["rss_mb"] - base
        results[cfg] = {"samples": samples, "rss_first": samples[0]["rss_mb"], "rss_from": base,
                        "rss_end": samples[-1]["rss_mb"], "growth_mib": round(growth, 2),
                        "frames": end_frame, "seconds": samples[-1]["s"], "ok": growth <= TARGET_MIB}

    print(f"\n{Path(args.video).name} looped to {args.frames} frames, yolov5n @ {args.img_size}, "
          f"{args.threads} threads; growth from frame {args.start} to the end (target <= {TARGET_MIB:.0f} MiB)\n")
    print("| configuration | RSS frame 1 | RSS frame %d | RSS end | growth | ms / frame | target |" % args.start)
    print("|---|---|---|---|---|---|---|")
    for cfg, r in results.items():
        print(f"| {cfg} | {r['rss_first']:.0f} | {r['rss_from']:.0f} | {r['rss_end']:.0f} | "
              f"{r['growth_mib']:+.1f} MiB | {1e3 * r['seconds'] / r['frames']:.1f} | "
              f"{'met' if r['ok'] else 'MISSED'} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"video": args.video, "img_size": args.img_size, "threads": args.threads,
                                               "from_frame": args.start, "target_mib": TARGET_MIB,
                                               "results": results}, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for cfg, r in results.items():
            ax.plot([s["frame"] for s in r["samples"]], [s["rss_mb"] for s in r["samples"]], label=cfg)
        ax.axvline(args.start, color="grey", ls=":", lw=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("resident memory, MiB")
        ax.set_title(f"argos memory over {args.frames} frames ({Path(args.video).name} looped, yolov5n @ {args.img_size})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
