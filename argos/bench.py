"""``argos bench``: the unwrapped detector and argos measured interleaved on one dataset.

Latencies are wall-clock per image (batch 1). Baseline and argos alternate which runs first on
each image, so machine noise hits both alike; the speedup is the ratio of their medians, and
the argos latency includes the proposer.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from argos.wrap import Wrapped, wrap

__all__ = ["BenchConfig", "run_bench", "format_table", "write_json"]


@dataclass
class BenchConfig:
    """Everything that defines one ``argos bench`` run."""

    images: str
    annotations: str
    detector: str = "yolov5"
    weights: Optional[str] = None
    proposer: str = "oracle"
    executor: str = "masked"
    img_size: int = 640
    limit: Optional[int] = None
    threads: Optional[int] = None
    warmup: int = 2
    classes: Optional[List[str]] = None
    conf: float = 0.001
    iou: float = 0.65
    agreement_score: float = 0.25
    proposer_kwargs: Dict[str, Any] = field(default_factory=dict)
    executor_kwargs: Dict[str, Any] = field(default_factory=dict)


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1e3


def run_bench(cfg: BenchConfig, progress: bool = True, keep: int = 0) -> Dict[str, Any]:
    """Run the benchmark; returns the bench JSON dict (see GUIDE.md).

    Args:
        keep: also return the first ``keep`` images with their proposals and detections under
            ``"_samples"`` (for overlays); not written to JSON.
    """
    from tqdm import tqdm

    from argos.data.coco import CocoDataset
    from argos.metrics.coco_eval import detections_to_coco, evaluate_coco
    from argos.metrics.detection import precision_recall, recall_vs_reference
    from argos.metrics.regions import RegionStats

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset = CocoDataset(cfg.images, cfg.annotations, classes=cfg.classes)
    n = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    if n == 0:
        raise ValueError(f"no images to benchmark in {cfg.images}")

    adapter_kwargs: Dict[str, Any] = {"img_size": cfg.img_size, "conf": cfg.conf, "iou": cfg.iou}
    if cfg.weights is not None:
        adapter_kwargs["weights"] = cfg.weights
    fast: Wrapped = wrap(
        cfg.detector, cfg.proposer, cfg.executor,
        proposer_kwargs=cfg.proposer_kwargs, executor_kwargs=cfg.executor_kwargs, **adapter_kwargs,
    )
    adapter = fast.adapter
    label_map = dataset.label_map(adapter.names)
    use_masks = fast.proposer.needs_targets and getattr(fast.proposer, "source", "boxes") == "masks"

    def target_of(i: int, sample) -> Dict[str, Any]:
        t = {"boxes": sample.boxes}
        if use_masks:
            t["mask"] = torch.from_numpy(dataset.foreground_mask(i, source="masks"))
        return t

    # Warm-up: first-call costs (allocator, kernels, caches) are not what a video stream pays.
    first = dataset[0]
    for _ in range(cfg.warmup):
        adapter.predict([first.image])
        fast(first.image, targets=[target_of(0, first)] if fast.proposer.needs_targets else None)

    base_ms: List[float] = []
    argos_ms: List[float] = []
    parts: Dict[str, List[float]] = {"proposer": [], "detector": [], "overhead": []}
    base_res: List[dict] = []
    argos_res: List[dict] = []
    base_dets, argos_dets, gts = [], [], []
    gflops_base, gflops_argos, gflops_prop = [], [], []
    regions = RegionStats()
    samples = []
    for i in tqdm(range(n), desc=f"bench {cfg.proposer}+{cfg.executor}", disable=not progress, unit="img"):
        s = dataset[i]
        targets = [target_of(i, s)] if fast.proposer.needs_targets else None
        # Alternate the order so neither side always runs on a warmer cache.
        if i % 2 == 0:
            (b,), tb = _timed(adapter.predict, [s.image])
            a, ta = _timed(fast, s.image, targets=targets)
        else:
            a, ta = _timed(fast, s.image, targets=targets)
            (b,), tb = _timed(adapter.predict, [s.image])
        st = fast.last_stats
        base_ms.append(tb)
        argos_ms.append(ta)
        parts["proposer"].append(st.proposer_ms)
        parts["detector"].append(st.detector_ms)
        parts["overhead"].append(max(0.0, ta - st.proposer_ms - st.detector_ms))
        gflops_argos.append(st.gflops)
        gflops_prop.append(st.gflops_proposer)
        gflops_base.append(adapter.flops(_input_hw(adapter, s.image)))
        regions.update(fast.last_proposals[0].mask, s.boxes)
        base_res += detections_to_coco(b, s.image_id, label_map)
        argos_res += detections_to_coco(a, s.image_id, label_map)
        base_dets.append(_relabel(b, label_map))
        argos_dets.append(_relabel(a, label_map))
        gts.append({"boxes": s.boxes, "labels": s.category_ids, "iscrowd": s.iscrowd})
        if i < keep:
            samples.append({"image": s.image, "proposals": fast.last_proposals[0], "argos": a, "baseline": b,
                            "file_name": s.file_name})

    image_ids = [dataset.image_ids[i] for i in range(n)]
    # With a class filter, both sides are scored on those classes only.
    cat_ids = dataset.class_ids if cfg.classes else None
    mb = evaluate_coco(dataset.coco, base_res, image_ids=image_ids, cat_ids=cat_ids)
    ma = evaluate_coco(dataset.coco, argos_res, image_ids=image_ids, cat_ids=cat_ids)
    if cat_ids is not None:
        keep = torch.tensor(sorted(cat_ids))
        base_dets = [d[torch.isin(d.labels, keep)] for d in base_dets]
        argos_dets = [d[torch.isin(d.labels, keep)] for d in argos_dets]
    pb = precision_recall(base_dets, gts)
    pa = precision_recall(argos_dets, gts)
    rs = regions.summary()
    result: Dict[str, Any] = {
        "config": {**cfg.__dict__, "torch_threads": torch.get_num_threads(), "device": str(adapter.device)},
        "images": n,
        "baseline": {
            "map50": mb["map50"], "map50_95": mb["map50_95"],
            "precision": pb["precision"], "recall": pb["recall"],
            "gflops": _mean(gflops_base),
            "latency_ms": {"median": _median(base_ms)},
        },
        "argos": {
            "map50": ma["map50"], "map50_95": ma["map50_95"],
            "precision": pa["precision"], "recall": pa["recall"],
            "gflops": _mean(gflops_argos) + _mean(gflops_prop),
            "gflops_proposer": _mean(gflops_prop),
            "area_processed": rs["area_processed"],
            "regions_detected": rs["regions_detected"],
            "regions_detected@0.95": rs["regions_detected@0.95"],
            "regions_detected@0.9": rs["regions_detected@0.9"],
            "latency_ms": {
                "median": _median(argos_ms),
                "proposer": _median(parts["proposer"]),
                "detector": _median(parts["detector"]),
                "overhead": _median(parts["overhead"]),
            },
        },
        "speedup": _median(base_ms) / max(_median(argos_ms), 1e-9),
        "agreement": {
            f"recall_vs_baseline@0.5": recall_vs_reference(argos_dets, base_dets, iou=0.5, min_score=cfg.agreement_score),
        },
    }
    if keep:
        result["_samples"] = samples
        result["_names"] = adapter.names
    return result


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _input_hw(adapter, image) -> tuple:
    batch, _ = adapter.preprocess([image])
    return int(batch.shape[-2]), int(batch.shape[-1])


def _relabel(dets, label_map: Dict[int, int]):
    """Model class ids -> dataset category ids (same Detections otherwise)."""
    from argos.structures import Detections

    lut = torch.full((max(label_map) + 1,), -1, dtype=torch.int64)
    for k, v in label_map.items():
        lut[k] = v
    return Detections(dets.boxes, dets.scores, lut[dets.labels], dets.image_size)


def format_table(result: Dict[str, Any]) -> str:
    """Baseline vs argos side by side, as printed by ``argos bench``."""
    b, a = result["baseline"], result["argos"]
    rows = [
        ("mAP50-95", f"{b['map50_95']:.4f}", f"{a['map50_95']:.4f}"),
        ("mAP50", f"{b['map50']:.4f}", f"{a['map50']:.4f}"),
        ("precision", f"{b['precision']:.4f}", f"{a['precision']:.4f}"),
        ("recall", f"{b['recall']:.4f}", f"{a['recall']:.4f}"),
        ("GFLOPs / image", f"{b['gflops']:.2f}", f"{a['gflops']:.2f} (proposer {a['gflops_proposer']:.3f})"),
        ("area processed", "1.000", f"{a['area_processed']:.3f}"),
        ("regions detected @1.0/.95/.9", "-",
         f"{a['regions_detected']:.3f} / {a['regions_detected@0.95']:.3f} / {a['regions_detected@0.9']:.3f}"),
        ("latency median ms", f"{b['latency_ms']['median']:.1f}", f"{a['latency_ms']['median']:.1f}"),
        ("  proposer / detector / overhead", "-",
         f"{a['latency_ms']['proposer']:.1f} / {a['latency_ms']['detector']:.1f} / {a['latency_ms']['overhead']:.1f}"),
    ]
    c = result["config"]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(max(len(r[1]) for r in rows), len("baseline"))
    head = (f"{result['images']} images | {c['detector']} {Path(str(c['weights'])).name if c['weights'] else ''} @ "
            f"{c['img_size']} | proposer={c['proposer']} executor={c['executor']} | threads={c['torch_threads']}")
    lines = [head, f"{'':<{w0}}  {'baseline':>{w1}}  argos", "-" * (w0 + w1 + 40)]
    lines += [f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]}" for r in rows]
    agree = result["agreement"]["recall_vs_baseline@0.5"]
    lines.append(f"speedup {result['speedup']:.2f}x (proposer included) | agreement (recall of baseline @IoU0.5) {agree:.3f}")
    return "\n".join(lines)


def write_json(result: Dict[str, Any], path: str) -> None:
    """Write the bench JSON (private ``_`` keys left out)."""
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean, indent=2, default=str))
