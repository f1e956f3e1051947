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
from typing import Any, Dict, List, Optional, Tuple

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
        "yolov5n": Model("YOLOv5n (trained)", "yolov5", {"weights": str(assets / "weights/yolov5n.pt")}, trained=True),
        "yolov5m": Model("YOLOv5m (yolov5mu.yaml)", "yolov5", {"cfg": "yolov5mu.yaml"}, conf=0.25),
        "yolov5l": Model("YOLOv5l (yolov5lu.yaml)", "yolov5", {"cfg": "yolov5lu.yaml"}, conf=0.25),
        "yolov5x": Model("YOLOv5x (yolov5xu.yaml)", "yolov5", {"cfg": "yolov5xu.yaml"}, conf=0.25),
        "rn101_yolo": Model("RN101-YOLO", "resnet_yolo", {"depth": 101}, conf=0.25),
        "dc_rn101_yolo": Model("DC-RN101-YOLO (untrained gates)", "dynconv", {"depth": 101}, conf=0.25, executors=()),
        "swin_cascade": Model("Swin-T Cascade Mask R-CNN", "cascade_mask_rcnn", {}, conf=0.05),
        "pspnet": Model("PSPNet-R101", "pspnet", {"depth": 101}, executors=("packed_crops", "gather_scatter")),
    }


# The thesis's own figures (../shared/docs/qunet_thesis_2021.txt, chapter 4). Table 4.1 is on
# Cityscapes; Table 4.2 on CityPersons (RN101-YOLO), Cityscapes and COCO; Tables 4.3/4.4 are AP by
# object size of Swin-T Cascade Mask R-CNN on COCO.
THESIS_41 = {  # preset: (regions detected %, area processed, GFLOPs)
    "full_precision": (98.36, 0.3658, 62.68),
    "middle_quantized": (98.23, 0.3689, 55.27),
    "middle_up_quantized": (98.23, 0.3870, 18.36),
    "all_quantized": (97.97, 0.3815, 5.30),
    "all_quantized_dct": (99.66, 0.9820, 0.112),
}
THESIS_42 = {  # (model, dataset, setting): (P, R, mAP50, mAP50-95, GFLOPs)
    ("rn101_yolo", "CityPersons", "model"): (68.7, 49.5, 56.4, 32.5, 42.29),
    ("dc_rn101_yolo", "CityPersons", "model"): (66.2, 45.5, 51.1, 27.2, 27.58),
    ("rn101_yolo", "CityPersons", "qunet"): (69.5, 45.9, 52.9, 30.1, 21.93),
    ("yolov5m", "Cityscapes", "model"): (76.6, 46.5, 53.3, 31.1, 51.41),
    ("yolov5m", "Cityscapes", "qunet"): (78.4, 45.1, 52.0, 29.7, 22.32),
    ("yolov5m", "COCO", "model"): (69.7, 57.5, 62.8, 43.5, 51.41),
    ("yolov5m", "COCO", "qunet"): (72.4, 53.5, 60.0, 40.2, 42.42),
    ("yolov5l", "COCO", "model"): (72.8, 61.5, 66.5, 47.2, 115.61),
    ("yolov5l", "COCO", "qunet"): (72.5, 59.0, 63.7, 43.8, 88.78),
    ("yolov5x", "COCO", "model"): (74.9, 62.7, 68.4, 49.5, 219.02),
    ("yolov5x", "COCO", "qunet"): (74.1, 60.5, 65.5, 45.8, 163.49),
}
THESIS_43 = {"model": (0.354, 0.552, 0.673), "qunet": (0.315, 0.504, 0.621)}  # box AP small/medium/large
THESIS_44 = {"model": (0.304, 0.482, 0.608), "qunet": (0.260, 0.445, 0.557)}  # mask AP small/medium/large
RANDOM = "random init, timing only"


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
    result = run_bench(cfg, progress=not args.no_progress)
    result["command"] = bench_command(cfg)
    return result


def bench_command(cfg) -> str:
    """The ``argos bench`` command line that reproduces one run (paths relative to ARGOS_ASSETS)."""
    assets = os.environ.get("ARGOS_ASSETS", "../shared")
    parts = ["argos bench", f"--images {cfg.images}", f"--annotations {cfg.annotations}", f"--detector {cfg.detector}"]
    if cfg.weights:
        parts.append(f"--weights {cfg.weights}")
    if cfg.cfg:
        parts.append(f"--cfg {cfg.cfg}")
    parts += [f"--proposer {cfg.proposer}", f"--executor {cfg.executor}", f"--img-size {cfg.img_size}",
              f"--conf {cfg.conf}", f"--limit {cfg.limit}", f"--threads {cfg.threads}", f"--warmup {cfg.warmup}"]
    if cfg.detector_kwargs:
        parts.append("--detector-opt " + " ".join(f"{k}={v}" for k, v in cfg.detector_kwargs.items()))
    if cfg.proposer_kwargs:
        parts.append("--proposer-opt " + " ".join(f"{k}={v}" for k, v in cfg.proposer_kwargs.items()))
    return " ".join(parts).replace(str(Path(assets).resolve()), "../shared").replace(assets, "../shared")


def _pct(x: Optional[float], trained: bool) -> str:
    if x is None:
        return "-"
    if not trained:
        return NEEDS
    return f"{100 * x:.1f}" if x >= 0 else "n/a"


def _f(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table_41(rows: List[Dict[str, Any]], command: str) -> str:
    """Table 4.1: the five QU-Net presets, thesis (Cityscapes) beside ours (COCO images here)."""
    lines = ["| preset | regions detected % (thesis / ours) | area (thesis / ours) | GFLOPs (thesis / ours) "
             "| ours: trained? | command |", "|---|---|---|---|---|---|"]
    for r in rows:
        th = THESIS_41.get(r["preset"], (None, None, None))
        rd = f"{100 * r['regions_detected']:.2f}" if r["trained"] else "untrained: cost only"
        area = f"{r['area_processed']:.4f}" if r["trained"] else "-"
        lines.append(f"| {r['preset']} | {_f(th[0], 2)} / {rd} | {_f(th[1], 4)} / {area} | {_f(th[2], 3)} / "
                     f"{r['gflops']:.3f} | {'yes (' + r.get('weights_name', '') + ')' if r['trained'] else 'no'} "
                     f"| `{command} --table 4.1` |")
    return "\n".join(lines)


def _acc(side: Dict[str, Any], key: str, trained: bool) -> str:
    if not trained:
        return RANDOM
    v = side.get(key)
    return "-" if v is None or v < 0 else f"{100 * v:.1f}"


def table_42(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model]) -> str:
    """Table 4.2: every thesis row, and ours (COCO images here) with the command that made it."""
    lines = ["| model | setting | thesis (dataset): P / R / mAP50 / mAP50-95 / GFLOPs | ours (COCO 128): P / R / mAP50 "
             "/ mAP50-95 | ours GFLOPs | ours ms (CPU) | ours speedup | command |",
             "|---|---|---|---|---|---|---|---|"]
    shown = set()
    for name, m in ms.items():
        if m.detector == "pspnet":
            continue
        keys = [k for k in runs if k.startswith(name + "/")]
        thesis_rows = {k: v for k, v in THESIS_42.items() if k[0] == name}
        for setting in ("model", "qunet", "oracle"):
            th = [f"{v[0]} / {v[1]} / {v[2]} / {v[3]} / {v[4]} ({k[1]})" for k, v in thesis_rows.items() if k[2] == setting]
            if setting == "model":
                run = runs.get(next((k for k in keys), ""), None)
                side = run["baseline"] if run else None
                label = "model"
            else:
                key = next((k for k in keys if k.split("/")[1] == setting), None)
                run = runs.get(key) if key else None
                side = run["argos"] if run else None
                label = f"+ {'QU-Net' if setting == 'qunet' else 'oracle'}" + (f" ({key.split('/')[2]})" if key else "")
            if side is None and not th:
                continue
            shown.add((name, setting))
            if side is None:
                ours = "not run here"
                cost = ms_ = sp = "-"
                cmd = "-"
            else:
                ours = " / ".join(_acc(side, k, m.trained) for k in ("precision", "recall", "map50", "map50_95"))
                if not m.trained:
                    ours = RANDOM
                cost = f"{side['gflops']:.1f}"
                ms_ = f"{side['latency_ms']['median']:.0f}"
                sp = "1.00x" if setting == "model" else f"{run['speedup']:.2f}x"
                cmd = f"`{run['command']}`"
            lines.append(f"| {m.label} | {label} | {'<br>'.join(th) or '-'} | {ours} | {cost} | {ms_} | {sp} | {cmd} |")
    return "\n".join(lines)


def table_43_44(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model], kind: str) -> str:
    """Table 4.3 (box, ``kind="box"``) or 4.4 (mask): AP by object size, thesis beside ours."""
    thesis = THESIS_43 if kind == "box" else THESIS_44
    prefix = "" if kind == "box" else "mask_"
    lines = [f"| model | setting | thesis CM R-CNN {kind} AP S / M / L (COCO) | ours {kind} AP S / M / L (COCO 128) | command |",
             "|---|---|---|---|---|"]
    for name, m in ms.items():
        if m.detector == "pspnet":
            continue
        for key, r in runs.items():
            if not key.startswith(name + "/") or key.split("/")[1] not in ("qunet",):
                continue
            for setting, side in (("model", r["baseline"]), ("qunet", r["argos"])):
                th = thesis[setting] if name == "swin_cascade" else None
                if prefix and f"{prefix}map50_95" not in side:
                    ours = "no instance masks" if m.trained else RANDOM
                elif not m.trained:
                    ours = RANDOM
                else:
                    ours = " / ".join(_f(100 * side[f"{prefix}{k}"]) if side.get(f"{prefix}{k}", -1) >= 0 else "-"
                                      for k in ("map_small", "map_medium", "map_large"))
                th_s = "-" if th is None else " / ".join(f"{100 * v:.1f}" for v in th)
                lines.append(f"| {m.label} | {'model' if setting == 'model' else '+ QU-Net'} | {th_s} | {ours} "
                             f"| `{r['command']}` |")
    return "\n".join(lines)


def figure_4_3(runs: Dict[str, Dict[str, Any]], ms: Dict[str, Model]) -> str:
    lines = ["| model | setting | GFLOPs | area | latency ms | speedup | pixel agreement with the unwrapped model "
             "(processed region) | command |", "|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        name, proposer, executor = key.split("/")
        if ms[name].detector != "pspnet":
            continue
        b, a = r["baseline"], r["argos"]
        agree = r.get("agreement", {}).get("pixel_agreement_in_region")
        lines.append(f"| {ms[name].label} | model | {b['gflops']:.1f} | 1.000 | {b['latency_ms']['median']:.0f} | 1.00x | - "
                     f"| `{r['command']}` |")
        lines.append(f"| {ms[name].label} | + {proposer} ({executor}) | {a['gflops']:.1f} | {a['area_processed']:.3f} "
                     f"| {a['latency_ms']['median']:.0f} | {r['speedup']:.2f}x | {'-' if agree is None else f'{agree:.3f}'} "
                     f"| `{r['command']}` |")
    return "\n".join(lines)


def run_41(args, assets: Path, out: Path) -> Tuple[List[Dict[str, Any]], str]:
    """Table 4.1 rows through ``argos bench-proposer --table 4.1``; the shipped qunet-coco fills its preset."""
    import shutil

    from argos.proposers.qunet import load_checkpoint
    from argos.proposers.qunet.checkpoint import resolve_weights
    from argos.tools.qunet.bench import ProposerBenchConfig, run_table41

    wdir = out / "qunet_presets"
    wdir.mkdir(parents=True, exist_ok=True)
    shipped = resolve_weights("qunet-coco")
    preset = load_checkpoint(shipped)[0].config.preset
    shutil.copy(shipped, wdir / f"{preset}.qunet")
    images = assets / "data/coco128/images/train2017"
    annotations = assets / "data/coco128/annotations/instances_train2017.json"
    cfg = ProposerBenchConfig(images=str(images), annotations=str(annotations), range=f"100:{100 + args.limit}",
                              threads=args.threads)
    rows = run_table41(cfg, weights_dir=str(wdir), progress=not args.no_progress)
    for r in rows:
        if r["trained"]:
            r["weights_name"] = "shipped qunet-coco, held-out images 100+"
    command = (f"argos bench-proposer --images ../shared/data/coco128/images/train2017 --annotations "
               f"../shared/data/coco128/annotations/instances_train2017.json --range 100:{100 + args.limit} "
               f"--threads {args.threads} --weights-dir {wdir}")
    return rows, command


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="subset of: yolov5n yolov5m rn101_yolo dc_rn101_yolo swin_cascade pspnet")
    p.add_argument("--proposers", nargs="+", default=["qunet", "oracle"])
    p.add_argument("--tables", nargs="+", default=["4.1", "4.2"], help="4.1 (QU-Net presets) and/or 4.2 (every model run)")
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
    rows41, cmd41 = ([], "")
    if not args.from_json and "4.1" in args.tables:
        rows41, cmd41 = run_41(args, assets, out)
        (out / "table_4_1.json").write_text(json.dumps({"rows": rows41, "command": cmd41}, indent=1, default=str))
    elif (out / "table_4_1.json").is_file():
        saved = json.loads((out / "table_4_1.json").read_text())
        rows41, cmd41 = saved["rows"], saved["command"]
    md = ["# The thesis's chapter-4 tables beside ours\n",
          f"Ours: dev CPU, {args.threads} threads, the {args.limit} COCO images of ../shared at 640 (Table 4.1: QU-Net's "
          f"input size, images 100+, which qunet-coco did not train on). Only yolov5n has trained weights here; "
          f"rows of other models say \"{RANDOM}\" and give GFLOPs and CPU latency only. The thesis measured "
          f"Table 4.1 on Cityscapes and Table 4.2 partly on Cityscapes/CityPersons, which are not here.\n"]
    if rows41:
        md += ["## Table 4.1: QU-Net presets\n", table_41(rows41, cmd41), ""]
    md += ["## Table 4.2: detection, model vs + QU-Net\n", table_42(runs, ms), "",
           "## Table 4.3: box AP by object size\n", table_43_44(runs, ms, "box"), "",
           "## Table 4.4: instance-mask AP by object size\n", table_43_44(runs, ms, "mask"), "",
           "## Figure 4.3 data: segmentation (PSPNet)\n", figure_4_3(runs, ms), ""]
    text = "\n".join(md)
    (out / "tables.md").write_text(text)
    print(text)
    print(f"wrote {out / 'tables.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
