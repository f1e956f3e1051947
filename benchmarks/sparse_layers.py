"""Layer-level gather-scatter benchmark: sparse/dense time of single convs against the ideal.

3x3 and 1x1 convs at YOLOv5m-like shapes (640 input), blob masks at each density. For each
(shape, density) the dense conv (channels-last input, the faster dense layout on CPU; NCHW is
also timed) and the sparse conv (``argos.executors.gather_scatter.convert``, one path per
``--paths`` entry) run interleaved in a rotating order, after a warm-up; medians. The sparse time
covers a whole frame's work for that layer: building its mask and indices, gather, conv, scatter.
In a network the mask and indices are shared by the layers of a resolution, so
``ratio_no_index`` (index building subtracted) is the per-layer figure there.

Ideal ratio = density of the layer's output mask. Target (issue 5): ratio <= density + 0.10
for density >= 0.25.

    python benchmarks/sparse_layers.py --threads 2 --repeats 9 --json layers.json
    python benchmarks/sparse_layers.py --paths auto 4 8 im2col   # compare forced paths
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparse_network import blob_mask  # noqa: E402

# (C_in, C_out, kernel, stride, input side): YOLOv5m (width 0.75) layers at a 640 input.
SHAPES = [
    (48, 96, 3, 2, 320), (48, 48, 3, 1, 160), (96, 192, 3, 2, 160), (96, 96, 3, 1, 80),
    (192, 384, 3, 2, 80), (192, 192, 3, 1, 40), (384, 768, 3, 2, 40), (384, 384, 3, 1, 20),
    (96, 48, 1, 1, 160), (192, 96, 1, 1, 80), (384, 192, 1, 1, 40), (768, 384, 1, 1, 20),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--paths", nargs="+", default=["auto"], help="auto | im2col | dense | <tile size>")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--shapes", type=int, nargs="+", default=None, help="indices into SHAPES")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from argos.executors.gather_scatter import context_of, convert

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    rows: List[Dict] = []
    print(f"threads={args.threads}, medians of {args.repeats}; ratio = sparse / dense channels-last (ideal = density)")
    with torch.inference_mode():
        for c_in, c_out, k, s, side in shapes:
            conv = nn.Conv2d(c_in, c_out, k, s, k // 2).eval()
            x = torch.randn(1, c_in, side, side)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            sparse = {p: convert(conv, tile=None if p == "auto" else p if p in ("im2col", "dense") else int(p))
                      for p in args.paths}  # fmt: skip
            for d in args.densities:
                if d >= 1:
                    mask = torch.ones(1, side, side, dtype=torch.bool)
                else:
                    mask = blob_mask(side, side, d, seed=side)[None]
                # Path names are prefixed: "dense" is also a path that can be forced.
                times: Dict[str, List[float]] = {"dense": [], "dense_nchw": [], **{"p:" + p: [] for p in sparse}}
                index: Dict[str, List[float]] = {"p:" + p: [] for p in sparse}
                chosen: Dict[str, str] = {}
                names = list(times)
                for r in range(args.warmup + args.repeats):
                    rot = names[r % len(names):] + names[: r % len(names)]
                    for name in rot:
                        t0 = time.perf_counter()
                        if name == "dense":
                            conv(x_cl)
                        elif name == "dense_nchw":
                            conv(x)
                        else:
                            ctx = context_of(sparse[name[2:]])
                            ctx.trace = []
                            with ctx.activate(mask):
                                h = sparse[name[2:]](x_cl).shape[-1]
                                idx = ctx.stats.index_ms
                        ms = (time.perf_counter() - t0) * 1e3
                        if r >= args.warmup:
                            times[name].append(ms)
                            if name in index:
                                index[name].append(idx)
                                chosen[name[2:]] = _path_name(ctx.trace)
                density = float(mask.float().mean()) if d >= 1 else float(
                    torch.nn.functional.max_pool2d(mask[:, None].float(), s)[:, 0].mean()
                )
                dense = statistics.median(times["dense"])
                row = {
                    "shape": [c_in, c_out, k, s, side], "out_side": h, "density": density,
                    "dense_ms": dense, "dense_nchw_ms": statistics.median(times["dense_nchw"]),
                }  # fmt: skip
                cells = []
                for p in sparse:
                    sp, ix = statistics.median(times["p:" + p]), statistics.median(index["p:" + p])
                    row[p] = {"ms": sp, "index_ms": ix, "ratio": sp / dense, "ratio_no_index": (sp - ix) / dense,
                              "path": chosen[p]}  # fmt: skip
                    cells.append(f"{p}[{chosen[p]}] {sp / dense:.2f} ({(sp - ix) / dense:.2f})")
                rows.append(row)
                tag = "ok " if density < 0.25 or row[args.paths[0]]["ratio_no_index"] <= density + 0.10 else "MISS"
                print(
                    f"{c_in:4d}->{c_out:<4d} {k}x{k} s{s} @{side:<3d} density {density:.2f}: dense {dense:7.2f} ms "
                    f"(NCHW {row['dense_nchw_ms']:.2f}) | " + " | ".join(cells) + f"  {tag}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "torch": torch.__version__, "rows": rows}, f, indent=1)


def _path_name(trace) -> str:
    if not trace:
        return "-"
    path = trace[-1][0]
    return path[0] if len(path) == 1 else f"tile{path[1][0]}"


if __name__ == "__main__":
    main()
