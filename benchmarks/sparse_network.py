"""Network-level gather-scatter benchmark: yolov5mu backbone+neck at 640 with random blob masks.

Dense (the original module, NCHW as users run it; and the same module on a channels-last input)
and sparse (``argos.executors.gather_scatter.convert``) run interleaved, alternating order,
after a warm-up; medians per density. The sparse time includes building the masks and the
gather/scatter indices. The breakdown splits the sparse forward into index building, gather,
dense conv kernel, scatter and the rest (layers left dense: adds, concat, upsample, pooling).

    python benchmarks/sparse_network.py --threads 2 --repeats 10 --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Dict, List

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")


def blob_mask(h: int, w: int, density: float, seed: int = 0, blob: float = 0.08) -> torch.Tensor:
    """Bool Tensor[h, w]: random axis-aligned ellipses (object-like blobs) until ``density``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(h, w, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    while mask.float().mean() < density:
        cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
        ry, rx = (0.3 + torch.rand(2, generator=g)) * blob * math.sqrt(h * w)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return mask


def backbone_neck(net: torch.nn.Module, x: torch.Tensor):
    """Run the layers of an ultralytics/YOLOv5 ``.model`` list up to (not including) the head."""
    y: List = []
    for m in net.model[:-1]:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in net.save else None)
    return [y[j] if j != -1 else x for j in net.model[-1].f]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default="yolov5mu.yaml")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--halo", type=float, default=0.0)
    ap.add_argument("--tile", type=int, default=None, help="fixed tile size (default: the per-layer rule)")
    ap.add_argument("--head", action="store_true", help="time the whole network, head included")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.executors.gather_scatter import context_of, convert
    from argos.sparse.masks import SparseContext

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = YOLOv5Adapter(cfg=args.cfg, img_size=args.img_size).module.eval()
    sparse = convert(net, context=SparseContext(halo=args.halo), tile=args.tile)
    ctx = context_of(sparse)
    s = args.img_size
    x = torch.rand(1, 3, s, s)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    run = (lambda m, t: m(t)) if args.head else backbone_neck

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    results: Dict[str, Dict] = {}
    with torch.inference_mode():
        for d in args.densities:
            mask = blob_mask(s, s, d, seed=int(d * 1000))[None]
            dense_t, dense_cl_t, sparse_t, parts = [], [], [], []
            cases = [
                ("dense", lambda: run(net, x)),
                ("dense_cl", lambda: run(net, x_cl)),
                ("sparse", None),
            ]
            for r in range(args.warmup + args.repeats):
                order = cases if r % 2 == 0 else cases[::-1]
                for name, fn in order:
                    if name == "sparse":
                        t0 = time.perf_counter()
                        with ctx.activate(mask):
                            run(sparse, x)
                            st = ctx.stats
                        ms = (time.perf_counter() - t0) * 1e3
                    else:
                        ms = timed(fn)
                    if r < args.warmup:
                        continue
                    {"dense": dense_t, "dense_cl": dense_cl_t, "sparse": sparse_t}[name].append(ms)
                    if name == "sparse":
                        parts.append((st.index_ms, st.gather_ms, st.conv_ms, st.scatter_ms, ms))
            med = statistics.median
            sp = med(sparse_t)
            brk = {
                k: med(p[i] for p in parts) for i, k in enumerate(("index_ms", "gather_ms", "conv_ms", "scatter_ms"))
            }
            brk["dense_layers_ms"] = med(p[4] - sum(p[:4]) for p in parts)
            res = {
                "density": float(mask.float().mean()),
                "executed_macs_share": st.macs[0] / st.dense_macs,
                "dense_ms": med(dense_t),
                "dense_channels_last_ms": med(dense_cl_t),
                "sparse_ms": sp,
                "speedup_vs_dense": med(dense_t) / sp,
                "speedup_vs_dense_channels_last": med(dense_cl_t) / sp,
                "breakdown": brk,
            }
            results[f"{d:g}"] = res
            print(
                f"density {res['density']:.3f} (conv MACs executed {res['executed_macs_share']:.3f}): "
                f"dense {res['dense_ms']:.1f} ms, dense CL {res['dense_channels_last_ms']:.1f} ms, "
                f"sparse {sp:.1f} ms -> {res['speedup_vs_dense']:.2f}x "
                f"({res['speedup_vs_dense_channels_last']:.2f}x vs CL) | "
                + ", ".join(f"{k} {v:.1f}" for k, v in brk.items()),
                flush=True,
            )
    if args.json:
        cfg = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
