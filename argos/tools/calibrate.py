"""``argos calibrate VIDEO --weights W --out CAM.json``: pick a camera's configuration on its own footage.

No labels: the wrapped detector's own full-frame output on the calibration frames is the
reference. :func:`argos.tools.pareto.run_pareto` runs the unwrapped detector and every
configuration of :data:`GRID` on every frame, interleaved, and the choice is:

- the fastest configuration whose agreement on these frames reaches ``target``;
- if none does, the most faithful one (the file says ``reached_target: false``);
- if the one so chosen is slower than the unwrapped detector, the ``full`` proposer with the
  ``masked`` executor: the unwrapped detector's own output, because argos does not pay on this
  camera (``argos_pays: false``).

The file also keeps every point measured, frame skipping (2/3/4) included, so a user sees whether
skipping beats argos on their camera (``skip_beats_choice``). The calibration's own cost is its
wall-clock ``seconds``, apart from any later run. It reads at most ``limit`` frames, so its cost
does not grow with the length of the video.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from argos.calibration import Calibration

__all__ = ["GRID", "MIN_FRAMES", "choose", "calibrate", "main"]

#: the configurations tried (``argos pareto --argos`` syntax): key-frame interval, hold score,
#: velocity and canvas gap, the knobs whose best value depends on the camera (motion, density,
#: object size).
GRID = (
    # the auto configuration: frame skipping whose held boxes move with the objects (no detector
    # between key frames), key frames every 2nd, 3rd and 4th frame
    "auto+auto",
    "auto+auto:p.max_interval=3",
    "auto+auto:p.max_interval=4",
    # the same with the held boxes moved by optical flow instead of their velocity
    "auto+auto:p.flow=true",
    "auto+auto:p.max_interval=3,p.flow=true",
    "auto+auto:p.max_interval=4,p.flow=true",
    # the same, plus the detector on moving regions that no held box covers (newcomers)
    "auto+auto:p.newcomers=true,p.motion_min_area=1024",
    # uncertain detections and newcomers looked at again between key frames
    "temporal+packed_crops:p.max_interval=2,p.hold_score=0.3,p.velocity=true",
    "temporal+packed_crops:p.max_interval=3,p.hold_score=0.3,p.velocity=true",
    "temporal+packed_crops:p.max_interval=4,p.hold_score=0.3,p.velocity=true",
    "temporal+packed_crops:p.max_interval=4,p.hold_score=0.3,p.velocity=true,e.gap=0",
    "temporal+packed_crops:p.max_interval=2",
    "temporal+packed_crops",
    "temporal+packed_crops:p.max_interval=8",
)

#: scored frames a calibration needs at least (after warm-up): fewer make agreement a coin toss.
MIN_FRAMES = 30


def choose(points: Sequence[Dict[str, Any]], target: float) -> Dict[str, Any]:
    """The fastest argos point at ``agreement >= target``, else the most faithful (ties: faster)."""
    ours = [p for p in points if p["method"] == "argos"]
    if not ours:
        raise ValueError("no argos configuration was measured")
    good = [p for p in ours if p["agreement"] >= target]
    if good:
        return max(good, key=lambda p: p["speedup"])
    return max(ours, key=lambda p: (p["agreement"], p["speedup"]))


def calibrate(baseline, frames, total: Optional[int], grid: Sequence[str] = GRID, target: float = 0.97,
              warmup: int = 2, progress: bool = True, source: str = "", start: int = 0,
              weights: Optional[str] = None) -> Calibration:
    """Run the grid on ``frames`` (a :class:`VideoReader` or iterable of ``(index, frame)``) and choose."""
    from argos.tools.pareto import parse_argos_config, run_pareto

    configs = [parse_argos_config(s) for s in grid]
    shape: List[Any] = []

    def tracked():
        for index, frame in frames:
            if not shape:
                shape.append(frame.shape[:2])
            yield index, frame

    t0 = time.perf_counter()
    result = run_pareto(tracked, baseline, configs, skips=(2, 3, 4), warmup=warmup, progress=progress, total=total)
    seconds = time.perf_counter() - t0
    if result["frames"] < MIN_FRAMES:
        raise ValueError(f"{source or 'the video'} gave {result['frames']} frames after {warmup} warm-up; a "
                         f"calibration needs at least {MIN_FRAMES} (give a longer video, or a larger --limit)")
    chosen = choose(result["points"], target)
    cfg = configs[[p for p in result["points"] if p["method"] == "argos"].index(chosen)]
    if cfg.proposer == "auto" or cfg.executor == "auto":  # the file names what ran, not what auto means today
        from argos.tools.pareto import ArgosConfig
        from argos.wrap import AUTO, auto_options

        cfg = ArgosConfig(AUTO["proposer"] if cfg.proposer == "auto" else cfg.proposer,
                          AUTO["executor"] if cfg.executor == "auto" else cfg.executor,
                          auto_options(cfg.proposer, "proposer", baseline, cfg.proposer_kwargs),
                          auto_options(cfg.executor, "executor", baseline, cfg.executor_kwargs))
    pays = chosen["speedup"] >= 1.0
    if not pays:
        cfg = parse_argos_config("full+masked")
        chosen = next(p for p in result["points"] if p["method"] == "baseline")
        chosen = {**chosen, "params": {**chosen["params"], "config": "full+masked (the unwrapped detector)"}}
    skips = [p for p in result["points"] if p["method"] == "skip"]
    beaten_by = [p["params"]["every"] for p in skips
                 if p["agreement"] >= chosen["agreement"] and p["speedup"] >= chosen["speedup"]]
    report = {
        "source": str(source), "start": int(start), "frames": result["frames"], "warmup": warmup,
        "seconds": round(seconds, 2), "target": target, "reached_target": chosen["agreement"] >= target,
        "argos_pays": pays,
        "chosen": chosen, "skip_beats_choice": beaten_by, "baseline_ms_median": result["baseline_ms_median"],
        "points": result["points"],
    }
    return Calibration(cfg.proposer, cfg.executor, dict(cfg.proposer_kwargs), dict(cfg.executor_kwargs),
                       names=dict(baseline.names), img_size=getattr(baseline, "img_size", None),
                       frame_size=tuple(int(v) for v in shape[0]) if shape else None, weights=weights, report=report)


def main(args) -> int:
    """``argos calibrate`` (arguments from :func:`argos.cli.build_parser`)."""
    import torch

    from argos.data.video import VideoReader
    from argos.tools.options import parse_kv
    from argos.tools.outputs import check_outputs
    from argos.tools.pareto import pareto_table
    from argos.wrap import build_adapter

    torch.set_num_threads(args.threads)
    md = str(Path(args.out).with_suffix(".md"))
    check_outputs([args.source, args.weights], [args.out, md])
    if not Path(args.weights).exists():
        raise FileNotFoundError(f"detector checkpoint not found: {args.weights}")
    if args.img_size == 0:
        from argos.tools.options import native_img_size

        args.img_size = native_img_size(args.source)
        print(f"--img-size 0: native scale, input size {args.img_size}")
    reader = VideoReader(args.source, start=args.start, limit=args.limit)
    total = len(reader) if reader.frame_count is not None else None
    if total is not None and total - args.warmup < MIN_FRAMES:
        raise ValueError(f"{args.source} has {total} frames from frame {args.start}; a calibration needs at least "
                         f"{MIN_FRAMES + args.warmup} ({MIN_FRAMES} scored after {args.warmup} warm-up)")
    baseline = build_adapter(args.weights, img_size=args.img_size, conf=args.conf, **parse_kv(args.detector_opt))
    grid = args.grid or GRID
    cal = calibrate(baseline, reader, total, grid, target=args.target, warmup=args.warmup,
                    progress=not args.no_progress, source=args.source, start=args.start,
                    weights=Path(args.weights).name)
    cal.save(args.out)
    rep = cal.report
    table = pareto_table({"frames": rep["frames"], "warmup": rep["warmup"],
                          "baseline_ms_median": rep["baseline_ms_median"], "points": rep["points"]}, args.target)
    Path(md).write_text(f"# argos calibrate {Path(args.source).name} (frames {args.start}+{rep['frames']})\n\n" + table)
    print(table)
    c = rep["chosen"]
    verdict = "reaches" if rep["reached_target"] else "does NOT reach"
    if not rep["argos_pays"]:
        print("note: every configuration tried was slower than the unwrapped detector on this footage; the "
              "calibration keeps the unwrapped detector's output (full + masked)")
    print(f"chose {c['params']['config']}: {c['speedup']:.2f}x at agreement {c['agreement']:.3f} on these "
          f"frames ({verdict} {args.target}); calibration took {rep['seconds']:.0f} s on {args.threads} threads")
    if rep["skip_beats_choice"]:
        print(f"note: frame skipping (1 frame in {rep['skip_beats_choice'][0]}, boxes held) is as fast and as "
              "faithful as this choice on this footage")
    print(f"wrote {args.out} and {md}; use it with: argos run LATER_VIDEO --weights {args.weights} "
          f"--img-size {args.img_size} --calibration {args.out}")
    return 0
