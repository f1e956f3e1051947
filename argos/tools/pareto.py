"""``argos pareto``: argos beside the cheap tricks a user already knows, on one video.

Every method runs on every frame in one loop, interleaved (the order rotates each frame), with
the same thread count, so machine noise hits all of them alike:

- ``baseline``: the unwrapped detector at ``img_size``; the reference of every agreement;
- ``argos``: wrapped configurations (proposer + executor, any options), proposer, key frames and
  anything learned online counted in their time;
- ``resolution``: the same detector at lower input sizes;
- ``small_model``: a smaller detector with the same classes, at ``img_size``;
- ``skip``: run the detector on every k-th frame and hold its boxes in between. Its key frames
  are exactly the baseline's frames, so its detections and times are taken from the baseline's
  run (holding costs nothing measurable); its time is the baseline's time on its key frames.

Per point: ``agreement`` (:func:`argos.metrics.recall_vs_reference`, score >= 0.25, IoU 0.5,
against the baseline), ``map50_vs_baseline``, ``fps`` and ``speedup`` (throughput: frames over
summed per-frame times, after ``warmup`` uncounted frames), ``area`` (mean share of the
full-frame input the method processes) and ``proposer_ms`` (mean per frame).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from argos.structures import Detections

__all__ = ["ArgosConfig", "ParetoPoint", "parse_argos_config", "default_sizes", "skip_point", "measured_point",
           "run_pareto",
           "pareto_table", "plot_pareto"]

METHODS = ("baseline", "argos", "skip", "resolution", "small_model")


@dataclass
class ArgosConfig:
    """One wrapped configuration: ``proposer`` and ``executor`` names with their options."""

    proposer: str
    executor: str
    proposer_kwargs: Dict[str, Any] = field(default_factory=dict)
    executor_kwargs: Dict[str, Any] = field(default_factory=dict)
    #: a name shown before the label (``"calibrated"`` for the configuration of a calibration file)
    tag: str = ""

    @property
    def label(self) -> str:
        opts = [f"p.{k}={v}" for k, v in self.proposer_kwargs.items()]
        opts += [f"e.{k}={v}" for k, v in self.executor_kwargs.items()]
        text = f"{self.proposer}+{self.executor}" + (f" ({', '.join(opts)})" if opts else "")
        return f"{self.tag}: {text}" if self.tag else text


def parse_argos_config(spec: str) -> ArgosConfig:
    """``"PROPOSER+EXECUTOR[:key=value,...]"`` -> :class:`ArgosConfig`.

    Keys prefixed ``p.`` go to the proposer and ``e.`` to the executor, e.g.
    ``"temporal+packed_crops:p.max_interval=4,e.margin=16"``.
    """
    head, _, opts = spec.partition(":")
    if "+" not in head:
        raise ValueError(f"argos configuration {spec!r} must look like PROPOSER+EXECUTOR[:p.key=v,e.key=v]")
    proposer, executor = (s.strip() for s in head.split("+", 1))
    pk: Dict[str, Any] = {}
    ek: Dict[str, Any] = {}
    for item in (o.strip() for o in opts.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value in {spec!r}, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("p."):
            pk[key[2:]] = value
        elif key.startswith("e."):
            ek[key[2:]] = value
        else:
            raise ValueError(f"option {key!r} in {spec!r} needs a 'p.' (proposer) or 'e.' (executor) prefix")
    return ArgosConfig(proposer, executor, pk, ek)


def default_sizes(img_size: int) -> List[int]:
    """The lower input sizes a user would try: 512/416/320 for 640; 960/640 for 1280; else 3/4 and 1/2."""
    if img_size == 640:
        return [512, 416, 320]
    if img_size == 1280:
        return [960, 640]
    return sorted({max(32, int(img_size * f) // 32 * 32) for f in (0.75, 0.5)} - {img_size}, reverse=True)


@dataclass
class ParetoPoint:
    method: str
    params: Dict[str, Any]
    agreement: float
    map50_vs_baseline: float
    fps: float
    speedup: float
    area: float
    proposer_ms: float

    def as_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in ("method", "params", "agreement", "map50_vs_baseline", "fps",
                                              "speedup", "area", "proposer_ms")}


def skip_point(references: Sequence[Detections], k: int) -> List[Detections]:
    """Frame skipping: frame ``i`` gets the detections of frame ``k * (i // k)`` (boxes held)."""
    if k < 1:
        raise ValueError(f"skip interval must be >= 1, got {k}")
    return [references[(i // k) * k] for i in range(len(references))]


def skip_points(refs: Sequence[Detections], base_ms: Sequence[float], skips: Sequence[int]) -> List[ParetoPoint]:
    """Frame skipping from the unwrapped detector's own outputs and per-frame times: skip ``k``
    pays the detector on frames 0, k, 2k, ... and holds their boxes in between."""
    n, base_total = len(refs), sum(base_ms)
    points = []
    for k in skips:
        agreement, map50 = _score(skip_point(refs, k), list(refs))
        t = sum(base_ms[i] for i in range(0, n, k))
        points.append(ParetoPoint("skip", {"every": int(k)}, agreement, map50, 1e3 * n / t, base_total / t,
                                  len(range(0, n, k)) / n, 0.0))
    return points


def measured_point(method: str, params: Dict[str, Any], outs: Sequence[Detections], refs: Sequence[Detections],
                   ms: Sequence[float], base_ms: Sequence[float], area: Sequence[float],
                   proposer_ms: Sequence[float] = ()) -> ParetoPoint:
    """A method's point from its per-frame outputs, times (ms), areas and proposer times, beside the
    baseline's outputs ``refs`` and times ``base_ms`` on the same frames (throughput speedup)."""
    n = len(refs)
    agreement, map50 = _score(list(outs), list(refs))
    t = sum(ms)
    return ParetoPoint(method, params, agreement, map50, 1e3 * n / t, sum(base_ms) / t, sum(area) / n,
                       sum(proposer_ms) / n if proposer_ms else 0.0)


def _score(cands: List[Detections], refs: List[Detections]) -> Tuple[float, float]:
    from argos.metrics.coco_eval import map_against, reference_targets
    from argos.metrics.detection import recall_vs_reference

    agreement = recall_vs_reference(cands, refs, iou=0.5, min_score=0.25)
    kept = [d[d.scores >= 0.25] for d in cands]
    map50 = map_against(reference_targets(refs, 0.25), [d.image_size for d in refs], kept)["map50"]
    return float(agreement), float(map50)


def run_pareto(
    frames: Callable[[], Any],
    baseline,
    argos_configs: Sequence[ArgosConfig] = (),
    sizes: Sequence[int] = (),
    small=None,
    skips: Sequence[int] = (2, 3, 4),
    build_lower: Optional[Callable[[int], Any]] = None,
    warmup: int = 2,
    progress: bool = True,
    total: Optional[int] = None,
) -> Dict[str, Any]:
    """Run every method on every frame, interleaved; returns ``{"points": [...], "frames": N, ...}``.

    Args:
        frames: called once; yields ``(index, frame)`` RGB uint8 (e.g. a :class:`VideoReader`).
        baseline: the detector's adapter at the reference input size.
        argos_configs: wrapped configurations; each wraps ``baseline`` itself (same weights).
        sizes: lower input sizes; ``build_lower(size)`` builds the adapter for each.
        small: adapter of a smaller detector with the same classes, or ``None``.
        skips: frame-skip intervals.
        warmup: first frames that every method runs but that are not timed or scored.
    """
    from tqdm import tqdm

    from argos.wrap import wrap

    if small is not None and dict(small.names) != dict(baseline.names):
        raise ValueError("the small model's classes differ from the big model's: agreement would compare "
                         "different labels (give a small model trained on the same classes)")
    if sizes and build_lower is None:
        raise ValueError("lower sizes need build_lower(size) -> adapter")
    methods: List[Tuple[str, Dict[str, Any], Any]] = []
    for cfg in argos_configs:
        wrapped = wrap(baseline, cfg.proposer, cfg.executor, proposer_kwargs=dict(cfg.proposer_kwargs),
                       executor_kwargs=dict(cfg.executor_kwargs))
        methods.append(("argos", {"config": cfg.label, "proposer": cfg.proposer, "executor": cfg.executor,
                                  **{f"p.{k}": v for k, v in cfg.proposer_kwargs.items()},
                                  **{f"e.{k}": v for k, v in cfg.executor_kwargs.items()}}, wrapped))
    for s in sizes:
        methods.append(("resolution", {"img_size": int(s)}, build_lower(int(s))))
    if small is not None:
        methods.append(("small_model", {"weights": str(getattr(small, "weights", "small"))}, small))

    ref_size = int(getattr(baseline, "img_size", 0))
    base_ms: List[float] = []
    refs: List[Detections] = []
    outs: List[List[Detections]] = [[] for _ in methods]
    ms: List[List[float]] = [[] for _ in methods]
    area: List[List[float]] = [[] for _ in methods]
    prop_ms: List[List[float]] = [[] for _ in methods]
    n = 0
    first_shape = None
    for i, (index, frame) in enumerate(tqdm(frames(), total=total, desc="argos pareto", unit="frame",
                                            disable=not progress)):
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise ValueError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} after {first_shape[1]}x"
                             f"{first_shape[0]} frames; argos pareto compares methods on one camera, one frame size")
        order = list(range(-1, len(methods)))
        shift = i % len(order)
        order = order[shift:] + order[:shift]
        counted = i >= warmup
        for j in order:
            if j < 0:
                t0 = time.perf_counter()
                (d,) = baseline.predict([frame])
                t = (time.perf_counter() - t0) * 1e3
                if counted:
                    base_ms.append(t)
                    refs.append(d)
                continue
            kind, _, m = methods[j]
            t0 = time.perf_counter()
            if kind == "argos":
                d = m(frame)
                t = m.last_stats.total_ms
            else:
                (d,) = m.predict([frame])
                t = (time.perf_counter() - t0) * 1e3
            if counted:
                ms[j].append(t)
                outs[j].append(d)
                if kind == "argos":
                    area[j].append(m.last_stats.area_processed)
                    prop_ms[j].append(m.last_stats.proposer_ms)
                elif kind == "resolution":
                    area[j].append((methods[j][1]["img_size"] / ref_size) ** 2 if ref_size else float("nan"))
                else:
                    area[j].append(1.0)
                    prop_ms[j].append(0.0)
        n += counted
    if n == 0:
        raise ValueError(f"the video has no frames after the {warmup} warm-up frames")
    base_total = sum(base_ms)
    points = [ParetoPoint("baseline", {"img_size": ref_size}, 1.0, 1.0, 1e3 * n / base_total, 1.0, 1.0, 0.0)]
    points += skip_points(refs, base_ms, skips)
    for j, (kind, params, _) in enumerate(methods):
        points.append(measured_point(kind, params, outs[j], refs, ms[j], base_ms, area[j], prop_ms[j]))
    return {"frames": n, "warmup": warmup, "baseline_ms_median": sorted(base_ms)[n // 2],
            "points": [p.as_dict() for p in points]}


def _label(p: Dict[str, Any]) -> str:
    params = p["params"]
    if p["method"] == "argos":
        return params.get("config", "argos")
    if p["method"] == "skip":
        return f"1 frame in {params['every']}"
    if p["method"] in ("resolution", "baseline"):
        return f"{params.get('img_size')} px"
    return str(params.get("weights", ""))


def pareto_table(result: Dict[str, Any], target: float = 0.97) -> str:
    """Markdown table of the points, fastest first, with a mark on those at ``agreement >= target``."""
    rows = ["| method | setting | agreement | mAP50 vs baseline | fps | speedup | area | proposer ms |",
            "|---|---|---|---|---|---|---|---|"]
    for p in sorted(result["points"], key=lambda p: -p["speedup"]):
        mark = " ✓" if p["agreement"] >= target else ""
        rows.append(f"| {p['method']} | {_label(p)} | {p['agreement']:.3f}{mark} | {p['map50_vs_baseline']:.3f} | "
                    f"{p['fps']:.1f} | {p['speedup']:.2f}× | {p['area']:.3f} | {p['proposer_ms']:.1f} |")
    best = {}
    for p in result["points"]:
        if p["agreement"] >= target and p["method"] != "baseline":
            if p["method"] not in best or p["speedup"] > best[p["method"]]["speedup"]:
                best[p["method"]] = p
    lines = [f"{result['frames']} frames (after {result['warmup']} warm-up), baseline median "
             f"{result['baseline_ms_median']:.1f} ms/frame. ✓: agreement >= {target}.", ""] + rows + [""]
    if best:
        lines.append("Fastest at agreement >= %.2f: " % target + "; ".join(
            f"{m} {p['speedup']:.2f}× ({_label(p)})" for m, p in sorted(best.items(), key=lambda kv: -kv[1]["speedup"])))
    else:
        lines.append(f"No method other than the baseline reaches agreement >= {target}.")
    return "\n".join(lines) + "\n"


def plot_pareto(result: Dict[str, Any], path: str, title: str = "", target: float = 0.97) -> None:
    """PNG: agreement against speedup, one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"baseline": ("k", "*"), "argos": ("tab:red", "o"), "skip": ("tab:blue", "s"),
               "resolution": ("tab:green", "^"), "small_model": ("tab:purple", "D")}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, (color, marker) in markers.items():
        pts = [p for p in result["points"] if p["method"] == method]
        if not pts:
            continue
        ax.scatter([p["speedup"] for p in pts], [p["agreement"] for p in pts], c=color, marker=marker,
                   s=60, label=method, zorder=3)
        for p in pts:
            ax.annotate(_label(p).split(" (")[0], (p["speedup"], p["agreement"]), fontsize=6,
                        xytext=(4, -8), textcoords="offset points")
    ax.axhline(target, color="grey", lw=0.8, ls="--", zorder=1)
    ax.set_xlabel("speedup over the unwrapped detector (throughput)")
    ax.set_ylabel("agreement with the unwrapped detector")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_outputs(result: Dict[str, Any], json_path: Optional[str], plot_path: Optional[str], title: str) -> str:
    """Write ``json_path`` (+ the markdown table next to it, ``.md``) and ``plot_path``; returns the table."""
    table = pareto_table(result)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
        Path(json_path).with_suffix(".md").write_text(f"# {title}\n\n" + table)
    if plot_path:
        plot_pareto(result, plot_path, title)
    return table


#: what ``argos pareto`` runs when no ``--argos`` is given: the auto configuration (motion-
#: compensated key frames every other frame), the same every third frame, and the temporal
#: proposer's own defaults (uncertain detections and newcomers looked at again between key frames).
DEFAULT_CONFIGS = (
    "auto+auto",
    "auto+auto:p.max_interval=3",
    "temporal+packed_crops",
)


def main(args) -> int:
    """``argos pareto`` (arguments from :func:`argos.cli.build_parser`)."""
    import torch

    from argos.data.video import VideoReader
    from argos.tools.outputs import check_outputs
    from argos.wrap import build_adapter

    torch.set_num_threads(args.threads)
    md = str(Path(args.json).with_suffix(".md")) if args.json else None
    check_outputs([args.source, args.weights, args.small_weights], [args.json, md, args.plot])
    if not Path(args.source).exists():
        raise FileNotFoundError(f"video not found: {args.source}")
    if not Path(args.weights).exists():
        raise FileNotFoundError(f"detector checkpoint not found: {args.weights}")
    if args.img_size == 0:
        from argos.tools.options import native_img_size

        args.img_size = native_img_size(args.source)
        print(f"--img-size 0: native scale, input size {args.img_size}")
    specs = DEFAULT_CONFIGS if args.argos is None else args.argos
    configs = [parse_argos_config(s) for s in specs]
    cal = None
    if getattr(args, "calibration", None):
        from argos.calibration import load_calibration

        cal = load_calibration(args.calibration)
        configs.append(ArgosConfig(cal.proposer, cal.executor, dict(cal.proposer_kwargs), dict(cal.executor_kwargs),
                                   tag="calibrated"))

    from argos.tools.options import parse_kv

    extra = parse_kv(getattr(args, "detector_opt", None))

    def adapter(size: int, weights: str = args.weights):
        # --detector-opt (e.g. backend=openvino) applies to every model of the run.
        return build_adapter(weights, img_size=size, conf=args.conf, **extra)

    baseline = adapter(args.img_size)
    if cal is not None:
        cal.check_detector(baseline.names, args.img_size)
        for _, frame in VideoReader(args.source, start=args.start, limit=1):
            cal.check_frame(frame.shape)
    sizes = default_sizes(args.img_size) if args.sizes is None else args.sizes
    small = None
    if args.small_weights:
        if not Path(args.small_weights).exists():
            raise FileNotFoundError(f"small model checkpoint not found: {args.small_weights}")
        small = adapter(args.img_size, args.small_weights)
        small.weights = args.small_weights
    reader = VideoReader(args.source, start=args.start, limit=args.limit)
    total = len(reader) if reader.frame_count is not None else None
    result = run_pareto(lambda: reader, baseline, configs, sizes, small, args.skips, build_lower=adapter,
                        warmup=args.warmup, progress=not args.no_progress, total=total)
    result.update(source=str(args.source), weights=str(args.weights), img_size=args.img_size,
                  start=args.start, threads=args.threads, backend=getattr(baseline, "backend", "torch"))
    title = f"{Path(args.source).name} | {Path(args.weights).name} ({result['backend']}) at {args.img_size} | frames {args.start}+{result['frames']}"
    table = write_outputs(result, args.json, args.plot, title)
    print(table)
    for path in (args.json, args.json and str(Path(args.json).with_suffix(".md")), args.plot):
        if path:
            print(f"wrote {path}")
    return 0
