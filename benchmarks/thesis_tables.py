"""Chapter 4 of the thesis, in its table layouts, measured on this machine.

    python benchmarks/thesis_tables.py --threads 2 --limit 16 --out outputs/thesis

Every model runs through ``argos bench`` on the COCO images in ``$ARGOS_ASSETS`` (default
``../shared``) at 640: unwrapped vs wrapped, interleaved per image, with the proposer's time in
the argos latency. Rows:

- Table 4.2 (detection): precision, recall, mAP@0.5, mAP@0.5:0.95 and GFLOPs, "model" vs
  "model + QU-Net" (``qunet-coco`` + ``packed_crops``) and "model + oracle" (ground-truth boxes,
  the upper bound), and the Dynamic Convolutions model (DC-RN101-YOLO) on its own.
- Tables 4.3/4.4: AP by object size (small/medium/large), box and instance-mask AP.
- Figure 4.3 (segmentation): PSPNet's GFLOPs, latency, and how far argos's label map stays from
  the unwrapped model's (pixel agreement inside the processed region).

Only yolov5n has trained weights here (``weights/yolov5n.pt``; the 128 images were in its training
set, so its accuracy is a with/without comparison, not a held-out score). The other models are
random-init: their accuracy cells read "needs trained weights", never a number; GFLOPs and CPU
latency do not depend on the weights and are measured. On a machine with the datasets and
checkpoints, the same rows fill with ``argos bench --dataset citypersons|cityscapes ...`` (commands in
``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

NEEDS = "needs trained weights"


@dataclass
class Model:
    """One model row: adapter name and options; ``trained`` says whether accuracy means anything."""

    label: str
    detector: str
    options: Dict[str, Any] = field(default_factory=dict)
    trained: bool = False
    executors: tuple = ("packed_crops",)
    conf: float = 0.001


def models(assets: Path) -> Dict[str, Model]:
    return {
        "yolov5n": Model("YOLOv5n (trained)", "yolov5", {"weights": str(assets / "weights/yolov5n.pt")}, trained=True,
                         executors=("packed_crops", "gather_scatter")),
        "yolov5m": Model("YOLOv5m (yolov5mu.yaml)", "yolov5", {"cfg": "yolov5mu.yaml"}, conf=0.25,
                         executors=("packed_crops", "gather_scatter")),
        "rn101_yolo": Model("RN101-YOLO", "resnet_yolo", {"depth": 101}, conf=0.25,
                            executors=("packed_crops", "gather_scatter")),
        "dc_rn101_yolo": Model("DC-RN101-YOLO (untrained gates)", "dynconv", {"depth": 101}, conf=0.25, executors=()),
        "swin_cascade": Model("Swin-T Cascade Mask R-CNN", "cascade_mask_rcnn", {}, conf=0.05),
        "pspnet": Model("PSPNet-R101", "pspnet", {"depth": 101}, executors=("packed_crops", "gather_scatter")),
    }


# The thesis's own figures, as far as our sources give them (the guide and the thesis abstract):
# YOLOv5m 51.4 -> 22.3 GFLOPs on Cityscapes (mAP50 53.3 -> 52.0) and 51.4 -> 42.4 on COCO
# (mAP50 62.8 -> 60.0); "a computational reduction of 25% on COCO and 57% on Cityscapes". Every
# other cell of the thesis's tables is not in our sources and is printed as "-".
THESIS = {
    ("yolov5m", "coco", "model"): {"map50": 62.8, "gflops": 51.4},
    ("yolov5m", "coco", "qunet"): {"map50": 60.0, "gflops": 42.4},
    ("yolov5m", "cityscapes", "model"): {"map50": 53.3, "gflops": 51.4},
    ("yolov5m", "cityscapes", "qunet"): {"map50": 52.0, "gflops": 22.3},
}


def bench(model: Model, proposer: str, executor: str, args, assets: Path) -> Dict[str, Any]:
    import torch

    from argos.tools.bench import BenchConfig, run_bench

    # Random-init models: the same weights in every run, so rows (and reruns) compare.
    torch.manual_seed(args.seed)

    options = dict(model.options)
    cfg = BenchConfig(
        images=str(assets / "data/coco128/images/train2017"),
        annotations=str(assets / "data/coco128/annotations/instances_train2017.json"),
        detector=model.detector, weights=options.pop("weights", None), cfg=options.pop("cfg", None),
        proposer=proposer, executor=executor, img_size=640, limit=args.limit, threads=args.threads,
        warmup=1, conf=model.conf, detector_kwargs=options,
        proposer_kwargs={"dilation": "adaptive"} if proposer == "oracle" else {},
    )
    return run_bench(cfg, progress=not args.no_progress)


def _pct(x: Optional[float], trained: bool) -> str:
    if x is None:
        return "-"
    if not trained:
        return NEEDS
    return f"{100 * x:.1f}" if x >= 0 else "n/a"


def _thesis(key: tuple, metric: str) -> str:
    v = THESIS.get(key, {}).get(metric)
    return "-" if v is None else f"{v:.1f}"


def table_4_2(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model]) -> str:
    lines = [
        "| model | setting | P | R | mAP@0.5 | mAP@0.5:0.95 | GFLOPs | area | latency ms | speedup | thesis mAP@0.5 (COCO) | thesis GFLOPs (COCO) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in ms.items():
        if m.detector == "pspnet":
            continue
        first = next((r for k, r in runs.items() if k.startswith(name + "/")), None)
        if first is None:
            continue
        b = first["baseline"]
        lines.append(
            f"| {m.label} | model | {_pct(b.get('precision'), m.trained)} | {_pct(b.get('recall'), m.trained)} "
            f"| {_pct(b.get('map50'), m.trained)} | {_pct(b.get('map50_95'), m.trained)} | {b['gflops']:.1f} | 1.000 "
            f"| {b['latency_ms']['median']:.0f} | 1.00x | {_thesis((name, 'coco', 'model'), 'map50')} "
            f"| {_thesis((name, 'coco', 'model'), 'gflops')} |"
        )
        for key, r in runs.items():
            if not key.startswith(name + "/") or not m.executors:
                continue
            _, proposer, executor = key.split("/")
            a = r["argos"]
            th = (name, "coco", "qunet") if proposer == "qunet" else None
            lines.append(
                f"| {m.label} | + {'QU-Net' if proposer == 'qunet' else proposer} ({executor}) "
                f"| {_pct(a.get('precision'), m.trained)} | {_pct(a.get('recall'), m.trained)} "
                f"| {_pct(a.get('map50'), m.trained)} | {_pct(a.get('map50_95'), m.trained)} | {a['gflops']:.1f} "
                f"| {a['area_processed']:.3f} | {a['latency_ms']['median']:.0f} | {r['speedup']:.2f}x "
                f"| {_thesis(th, 'map50') if th else '-'} | {_thesis(th, 'gflops') if th else '-'} |"
            )
    return "\n".join(lines)


def table_4_3(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model], kind: str) -> str:
    """AP by object size: ``kind`` "box" (Table 4.3) or "mask" (Table 4.4)."""
    prefix = "" if kind == "box" else "mask_"
    lines = [f"| model | setting | {kind} AP | AP_S | AP_M | AP_L |", "|---|---|---|---|---|---|"]
    seen = set()
    for key, r in runs.items():
        name, proposer, executor = key.split("/")
        m = ms[name]
        if m.detector == "pspnet" or (prefix and f"{prefix}map50_95" not in r["baseline"]):
            continue
        sides = [("argos", f"+ {proposer} ({executor})")] if m.executors else []
        if name not in seen:  # the unwrapped model once per model
            seen.add(name)
            sides.insert(0, ("baseline", "model"))
        for side, setting in sides:
            s = r[side]
            cells = [_pct(s.get(f"{prefix}{k}"), m.trained) for k in ("map50_95", "map_small", "map_medium", "map_large")]
            lines.append(f"| {m.label} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure_4_3(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model]) -> str:
    lines = ["| model | setting | mIoU | pixel acc. | GFLOPs | area | latency ms | speedup | pixel agreement with the unwrapped model (processed region) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        name, proposer, executor = key.split("/")
        m = ms[name]
        if m.detector != "pspnet":
            continue
        b, a = r["baseline"], r["argos"]
        lines.append(f"| {m.label} | model | {NEEDS} | {NEEDS} | {b['gflops']:.1f} | 1.000 | {b['latency_ms']['median']:.0f} | 1.00x | - |")
        agree = r.get("agreement", {}).get("pixel_agreement_in_region")
        lines.append(f"| {m.label} | + {proposer} ({executor}) | {NEEDS} | {NEEDS} | {a['gflops']:.1f} | {a['area_processed']:.3f} "
                     f"| {a['latency_ms']['median']:.0f} | {r['speedup']:.2f}x | {'-' if agree is None else f'{agree:.3f}'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="subset of: yolov5n yolov5m rn101_yolo dc_rn101_yolo swin_cascade pspnet")
    p.add_argument("--proposers", nargs="+", default=["qunet", "oracle"])
    p.add_argument("--limit", type=int, default=16, help="COCO images per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="torch seed before each model is built (random init)")
    p.add_argument("--out", default="outputs/thesis")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--from-json", action="store_true", help="only print the tables from the JSON in --out")
    args = p.parse_args(argv)

    assets = Path(os.environ.get("ARGOS_ASSETS", "../shared"))
    ms = models(assets)
    chosen = args.models or list(ms)
    unknown = [n for n in chosen if n not in ms]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; valid: {', '.join(ms)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, Dict[str, Any]] = {}
    for name in chosen:
        m = ms[name]
        # The DynConv model has its own gates: it runs unwrapped (full proposer), as in the thesis.
        plan = [("full", "masked")] if not m.executors else [(pr, ex) for pr in args.proposers for ex in m.executors]
        for proposer, executor in plan:
            key = f"{name}/{proposer}/{executor}"
            path = out / f"{name}_{proposer}_{executor}.json"
            if args.from_json:
                if path.is_file():
                    runs[key] = json.loads(path.read_text())
                continue
            print(f"== {key}", flush=True)
            result = bench(m, proposer, executor, args, assets)
            from argos.tools.bench import write_json

            write_json(result, str(path))
            runs[key] = json.loads(path.read_text())
    print("\n### Table 4.2 layout (COCO images in ../shared, 640, CPU threads", args.threads, ")\n")
    print(table_4_2(runs, ms))
    print("\n### Table 4.3 layout: box AP by object size\n")
    print(table_4_3(runs, ms, "box"))
    print("\n### Table 4.4 layout: instance-mask AP by object size\n")
    print(table_4_3(runs, ms, "mask"))
    print("\n### Figure 4.3 data: segmentation\n")
    print(figure_4_3(runs, ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
