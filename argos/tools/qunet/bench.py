"""``argos bench-proposer``: how well and how cheaply a proposer marks the objects.

Reports regions detected (threshold 1.0, 0.95, 0.9), area processed, GFLOPs (QU-Net:
FLOP-equivalents with binary/low-bit MACs counted separately, see
:func:`argos.proposers.qunet.model.flop_breakdown`), parameters, size on disk and the median
latency of ``propose()`` per image (resize, network, threshold, up-scale, components, dilation).

Objects come from COCO labels, from per-frame teacher boxes on a video, or from a detector's own
detections on the same frames (``--targets detector``: "does the proposer keep what the
full-frame detector finds?"). With ``--detector``, the detector also runs on every image,
interleaved with the proposer, so the latency ratio comes from one run on one machine.

Example::

    python -m argos.tools.qunet.bench --images ../shared/data/coco128/images/train2017 \\
        --annotations ../shared/data/coco128/annotations/instances_train2017.json --range 100:128 \\
        --proposer qunet --weights qunet-coco --detector yolov5 --detector-weights ../shared/weights/yolov5n.pt
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["ProposerBenchConfig", "run_bench_proposer", "format_table", "run_table41", "format_table41", "main"]


@dataclass
class ProposerBenchConfig:
    """One ``bench-proposer`` run.

    Args:
        proposer, weights, preset, proposer_kwargs: the proposer (``weights``/``preset`` only for qunet).
        images, annotations, classes: COCO mode (``classes`` also filters detector targets).
        video, boxes_json, boxes_scale, min_score: video mode with teacher boxes.
        range: which images/frames (``"start:stop[:step]"``), e.g. the held-out split.
        targets: ``"labels"`` (COCO / teacher boxes) or ``"detector"`` (the detector's detections
            with score >= ``detector_min_score``).
        detector, detector_weights, img_size: a detector timed on the same images (and the target
            source for ``targets="detector"``).
        threads, warmup: torch threads and untimed first calls.
    """

    proposer: str = "qunet"
    weights: Optional[str] = None
    preset: Optional[str] = None
    proposer_kwargs: Dict[str, Any] = field(default_factory=dict)
    images: Optional[str] = None
    annotations: Optional[str] = None
    classes: Optional[List[str]] = None
    video: Optional[str] = None
    boxes_json: Optional[str] = None
    boxes_scale: float = 1.0
    min_score: float = 0.5
    range: Optional[str] = None
    targets: str = "labels"
    detector: Optional[str] = None
    detector_weights: Optional[str] = None
    detector_min_score: float = 0.25
    img_size: int = 640
    threads: Optional[int] = None
    warmup: int = 3


def _frames(cfg: ProposerBenchConfig) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """``(name, RGB image, label boxes Tensor[M, 4])`` in order."""
    from argos.proposers.qunet import targets as T

    if cfg.video:
        if cfg.targets == "labels" and not cfg.boxes_json:
            raise ValueError("video mode needs --boxes-json, or --targets detector")
        if cfg.boxes_json:
            for s in T.teacher_samples(cfg.video, cfg.boxes_json, cfg.boxes_scale, cfg.min_score, cfg.range):
                yield s.name, s.image, s.boxes
        else:
            n = T.video_frame_count(cfg.video)
            for i, frame in T.read_video_frames(cfg.video, T.parse_range(cfg.range, n)):
                yield f"frame_{i:06d}", frame, np.zeros((0, 4), np.float32)
        return
    if not cfg.images or not cfg.annotations:
        raise ValueError("give --images and --annotations (COCO), or --video")
    from argos.data import CocoDataset

    ds = CocoDataset(cfg.images, cfg.annotations, classes=cfg.classes)
    for i in T.parse_range(cfg.range, len(ds)):
        s = ds[i]
        yield s.file_name, s.image, s.boxes.numpy()


def _build_proposer(cfg: ProposerBenchConfig):
    from argos.registry import PROPOSERS

    kwargs = dict(cfg.proposer_kwargs)
    if cfg.weights is not None:
        kwargs["weights"] = cfg.weights
    if cfg.preset is not None:
        kwargs["preset"] = cfg.preset
    return PROPOSERS.build(cfg.proposer, **kwargs)


def _median(xs: List[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def run_bench_proposer(cfg: ProposerBenchConfig, progress: bool = True) -> Dict[str, Any]:
    """Run the proposer (and optionally a detector) over the images; returns every figure as a dict."""
    from tqdm import tqdm

    from argos.metrics.regions import RegionStats

    if cfg.targets not in ("labels", "detector"):
        raise ValueError(f"targets must be 'labels' or 'detector', got {cfg.targets!r}")
    if cfg.targets == "detector" and not cfg.detector:
        raise ValueError("targets='detector' needs a detector")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    proposer = _build_proposer(cfg)
    adapter = None
    keep_ids = None
    if cfg.detector:
        from argos.wrap import build_adapter

        kw: Dict[str, Any] = {"img_size": cfg.img_size, "conf": min(0.25, cfg.detector_min_score)}
        if cfg.detector_weights:
            kw["weights"] = cfg.detector_weights
        adapter = build_adapter(cfg.detector, **kw)
        if cfg.classes:
            by_name = {v: k for k, v in adapter.names.items()}
            missing = [c for c in cfg.classes if c not in by_name]
            if missing:
                raise ValueError(f"detector has no class(es) {missing}")
            keep_ids = torch.tensor(sorted(by_name[c] for c in cfg.classes))

    frames = list(_frames(cfg))
    if not frames:
        raise ValueError("no images to benchmark (check --range)")
    needs_targets = getattr(proposer, "needs_targets", False)
    for _ in range(cfg.warmup):
        proposer.propose([frames[0][1]], [{"boxes": frames[0][2]}] if needs_targets else None)
        if adapter is not None:
            adapter.predict([frames[0][1]])
    proposer.reset()

    stats = RegionStats()
    prop_ms, net_ms, det_ms = [], [], []
    for i, (name, image, label_boxes) in enumerate(tqdm(frames, desc=f"bench-proposer {cfg.proposer}",
                                                         disable=not progress, unit="img")):
        dets = None
        if adapter is not None and i % 2 == 1:  # alternate the order: neither side always runs on a warm cache
            t0 = time.perf_counter()
            (dets,) = adapter.predict([image])
            det_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        (props,) = proposer.propose([image], [{"boxes": label_boxes}] if needs_targets else None)
        prop_ms.append((time.perf_counter() - t0) * 1e3)
        timing = getattr(proposer, "last_timing", None)
        if timing:
            net_ms.append(timing["network_ms"])
        if adapter is not None and i % 2 == 0:
            t0 = time.perf_counter()
            (dets,) = adapter.predict([image])
            det_ms.append((time.perf_counter() - t0) * 1e3)
        if cfg.targets == "detector":
            keep = dets.scores >= cfg.detector_min_score
            if keep_ids is not None:
                keep &= torch.isin(dets.labels, keep_ids)
            boxes = dets.boxes[keep]
        else:
            boxes = torch.as_tensor(label_boxes)
        stats.update(props.mask, boxes)

    s = stats.summary()
    h, w = frames[0][1].shape[:2]
    result: Dict[str, Any] = {
        "config": {**asdict(cfg), "torch_threads": torch.get_num_threads()},
        "images": s["images"],
        "regions": s["regions"],
        "regions_detected": s["regions_detected"],
        "regions_detected@0.95": s["regions_detected@0.95"],
        "regions_detected@0.9": s["regions_detected@0.9"],
        "area_processed": s["area_processed"],
        "gflops": float(proposer.gflops((h, w))),
        "latency_ms": {"median": _median(prop_ms)},
    }
    model = getattr(proposer, "model", None)
    if isinstance(model, torch.nn.Module):
        result["params"] = int(sum(p.numel() for p in model.parameters()))
        detail = getattr(proposer, "flops_detail", {})
        if detail:
            result["gflops_dense"] = detail["gflops_dense"]
            result["macs"] = detail["macs"]
            result["gflops_convention"] = ("FLOP-equivalents: a MAC with w-bit weights and a-bit activations (both "
                                           "<= 8) counts 2*w*a/64 FLOPs, float MACs 2; gflops_dense counts all as 2")
        result["config"]["model"] = getattr(model, "config", None) and model.config.to_dict()
    if net_ms:
        result["latency_ms"]["network"] = _median(net_ms)
    path = _weights_path(proposer)
    if path is not None:
        result["size_on_disk_bytes"] = path.stat().st_size
    if adapter is not None:
        result["detector"] = {"latency_ms": {"median": _median(det_ms)}}
        result["latency_ratio"] = _median(prop_ms) / max(_median(det_ms), 1e-9)
    return result


def _weights_path(proposer) -> Optional[Path]:
    weights = getattr(proposer, "weights", None)
    if weights is None and getattr(proposer, "info", None) is None:
        return None
    from argos.proposers.qunet.checkpoint import resolve_weights
    from argos.proposers.qunet.proposer import DEFAULT_WEIGHTS

    try:
        return resolve_weights(DEFAULT_WEIGHTS if weights is None else weights)
    except FileNotFoundError:
        return None


def format_table(r: Dict[str, Any]) -> str:
    """The printed summary of :func:`run_bench_proposer`."""
    c = r["config"]
    name = c["proposer"] + (f" ({c['weights']})" if c.get("weights") else "") + (f" preset={c['preset']}" if c.get("preset") else "")
    rows = [
        ("regions detected @1.0/.95/.9",
         f"{r['regions_detected']:.3f} / {r['regions_detected@0.95']:.3f} / {r['regions_detected@0.9']:.3f}"),
        ("area processed", f"{r['area_processed']:.3f}"),
        ("GFLOPs (FLOP-equivalent)", f"{r['gflops']:.4f}" + (f" (dense {r['gflops_dense']:.4f})" if "gflops_dense" in r else "")),
    ]
    if "params" in r:
        rows.append(("params", f"{r['params']:,}"))
    if "size_on_disk_bytes" in r:
        rows.append(("size on disk", f"{r['size_on_disk_bytes'] / 1024:.1f} KiB"))
    lat = r["latency_ms"]
    rows.append(("latency median ms", f"{lat['median']:.2f}" + (f" (network {lat['network']:.2f})" if "network" in lat else "")))
    if "detector" in r:
        rows.append(("detector latency median ms", f"{r['detector']['latency_ms']['median']:.1f}"))
        rows.append(("proposer / detector latency", f"{r['latency_ratio']:.3f}"))
    w0 = max(len(k) for k, _ in rows)
    head = (f"{r['images']} images, {r['regions']} objects ({c['targets']}) | proposer={name} | "
            f"threads={c['torch_threads']}")
    return "\n".join([head, "-" * max(len(head), 40)] + [f"{k:<{w0}}  {v}" for k, v in rows])


def run_table41(cfg: ProposerBenchConfig, weights_dir: Optional[str] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """The five Table 4.1 presets side by side, one :func:`run_bench_proposer` row each.

    A preset with ``<weights_dir>/<preset>.qunet`` is loaded (train them with
    ``train --preset NAME``); otherwise it is built untrained, so only its cost columns
    (GFLOPs, params, latency) mean anything and its accuracy columns are left out.
    """
    from argos.proposers.qunet.model import PRESETS

    rows = []
    for preset in PRESETS:
        path = Path(weights_dir) / f"{preset}.qunet" if weights_dir else None
        trained = path is not None and path.is_file()
        c = ProposerBenchConfig(**{**asdict(cfg), "proposer": "qunet", "weights": str(path) if trained else None,
                                   "preset": preset})
        r = run_bench_proposer(c, progress=progress)
        r["preset"], r["trained"] = preset, trained
        rows.append(r)
    return rows


def format_table41(rows: List[Dict[str, Any]]) -> str:
    """Table 4.1 layout: one row per preset. The thesis's own figures are not bundled with argos."""
    head = f"{'preset':<22} {'rd@1.0':>7} {'area':>6} {'GFLOPs eq':>10} {'dense':>7} {'params':>9} {'ms':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = (f"{r['regions_detected']:>7.3f} {r['area_processed']:>6.3f}" if r["trained"]
               else f"{'-':>7} {'-':>6}")
        lines.append(f"{r['preset']:<22} {acc} {r['gflops']:>10.4f} {r.get('gflops_dense', 0.0):>7.4f} "
                     f"{r.get('params', 0):>9,} {r['latency_ms']['median']:>6.2f}")
    lines.append("'-': untrained preset (no <preset>.qunet in --weights-dir): cost only.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="argos bench-proposer", description="Regions detected, area and cost of a proposer.")
    p.add_argument("--proposer", default="qunet")
    p.add_argument("--weights", default=None, help="qunet checkpoint: shipped name (qunet-coco, qunet-street) or path")
    p.add_argument("--preset", default=None, help="qunet preset (untrained without --weights: cost only)")
    p.add_argument("--proposer-opt", nargs="+", metavar="KEY=VALUE", help="proposer options, e.g. dilation=8")
    p.add_argument("--images", help="COCO images folder")
    p.add_argument("--annotations", help="COCO instances JSON")
    p.add_argument("--classes", nargs="+", default=None, help="class names that count as objects")
    p.add_argument("--video", help="video file (frames in order)")
    p.add_argument("--boxes-json", help="per-frame teacher boxes for --video")
    p.add_argument("--boxes-scale", type=float, default=1.0)
    p.add_argument("--min-score", type=float, default=0.5, help="teacher boxes below this score are ignored")
    p.add_argument("--range", default=None, help="images/frames 'start:stop[:step]' (e.g. the held-out split)")
    p.add_argument("--targets", choices=("labels", "detector"), default="labels")
    p.add_argument("--detector", default=None, help="adapter to time alongside (and --targets detector)")
    p.add_argument("--detector-weights", default=None)
    p.add_argument("--detector-min-score", type=float, default=0.25)
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--table", choices=("4.1",), default=None, help="the five QU-Net presets side by side")
    p.add_argument("--weights-dir", default=None, help="for --table 4.1: folder with <preset>.qunet checkpoints")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """``argos bench-proposer`` entry point."""
    from argos.tools.options import parse_kv

    a = build_parser().parse_args(argv)
    cfg = ProposerBenchConfig(
        proposer=a.proposer, weights=a.weights, preset=a.preset, proposer_kwargs=parse_kv(a.proposer_opt),
        images=a.images, annotations=a.annotations, classes=a.classes, video=a.video, boxes_json=a.boxes_json,
        boxes_scale=a.boxes_scale, min_score=a.min_score, range=a.range, targets=a.targets, detector=a.detector,
        detector_weights=a.detector_weights, detector_min_score=a.detector_min_score, img_size=a.img_size,
        threads=a.threads, warmup=a.warmup,
    )
    try:
        if a.table:
            result: Any = run_table41(cfg, a.weights_dir, progress=not a.no_progress)
        else:
            result = run_bench_proposer(cfg, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"argos bench-proposer: error: {err}", file=sys.stderr)
        return 2
    print(format_table41(result) if a.table else format_table(result))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
