"""``argos bench``: the unwrapped detector and argos measured interleaved on one dataset.

Two sources:
- a labelled dataset (``images`` + ``annotations``): accuracy against ground truth. ``dataset``
  picks the format: ``coco`` (instances JSON), ``cityscapes`` (``leftImg8bit/{split}`` +
  ``gtFine/{split}``) or ``citypersons`` (``leftImg8bit/{split}`` + a COCO-style JSON or the
  ``gtBboxCityPersons/{split}`` folder); see :mod:`argos.data.cityscapes`. Detector classes map
  to dataset classes by name (a COCO ``person`` is a CityPersons pedestrian); detections of
  classes the dataset lacks are not scored;
- a video (``video``), where the ground truth is the unwrapped detector's own detections
  (score >= ``gt_score``), so accuracy means "how much of the full-frame output argos keeps".
  The ``oracle`` proposer then reads per-frame boxes from ``teacher``.

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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from argos.structures import Detections
from argos.tools.options import adapter_kwargs_for
from argos.wrap import Wrapped, wrap

__all__ = ["BenchConfig", "run_bench", "format_table", "write_json", "adapter_kwargs_for"]

# Formats of images + annotations (see _open_dataset).
DATASETS = ("coco", "cityscapes", "citypersons")


@dataclass
class BenchConfig:
    """Everything that defines one ``argos bench`` run. Give ``images`` + ``annotations`` or ``video``.

    ``dataset`` is the format of ``images`` + ``annotations``: ``"coco"``, ``"cityscapes"``
    (``annotations``: the ``gtFine/{split}`` folder, inferred when omitted; riders are scored as
    ``person`` unless ``classes`` names ``rider``) or ``"citypersons"`` (``subset``:
    ``reasonable``, ``small``, ``heavy``, ``all`` or None).
    """

    images: Optional[str] = None
    annotations: Optional[str] = None
    video: Optional[str] = None
    teacher: Optional[str] = None
    teacher_scale: float = 1.0
    teacher_score: float = 0.5
    stride: int = 1
    start: int = 0
    gt_score: float = 0.25
    detector: str = "yolov5"
    weights: Optional[str] = None
    cfg: Optional[str] = None
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
    dataset: str = "coco"
    subset: Optional[str] = None
    proposer_kwargs: Dict[str, Any] = field(default_factory=dict)
    executor_kwargs: Dict[str, Any] = field(default_factory=dict)
    detector_kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.video is not None and self.dataset != "coco":
            raise ValueError(f"dataset {self.dataset!r} takes images + annotations, not a video")
        if self.subset is not None and self.dataset != "citypersons":
            raise ValueError("subset applies to the citypersons dataset only")
        # Cityscapes finds gtFine/{split} next to leftImg8bit/{split} on its own.
        needs_annotations = self.dataset != "cityscapes"
        if self.video is None and (self.images is None or (needs_annotations and self.annotations is None)):
            raise ValueError("give either images + annotations (COCO) or a video")
        if self.video is not None and self.images is not None:
            raise ValueError("give either images + annotations or a video, not both")
        if self.weights is not None and self.cfg is not None:
            raise ValueError("give weights or cfg, not both")


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _timed(fn: Callable, *args, **kwargs):
    """``(fn(...), wall ms)``, less any time spent counting FLOPs for the stats (see ``counting_ms``)."""
    from argos.metrics.flops import counting_ms

    counted0 = counting_ms()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1e3 - (counting_ms() - counted0)


class _Meter:
    """Runs baseline and argos on each image, interleaved, and keeps their times and costs."""

    def __init__(self, fast: Wrapped) -> None:
        self.fast, self.adapter = fast, fast.adapter
        self.base_ms: List[float] = []
        self.argos_ms: List[float] = []
        self.parts: Dict[str, List[float]] = {"proposer": [], "detector": [], "overhead": []}
        self.gflops: Dict[str, List[float]] = {"baseline": [], "argos": [], "proposer": []}
        self._flops_cache: Dict[Tuple[int, int], float] = {}
        self.key_frames = 0
        self._executed: Optional[float] = None

    def warmup(self, image: np.ndarray, targets, n: int) -> None:
        # First-call costs (allocator, kernels, caches) are not what a stream pays.
        for _ in range(n):
            self.adapter.predict([image])
            self.fast(image, targets=targets)
        self.fast.proposer.reset()

    def step(self, i: int, image: np.ndarray, targets) -> Tuple[Detections, Detections]:
        # Alternate the order so neither side always runs on a warmer cache.
        if i % 2 == 0:
            b, tb = self._baseline(image)
            a, ta = _timed(self.fast, image, targets=targets)
        else:
            a, ta = _timed(self.fast, image, targets=targets)
            b, tb = self._baseline(image)
        st = self.fast.last_stats
        self.base_ms.append(tb)
        self.argos_ms.append(ta)
        self.parts["proposer"].append(st.proposer_ms)
        self.parts["detector"].append(st.detector_ms)
        self.parts["overhead"].append(max(0.0, ta - st.proposer_ms - st.detector_ms))
        self.gflops["argos"].append(st.gflops)
        self.gflops["proposer"].append(st.gflops_proposer)
        self.gflops["baseline"].append(self._executed if self._executed is not None else self._baseline_gflops(image))
        self.key_frames += st.key_frames
        return b, a

    def _baseline(self, image: np.ndarray):
        (b,), ms = _timed(self.adapter.predict, [image])
        # Models whose cost depends on the input (DynConv's gates) report what they executed.
        executed = getattr(self.adapter, "last_gflops", None)
        self._executed = float(executed[0]) if executed else None
        return b, ms

    def _baseline_gflops(self, image: np.ndarray) -> float:
        key = tuple(image.shape[:2])
        if key not in self._flops_cache:
            batch, _ = self.adapter.preprocess([image])
            self._flops_cache[key] = self.adapter.flops((int(batch.shape[-2]), int(batch.shape[-1])))
        return self._flops_cache[key]

    def result(self, cfg: BenchConfig, n: int, base: Dict[str, float], argos: Dict[str, float],
               regions: Dict[str, float], agreement: float) -> Dict[str, Any]:
        config = {k: v for k, v in cfg.__dict__.items() if v is not None}
        config.update(torch_threads=torch.get_num_threads(), device=str(self.adapter.device))
        return {
            "config": config,
            "images": n,
            "baseline": {
                **base,
                "gflops": _mean(self.gflops["baseline"]),
                "latency_ms": {"median": _median(self.base_ms), "mean": _mean(self.base_ms)},
            },
            "argos": {
                **argos,
                "gflops": _mean(self.gflops["argos"]) + _mean(self.gflops["proposer"]),
                "gflops_proposer": _mean(self.gflops["proposer"]),
                "area_processed": regions["area_processed"],
                # What the detector actually computed, relative to the full frame (executors pad,
                # align and pack regions, so this is not the proposal's area).
                "compute_fraction": _mean(self.gflops["argos"]) / max(_mean(self.gflops["baseline"]), 1e-12),
                # Share of images a video proposer answered with the full-frame teacher.
                "teacher_fraction": self.key_frames / max(len(self.argos_ms), 1),
                "regions_detected": regions["regions_detected"],
                "regions_detected@0.95": regions["regions_detected@0.95"],
                "regions_detected@0.9": regions["regions_detected@0.9"],
                "latency_ms": {"median": _median(self.argos_ms), "mean": _mean(self.argos_ms),
                               **{k: _median(v) for k, v in self.parts.items()}},
            },
            "speedup": _median(self.base_ms) / max(_median(self.argos_ms), 1e-9),
            # Throughput over the run: a video proposer's few, slow key frames count here, while
            # the median frame hides them.
            "speedup_mean": _mean(self.base_ms) / max(_mean(self.argos_ms), 1e-9),
            "agreement": {"recall_vs_baseline@0.5": agreement},
        }


def _build(cfg: BenchConfig) -> Wrapped:
    adapter_kwargs = adapter_kwargs_for(cfg.detector, cfg.img_size, cfg.conf, cfg.iou, cfg.weights, cfg.cfg,
                                        cfg.detector_kwargs)
    return wrap(cfg.detector, cfg.proposer, cfg.executor, proposer_kwargs=cfg.proposer_kwargs,
                executor_kwargs=cfg.executor_kwargs, **adapter_kwargs)


def run_bench(cfg: BenchConfig, progress: bool = True, keep: int = 0) -> Dict[str, Any]:
    """Run the benchmark; returns the bench JSON dict (see GUIDE.md).

    Args:
        keep: also return the first ``keep`` images with their proposals and detections under
            ``"_samples"`` and the class names under ``"_names"`` (for overlays); not written to JSON.
    """
    from argos.data.video import VideoReader

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Open the data before building the detector: a wrong path should fail in milliseconds.
    if cfg.video is not None:
        source: Any = VideoReader(cfg.video, stride=cfg.stride, limit=cfg.limit, start=cfg.start)
        run = _bench_video
    else:
        source = _open_dataset(cfg)
        run = _bench_coco
    fast = _build(cfg)
    if getattr(fast.adapter, "task", "detection") == "segmentation":
        if cfg.video is not None:
            raise ValueError("a segmentation model is benchmarked on images (--images), not on --video")
        run = _bench_segmentation
    result = run(cfg, fast, source, progress, keep)
    if keep:
        result["_names"] = fast.adapter.names
    return result


def _open_dataset(cfg: BenchConfig):
    from argos.data.citypersons import CityPersonsDataset
    from argos.data.cityscapes import CityscapesDataset
    from argos.data.coco import CocoDataset

    if cfg.dataset == "cityscapes":
        # A COCO detector calls people on bikes "person": score riders as persons unless the
        # classes name riders (or leave persons out).
        merge = not cfg.classes or ("person" in cfg.classes and "rider" not in cfg.classes)
        return CityscapesDataset(cfg.images, cfg.annotations, classes=cfg.classes,
                                 riders="person" if merge else "rider", limit=cfg.limit)
    if cfg.dataset == "citypersons":
        return CityPersonsDataset(cfg.images, cfg.annotations, subset=cfg.subset, classes=cfg.classes,
                                  limit=cfg.limit)
    return CocoDataset(cfg.images, cfg.annotations, classes=cfg.classes)


def _bench_coco(cfg: BenchConfig, fast: Wrapped, dataset, progress: bool, keep: int) -> Dict[str, Any]:
    from tqdm import tqdm

    from argos.metrics.coco_eval import detections_to_coco, evaluate_coco
    from argos.metrics.detection import precision_recall, recall_vs_reference
    from argos.metrics.regions import RegionStats

    n = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    if n == 0:
        raise ValueError(f"no images to benchmark in {cfg.images}")
    label_map = dataset.label_map(fast.adapter.names)
    # Detections of model classes the dataset lacks (e.g. dogs on Cityscapes) are not scored.
    mapped = torch.tensor(sorted(label_map), dtype=torch.int64)
    use_masks = fast.proposer.needs_targets and getattr(fast.proposer, "source", "boxes") == "masks"

    def targets_of(i: int, sample) -> Optional[List[Dict[str, Any]]]:
        if not fast.proposer.needs_targets:
            return None
        t: Dict[str, Any] = {"boxes": sample.boxes}
        if use_masks:
            t["mask"] = torch.from_numpy(dataset.foreground_mask(i, source="masks"))
        return [t]

    meter = _Meter(fast)
    first = dataset[0]
    meter.warmup(first.image, targets_of(0, first), cfg.warmup)
    # Instance-segmentation models (detections with masks) also get mask AP, when the ground
    # truth has masks to match.
    mask_gt = _has_mask_gt(dataset)
    with_masks = mask_gt
    res: Dict[str, List[dict]] = {"baseline": [], "argos": []}
    dets: Dict[str, List[Detections]] = {"baseline": [], "argos": []}
    gts, samples, regions = [], [], RegionStats()
    for i in tqdm(range(n), desc=f"bench {cfg.proposer}+{cfg.executor}", disable=not progress, unit="img"):
        s = dataset[i]
        b, a = meter.step(i, s.image, targets_of(i, s))
        regions.update(fast.last_proposals[0].mask, s.boxes)
        had_masks, with_masks = with_masks, with_masks and b.masks is not None and a.masks is not None
        if had_masks and not with_masks:  # an image without masks: no mask AP for this run
            for r in res["baseline"] + res["argos"]:
                r.pop("segmentation", None)
        for side, d in (("baseline", b), ("argos", a)):
            if len(label_map) < len(fast.adapter.names):
                d = d[torch.isin(d.labels, mapped)]
            res[side] += detections_to_coco(d, s.image_id, label_map, with_masks=with_masks)
            dets[side].append(_relabel(d, label_map))
        gts.append({"boxes": s.boxes, "labels": s.category_ids, "iscrowd": s.iscrowd})
        if i < keep:
            samples.append({"image": s.image, "proposals": fast.last_proposals[0], "argos": a, "baseline": b})

    image_ids = [dataset.image_ids[i] for i in range(n)]
    # With a class filter, both sides are scored on those classes only.
    cat_ids = dataset.class_ids if cfg.classes else None
    if cat_ids is not None:
        keep_ids = torch.tensor(sorted(cat_ids))
        dets = {k: [d[torch.isin(d.labels, keep_ids)] for d in v] for k, v in dets.items()}
    scores = {}
    for side in ("baseline", "argos"):
        m = evaluate_coco(dataset.coco, res[side], image_ids=image_ids, cat_ids=cat_ids)
        pr = precision_recall(dets[side], gts)
        scores[side] = {"map50": m["map50"], "map50_95": m["map50_95"], "precision": pr["precision"],
                        "recall": pr["recall"], "map_small": m["map_small"], "map_medium": m["map_medium"],
                        "map_large": m["map_large"]}
        if with_masks:
            mm = evaluate_coco(dataset.coco, res[side], image_ids=image_ids, cat_ids=cat_ids, iou_type="segm")
            scores[side].update({f"mask_{k}": v for k, v in mm.items()})
    agreement = recall_vs_reference(dets["argos"], dets["baseline"], iou=0.5, min_score=cfg.agreement_score)
    result = meter.result(cfg, n, scores["baseline"], scores["argos"], regions.summary(), agreement)
    if keep:
        result["_samples"] = samples
    return result


def _has_mask_gt(dataset) -> bool:
    coco = getattr(dataset, "coco", None)
    anns = list(coco.anns.values()) if coco is not None else []
    return bool(anns) and all("segmentation" in a for a in anns)


def _bench_segmentation(cfg: BenchConfig, fast: Wrapped, dataset, progress: bool, keep: int) -> Dict[str, Any]:
    """A semantic-segmentation adapter: label maps instead of boxes.

    Accuracy (``miou``, ``pixel_accuracy``) needs per-pixel ground truth (``dataset.semantic``,
    e.g. Cityscapes gtFine); on other data those cells are NaN. Agreement is always measured: the
    share of pixels of the processed region where argos's label equals the unwrapped model's
    (``pixel_agreement_in_region``), and mIoU of argos against the unwrapped model over the whole
    frame, where unprocessed pixels count as misses (``miou_vs_baseline``).
    """
    from tqdm import tqdm

    from argos.metrics.regions import RegionStats
    from argos.metrics.segmentation import ConfusionMatrix

    n = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    if n == 0:
        raise ValueError(f"no images to benchmark in {cfg.images}")
    has_gt = hasattr(dataset, "semantic")

    def targets_of(sample) -> Optional[List[Dict[str, Any]]]:
        return [{"boxes": sample.boxes}] if fast.proposer.needs_targets else None

    meter = _Meter(fast)
    first = dataset[0]
    meter.warmup(first.image, targets_of(first), cfg.warmup)
    num_classes = len(fast.adapter.names)
    ignore = int(getattr(fast.adapter, "ignore_index", 255))
    # Confusion matrices accumulate frame by frame: full-resolution label maps of a whole data
    # set (Cityscapes: 500 x 1024 x 2048) would not fit in memory.
    vs_gt = {side: ConfusionMatrix(num_classes, ignore) for side in ("baseline", "argos")}
    in_region, whole = ConfusionMatrix(num_classes, ignore), ConfusionMatrix(num_classes, ignore)
    samples, regions = [], RegionStats()
    for i in tqdm(range(n), desc=f"bench {cfg.proposer}+{cfg.executor}", disable=not progress, unit="img"):
        s = dataset[i]
        b, a = meter.step(i, s.image, targets_of(s))
        mask = fast.last_proposals[0].mask
        regions.update(mask, s.boxes)
        if has_gt:
            gt = dataset.semantic(i).labels
            vs_gt["baseline"].update(b.labels, gt)
            vs_gt["argos"].update(a.labels, gt)
        in_region.update(a.labels, b.labels, region=mask.cpu())
        whole.update(a.labels, b.labels)
        if i < keep:
            samples.append({"image": s.image, "proposals": fast.last_proposals[0], "argos": a, "baseline": b})
    scores: Dict[str, Dict[str, float]] = {}
    for side in ("baseline", "argos"):
        m = vs_gt[side].compute() if has_gt else {"miou": float("nan"), "pixel_accuracy": float("nan")}
        scores[side] = {"miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"]}
    in_region, whole = in_region.compute(), whole.compute()
    result = meter.result(cfg, n, scores["baseline"], scores["argos"], regions.summary(), float("nan"))
    result["task"] = "segmentation"
    result["agreement"] = {"pixel_agreement_in_region": in_region["pixel_accuracy"],
                           "miou_vs_baseline": whole["miou"]}
    if keep:
        result["_samples"] = samples
    return result


def _bench_video(cfg: BenchConfig, fast: Wrapped, reader, progress: bool, keep: int) -> Dict[str, Any]:
    from tqdm import tqdm

    from argos.data.video import load_frame_boxes
    from argos.metrics.coco_eval import map_against, reference_targets
    from argos.metrics.detection import precision_recall, recall_vs_reference
    from argos.metrics.regions import RegionStats

    teacher = None
    if cfg.teacher is not None:
        teacher = load_frame_boxes(cfg.teacher, scale=cfg.teacher_scale, min_score=cfg.teacher_score)
    elif fast.proposer.needs_targets:
        raise ValueError(f"proposer {cfg.proposer!r} needs per-frame boxes on video: pass a teacher file")
    names = fast.adapter.names
    keep_labels = fast.adapter.class_ids(cfg.classes)

    def targets_of(index: int):
        if not fast.proposer.needs_targets:
            return None
        if index >= len(teacher):
            raise ValueError(f"teacher file has {len(teacher)} frames; the video has more (frame {index})")
        return [{"boxes": teacher[index][:, :4]}]

    def select(d: Detections, min_score: float = 0.0) -> Detections:
        ok = d.scores >= min_score
        if keep_labels is not None:
            ok &= torch.isin(d.labels, keep_labels)
        return d[ok]

    meter = _Meter(fast)
    frames = iter(reader)
    try:
        first_index, first = next(frames)
    except StopIteration:
        raise ValueError(f"no frame could be decoded from {cfg.video}") from None
    meter.warmup(first, targets_of(first_index), cfg.warmup)
    dets: Dict[str, List[Detections]] = {"baseline": [], "argos": []}
    samples, regions = [], RegionStats()
    total = len(reader) if reader.frame_count is not None else None

    def all_frames() -> Iterable[Tuple[int, np.ndarray]]:
        yield first_index, first
        yield from frames

    for i, (index, frame) in enumerate(tqdm(all_frames(), total=total, desc=f"bench {cfg.proposer}+{cfg.executor}",
                                            disable=not progress, unit="frame")):
        b, a = meter.step(i, frame, targets_of(index))
        regions.update(fast.last_proposals[0].mask, select(b, cfg.gt_score).boxes)
        dets["baseline"].append(select(b))
        dets["argos"].append(select(a))
        if i < keep:
            samples.append({"image": frame, "proposals": fast.last_proposals[0], "argos": a, "baseline": b})
    if reader.stopped_early:
        print(f"warning: {cfg.video}: {reader.error}; benchmarked the {len(dets['baseline'])} frames that decoded")
    n = len(dets["baseline"])
    gts = reference_targets(dets["baseline"], cfg.gt_score)
    scores = {}
    for side in ("baseline", "argos"):
        m = map_against(gts, [d.image_size for d in dets["baseline"]], dets[side])
        pr = precision_recall(dets[side], gts)
        scores[side] = {"map50": m["map50"], "map50_95": m["map50_95"], "precision": pr["precision"],
                        "recall": pr["recall"], "map_small": m["map_small"], "map_medium": m["map_medium"],
                        "map_large": m["map_large"]}
    agreement = recall_vs_reference(dets["argos"], dets["baseline"], iou=0.5, min_score=cfg.agreement_score)
    result = meter.result(cfg, n, scores["baseline"], scores["argos"], regions.summary(), agreement)
    result["ground_truth"] = f"unwrapped detector, score >= {cfg.gt_score}" + (
        f", classes {cfg.classes}" if cfg.classes else "")
    if reader.stopped_early:
        result["decode_error"] = reader.error
    if keep:
        result["_samples"] = samples
    return result


def _relabel(dets: Detections, label_map: Dict[int, int]) -> Detections:
    """Model class ids -> dataset category ids (same Detections otherwise)."""
    lut = torch.full((max(label_map) + 1,), -1, dtype=torch.int64)
    for k, v in label_map.items():
        lut[k] = v
    return Detections(dets.boxes, dets.scores, lut[dets.labels], dets.image_size)


_DATASET_NAMES = {"coco": "COCO", "cityscapes": "Cityscapes", "citypersons": "CityPersons"}


def format_table(result: Dict[str, Any]) -> str:
    """Baseline vs argos side by side, as printed by ``argos bench``."""
    b, a = result["baseline"], result["argos"]
    segmentation = result.get("task") == "segmentation"
    if segmentation:
        rows = [(k, f"{b[key]:.4f}", f"{a[key]:.4f}") for k, key in (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"))]
    else:
        rows = [
            ("mAP50-95", f"{b['map50_95']:.4f}", f"{a['map50_95']:.4f}"),
            ("mAP50", f"{b['map50']:.4f}", f"{a['map50']:.4f}"),
            ("precision", f"{b['precision']:.4f}", f"{a['precision']:.4f}"),
            ("recall", f"{b['recall']:.4f}", f"{a['recall']:.4f}"),
        ]
        if "mask_map50_95" in b:
            rows.append(("mask mAP50-95", f"{b['mask_map50_95']:.4f}", f"{a['mask_map50_95']:.4f}"))
    rows += [
        ("GFLOPs / image", f"{b['gflops']:.2f}", f"{a['gflops']:.2f} (proposer {a['gflops_proposer']:.3f})"),
        ("area processed (proposals)", "1.000", f"{a['area_processed']:.3f}"),
        ("detector compute (GFLOPs share)", "1.000", f"{a['compute_fraction']:.3f}"),
        ("regions detected @1.0/.95/.9", "-",
         f"{a['regions_detected']:.3f} / {a['regions_detected@0.95']:.3f} / {a['regions_detected@0.9']:.3f}"),
        ("latency median ms", f"{b['latency_ms']['median']:.1f}", f"{a['latency_ms']['median']:.1f}"),
        ("  proposer / detector / overhead", "-",
         f"{a['latency_ms']['proposer']:.1f} / {a['latency_ms']['detector']:.1f} / {a['latency_ms']['overhead']:.1f}"),
    ]
    c = result["config"]
    model = Path(str(c.get("weights") or c.get("cfg") or "")).name
    source = Path(str(c.get("video"))).name if c.get("video") else _DATASET_NAMES[c.get("dataset", "coco")]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(max(len(r[1]) for r in rows), len("baseline"))
    head = (f"{result['images']} {'frames' if c.get('video') else 'images'} of {source} | {c['detector']} {model} @ "
            f"{c['img_size']} | proposer={c['proposer']} executor={c['executor']} | threads={c['torch_threads']}")
    lines = [head]
    if "ground_truth" in result:
        lines.append(f"ground truth: {result['ground_truth']}")
    lines += [f"{'':<{w0}}  {'baseline':>{w1}}  argos", "-" * (w0 + w1 + 40)]
    lines += [f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]}" for r in rows]
    if a.get("teacher_fraction"):
        lines.append(f"teacher (full-frame) share of frames: {a['teacher_fraction']:.3f}")
    if segmentation:
        ag = result["agreement"]
        agree_text = (f"pixels equal to the unwrapped model's in the processed region {ag['pixel_agreement_in_region']:.3f}"
                      f", mIoU vs unwrapped {ag['miou_vs_baseline']:.3f}")
    else:
        agree_text = f"agreement (recall of baseline @IoU0.5) {result['agreement']['recall_vs_baseline@0.5']:.3f}"
    speed = f"speedup {result['speedup']:.2f}x (median frame, proposer included)"
    if a.get("teacher_fraction"):
        speed += f", {result['speedup_mean']:.2f}x over the whole run (key frames included)"
    lines.append(f"{speed} | {agree_text}")
    return "\n".join(lines)


def write_json(result: Dict[str, Any], path: str) -> None:
    """Write the bench JSON (private ``_`` keys left out)."""
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean, indent=2, default=str))
