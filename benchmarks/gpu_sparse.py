"""gather_scatter on a GPU: layer-level and network-level sparse/dense time ratios.

Candidates, interleaved in a rotating order after a warm-up, medians, each call timed from a
device synchronisation to the next (so launch and host overhead count, as users see them):

- ``dense``: cuDNN on a channels-last input (the faster dense layout for fp16 on tensor cores);
  ``dense_nchw`` too at network level (the model as users run it);
- ``triton``: ``SparseContext(kernel="triton")``: the fused kernel of
  ``argos/sparse/triton_conv.py``; layers whose active share exceeds
  ``triton_dense_above`` (default 0.7) run dense, ``triton_all`` forces the kernel everywhere;
- ``torch``: the pure-PyTorch gather/conv/scatter paths (``kernel="torch"``);
- ``kernel`` (layer level only): the Triton kernel alone on a prebuilt index, i.e. what a layer
  costs inside a network, where masks and indices are built once per resolution.

Every sparse time includes building that call's masks and indices. Ideal ratio = density of the
layer's (network level: the conv MACs') active share.

    python benchmarks/gpu_sparse.py --part layers --json layers.json
    python benchmarks/gpu_sparse.py --part network --json network.json
    TRITON_INTERPRET=1 python benchmarks/gpu_sparse.py --device cpu --quick   # smoke test, no GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
from torch import nn

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparse_layers import SHAPES  # noqa: E402
from sparse_network import backbone_neck, blob_mask  # noqa: E402

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: Dict[str, Callable[[], object]], device, warmup: int, repeats: int) -> Dict[str, float]:
    """Median ms of each callable, calls rotated so that no candidate always runs first."""
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def frame_masks(B: int, h: int, w: int, density: float, seed: int) -> torch.Tensor:
    """Bool Tensor[B, h, w]: a different blob mask per frame (all-active at density >= 1)."""
    if density >= 1:
        return torch.ones(B, h, w, dtype=torch.bool)
    return torch.stack([blob_mask(h, w, density, seed=seed + 97 * b) for b in range(B)])


def run_layers(args, device) -> List[Dict]:
    from argos.executors.gather_scatter import context_of, convert
    from argos.sparse import SparseContext, triton_conv

    rows = []
    shapes = [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    if args.quick:
        shapes = [(16, 32, 3, 2, 32), (32, 16, 1, 1, 16)]
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        for B in args.batches:
            for c_in, c_out, k, s, side in shapes:
                torch.manual_seed(0)
                conv = nn.Conv2d(c_in, c_out, k, s, k // 2).eval().to(device, dtype)
                x = torch.randn(B, c_in, side, side, device=device, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                sp = {kern: convert(conv, context=SparseContext(kernel=kern, triton_dense_above=1.0))
                      for kern in ("triton", "torch")}  # fmt: skip
                h, w = conv(x[:1]).shape[-2:]
                wm = conv.weight.detach().permute(2, 3, 1, 0).reshape(-1, c_out).contiguous()
                for d in args.densities:
                    mask = frame_masks(B, side, side, d, seed=side).to(device)
                    ctx = context_of(sp["triton"])
                    with torch.inference_mode(), ctx.activate(mask):
                        dst = ctx.row_plan(h, w, device).dst
                        density = float(ctx.mask_at(h, w).float().mean())
                    out = torch.zeros(B * h * w, c_out, device=device, dtype=dtype)

                    def sparse_call(kern):
                        c = context_of(sp[kern])

                        def f():
                            with c.activate(mask):
                                return sp[kern](x)

                        return f

                    fns = {
                        "dense": lambda: conv(x),
                        "triton": sparse_call("triton"),
                        "kernel": lambda: triton_conv.sparse_conv(
                            x, wm, conv.bias.detach(), dst, out, (h, w), (k, k), (s, s), (k // 2, k // 2), (1, 1)
                        ),
                        "torch": sparse_call("torch"),
                    }
                    with torch.inference_mode():
                        t = interleaved(fns, device, args.warmup, args.repeats)
                    row = {
                        "dtype": dname, "batch": B, "shape": [c_in, c_out, k, s, side], "density": density,
                        **{f"{n}_ms": v for n, v in t.items()},
                        **{f"ratio_{n}": t[n] / t["dense"] for n in ("triton", "kernel", "torch")},
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"{dname} B={B} {c_in:>3}->{c_out:<3} k{k}s{s} @{side:<3} density {density:.3f}: dense "
                        f"{t['dense']:.3f} ms | ratio triton {row['ratio_triton']:.2f} kernel "
                        f"{row['ratio_kernel']:.2f} torch {row['ratio_torch']:.2f}",
                        flush=True,
                    )
    return rows


def run_network(args, device) -> List[Dict]:
    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.executors.gather_scatter import context_of, convert
    from argos.sparse import SparseContext

    s = 128 if args.quick else args.img_size
    cfg = "yolov5nu.yaml" if args.quick else args.cfg
    base = YOLOv5Adapter(cfg=cfg, img_size=s).module.eval()
    run = (lambda m, t: m(t)) if args.head else backbone_neck
    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        net = base.to(device, dtype)
        variants = {
            "triton": convert(net, context=SparseContext(kernel="triton")),
            "triton_all": convert(net, context=SparseContext(kernel="triton", triton_dense_above=1.0)),
            "torch": convert(net, context=SparseContext(kernel="torch")),
        }
        for B in args.batches:
            x = torch.rand(B, 3, s, s, device=device, dtype=dtype)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            for d in args.densities:
                mask = frame_masks(B, s, s, d, seed=int(d * 1000)).to(device)

                def sparse_call(name):
                    c = context_of(variants[name])

                    def f():
                        with c.activate(mask):
                            return run(variants[name], x)

                    return f

                fns = {"dense_nchw": lambda: run(net, x), "dense": lambda: run(net, x_cl)}
                fns.update({n: sparse_call(n) for n in variants})
                with torch.inference_mode():
                    t = interleaved(fns, device, args.warmup, args.repeats)
                    ctx = context_of(variants["triton_all"])
                    with ctx.activate(mask):
                        run(variants["triton_all"], x)
                        st = ctx.stats
                share = sum(st.macs) / (st.dense_macs * B) if st.dense_macs else 1.0
                best_dense = min(t["dense"], t["dense_nchw"])
                row = {
                    "cfg": cfg, "dtype": dname, "batch": B, "img_size": s, "density": float(mask.float().mean()),
                    "executed_macs_share": share, **{f"{n}_ms": v for n, v in t.items()},
                    **{f"speedup_{n}": best_dense / t[n] for n in variants},
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{cfg} {dname} B={B} density {row['density']:.3f} (MACs {share:.3f}): dense "
                    f"{t['dense']:.2f} ms (NCHW {t['dense_nchw']:.2f}) | triton {t['triton']:.2f} "
                    f"({row['speedup_triton']:.2f}x) triton_all {t['triton_all']:.2f} "
                    f"({row['speedup_triton_all']:.2f}x) torch {t['torch']:.2f} ({row['speedup_torch']:.2f}x)",
                    flush=True,
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["layers", "network", "all"], default="all")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp16", "fp32"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--densities", type=float, nargs="+", default=None)
    ap.add_argument("--shapes", type=int, nargs="+", default=None, help="indices into sparse_layers.SHAPES")
    ap.add_argument("--cfg", default="yolov5mu.yaml")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--head", action="store_true", help="network level: time the head too")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --device cpu with TRITON_INTERPRET=1 for a smoke test")
    if args.quick:
        args.batches, args.repeats, args.warmup = [1, 2], 2, 1
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    print(env, flush=True)
    out: Dict[str, object] = {"env": env, "config": vars(args)}
    if args.part in ("layers", "all"):
        args.densities = args.densities or [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
        out["layers"] = run_layers(args, device)
        args.densities = None
    if args.part in ("network", "all"):
        args.densities = args.densities or [0.1, 0.25, 0.5, 1.0]
        out["network"] = run_network(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
