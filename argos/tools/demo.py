"""``argos demo``: the job argos is for, on the bundled street video, as a fixed camera is deployed.

The PETS 2009 S2L1 video (a fixed camera, small people) through the trained yolov5n:

1. **calibrate** (:mod:`argos.tools.calibrate`) on the video's first ``calibrate_frames`` frames,
   over :data:`DEMO_GRID` (the default configuration and two variants), with no labels: the
   fastest that agrees >= 0.97 with the unwrapped detector there. Its cost is printed apart;
2. **run** the frames after them, held out from the calibration, with the configuration it chose
   (``argos run --calibration``), next to the unwrapped detector (``--compare``) and the default
   configuration of ``argos run`` (``proposer="auto", executor="auto"``) and the unwrapped detector
   at a lower input size (512), all four on every frame. Frame skipping, the trick every user
   knows, is computed from the unwrapped detector's own outputs and times and printed beside them.

``calibrate_frames=0`` skips step 1: the run starts at frame 0 with the default configuration.

Writes into ``out`` (default ``outputs/``):

- ``demo.mp4``: boxes drawn, the unprocessed area dimmed, proposals outlined, a running
  fps / speedup caption;
- ``demo.json`` (the ``argos run`` summary: ``speedup``, ``agreement``, ..., plus ``calibration``,
  ``default`` and ``alternatives``) and ``demo.jsonl``;
- ``demo_calibration.json``: the calibration file (``argos run --calibration`` reads it);
- ``demo_side_by_side.png``: one frame, unwrapped (left) and argos (right);
- ``demo_timeline.png``: per-frame latency of both, and the area argos processed;
- ``demo_pareto.png``: agreement against speedup for argos, the unwrapped detector, the lower
  input size and skipping 2/3/4 frames.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["run_demo", "VIDEO", "WEIGHTS", "DEMO_GRID", "CALIBRATE_FRAMES"]

VIDEO = "data/video/pets2009_s2l1_480x360.avi"
WEIGHTS = "weights/yolov5n.pt"
#: frames the demo calibrates on before its run
CALIBRATE_FRAMES = 150
#: the demo's calibration grid: the default (key frames + motion), the same with optical flow, and
#: with the detector on moving regions between key frames (a short grid keeps the demo short)
DEMO_GRID = ("auto+auto", "auto+auto:p.flow=true", "auto+auto:p.newcomers=true,p.motion_min_area=1024")


def run_demo(out: str = "outputs", limit: Optional[int] = None, threads: int = 2, img_size: int = 640,
             progress: bool = True, still_frame: int = 300,
             calibrate_frames: int = CALIBRATE_FRAMES, lower_size: Optional[int] = 512) -> Dict[str, Any]:
    """Run the demo; returns ``{"summary", "rows", "files"}`` (rows as printed by :func:`format_rows`).

    Args:
        limit: frames of the run (after the calibration's), at most.
        calibrate_frames: frames calibrated on first (0: none, the default configuration runs).
        lower_size: the unwrapped detector also runs at this lower input size on every frame, as the
            cheap alternative a user knows (``None``: not run).

    Raises:
        argos.assets.AssetMissing: the video or the weights are not on this machine (the message
            says where they go).
    """
    import cv2
    import torch

    from argos.assets import asset_path
    from argos.data.video import VideoReader
    from argos.tools.calibrate import MIN_FRAMES, calibrate
    from argos.tools.pareto import measured_point, plot_pareto, skip_points
    from argos.tools.run import RunConfig, run_stream
    from argos.viz import caption, draw_overlay
    from argos.wrap import build_adapter, wrap

    video, weights = asset_path(VIDEO), asset_path(WEIGHTS)
    if calibrate_frames and calibrate_frames < MIN_FRAMES + 2:
        raise ValueError(f"calibrate_frames must be 0 or >= {MIN_FRAMES + 2} (a calibration scores at least "
                         f"{MIN_FRAMES} frames after 2 warm-up), got {calibrate_frames}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    adapter = build_adapter(str(weights), img_size=img_size, conf=0.25)
    files: Dict[str, str] = {}
    cal = None
    if calibrate_frames:
        reader = VideoReader(str(video), limit=calibrate_frames)
        cal = calibrate(adapter, reader, total=len(reader), grid=DEMO_GRID, progress=progress, source=str(video),
                        weights=str(weights))
        files["calibration"] = str(cal.save(out_dir / "demo_calibration.json"))
        fast = wrap(adapter, "auto", "auto", calibration=cal)
    else:
        fast = wrap(adapter, "auto", "auto")
    default = wrap(adapter, "auto", "auto") if cal is not None else None
    cfg = RunConfig(source=str(video), start=calibrate_frames, out_video=str(out_dir / "demo.mp4"),
                    detections=str(out_dir / "demo.jsonl"), summary=str(out_dir / "demo.json"), compare=True,
                    limit=limit, caption=True, per_frame=True)
    theirs: List = []
    default_dets: List = []
    default_ms: List[float] = []
    default_area: List[float] = []
    default_prop: List[float] = []
    lower = build_adapter(str(weights), img_size=lower_size, conf=0.25) if lower_size else None
    lower_dets: List = []
    lower_ms: List[float] = []
    still: Dict[str, Any] = {}

    def keep(index, frame, dets, base, proposals):
        theirs.append(base)
        if default is not None:  # the default configuration on the same frame, right after the other two
            default_dets.append(default(frame))
            default_ms.append(default.last_stats.total_ms)
            default_area.append(default.last_stats.area_processed)
            default_prop.append(default.last_stats.proposer_ms)
        if lower is not None:
            t0 = time.perf_counter()
            lower_dets.append(lower.predict([frame])[0])
            lower_ms.append((time.perf_counter() - t0) * 1e3)
        # The still: the first frame from ``still_frame`` on that is not a key frame (which would
        # show the whole frame processed); the first frame until then.
        if not still or (not still.get("final") and index >= still_frame and proposals.area_fraction < 0.9):
            still.update(frame=frame, dets=dets, base=base, proposals=proposals, index=index,
                         final=index >= still_frame)

    summary = run_stream(fast, cfg, progress=progress, on_frame=keep)
    n = summary["frames"]
    per = summary["per_frame"]
    base_ms, argos_ms = per["baseline_ms"][:n], per["argos_ms"][:n]
    label = "argos (auto: key frames + motion)"
    if cal is not None:
        rep = cal.report
        label = "argos, calibrated"
        summary["calibration"] = {"config": rep["chosen"]["params"]["config"], "start": 0,
                                  "frames": rep["frames"] + rep["warmup"], "scored_frames": rep["frames"],
                                  "seconds": rep["seconds"], "speedup": rep["chosen"]["speedup"],
                                  "agreement": rep["chosen"]["agreement"], "file": files["calibration"]}
    points = [{"method": "baseline", "params": {"img_size": img_size}, "agreement": 1.0, "map50_vs_baseline": 1.0,
               "fps": summary["baseline_fps"], "speedup": 1.0, "area": 1.0, "proposer_ms": 0.0},
              {"method": "argos", "params": {"config": "calibrated" if cal is not None else "argos default"},
               "agreement": summary["agreement"], "map50_vs_baseline": summary["map50_vs_baseline"],
               "fps": summary["fps"], "speedup": summary["speedup"], "area": summary["area_processed"],
               "proposer_ms": summary["latency_ms"]["proposer"]}]
    names = ["unwrapped yolov5n", label]
    if default is not None and n:
        d = measured_point("argos", {"config": "argos default"}, default_dets[:n], theirs[:n], default_ms[:n],
                           base_ms, default_area[:n], default_prop[:n]).as_dict()
        summary["default"] = {k: d[k] for k in ("fps", "speedup", "agreement", "map50_vs_baseline", "area")}
        points.append(d)
        names.append("argos (auto: key frames + motion)")
    if lower is not None and n:
        area = (lower_size / img_size) ** 2
        points.append(measured_point("resolution", {"img_size": lower_size}, lower_dets[:n], theirs[:n],
                                     lower_ms[:n], base_ms, [area] * n).as_dict())
        names.append(f"unwrapped yolov5n at {lower_size} px")
    for p in skip_points(theirs, base_ms, (2, 3, 4)):
        points.append(p.as_dict())
        names.append(f"skip: 1 frame in {p.params['every']}")
    rows = [{"method": name, **{k: p[k] for k in ("fps", "speedup", "agreement", "area")}}
            for name, p in zip(names, points)]
    summary["alternatives"] = rows[2:]
    Path(cfg.summary).write_text(json.dumps(summary, indent=2))

    files.update(video=cfg.out_video, summary=cfg.summary, detections=cfg.detections)
    classes = fast.adapter.names
    left = caption(draw_overlay(still["frame"], None, still["base"], classes), f"unwrapped yolov5n, frame {still['index']}")
    # argos's boxes in green, the unwrapped detector's thin red ones beneath: a miss shows red alone.
    right = caption(draw_overlay(still["frame"], still["proposals"], still["dets"], classes, baseline=still["base"]),
                    f"argos: processed area {still['proposals'].area_fraction:.2f} (dimmed: skipped)")
    side = np.concatenate([left, np.full((left.shape[0], 6, 3), 255, np.uint8), right], axis=1)
    files["side_by_side"] = str(out_dir / "demo_side_by_side.png")
    cv2.imwrite(files["side_by_side"], cv2.cvtColor(side, cv2.COLOR_RGB2BGR))
    files["timeline"] = str(out_dir / "demo_timeline.png")
    _plot_timeline(base_ms, argos_ms, per["area"][:n], files["timeline"])
    files["pareto"] = str(out_dir / "demo_pareto.png")
    first = calibrate_frames
    plot_pareto({"points": points}, files["pareto"],
                title=f"{Path(VIDEO).name}, frames {first}-{first + n - 1}, yolov5n @ {img_size}, {threads} threads")
    return {"summary": summary, "rows": rows, "files": files}


def _plot_timeline(base_ms: List[float], argos_ms: List[float], area: List[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True, dpi=110)
    a.plot(base_ms, lw=0.7, color="tab:gray", label="unwrapped")
    a.plot(argos_ms, lw=0.7, color="tab:red", label="argos (proposer included)")
    a.set_ylabel("ms / frame")
    a.set_yscale("log")
    a.legend(fontsize=7, loc="upper right")
    a.grid(alpha=0.3)
    b.plot(area, lw=0.7, color="tab:blue")
    b.set_ylabel("area processed")
    b.set_xlabel("frame")
    b.set_ylim(0, 1.05)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_rows(rows: List[Dict[str, Any]], summary: Dict[str, Any], threads: int, img_size: int) -> str:
    """The demo's printed table; with a calibration, its choice and cost first."""
    frames, start = summary["frames"], summary.get("start", 0)
    lines = []
    cal = summary.get("calibration")
    if cal:
        lines.append(f"calibration on frames 0-{cal['frames'] - 1} (no labels, {cal['seconds']:.0f} s): chose "
                     f"{cal['config']}, {cal['speedup']:.2f}x at agreement {cal['agreement']:.3f} there")
    lines += [f"PETS 2009 S2L1 (480x360), frames {start}-{start + frames - 1}"
              + (" (held out from the calibration)" if cal else "") + f", yolov5n @ {img_size}, {threads} threads; "
              "agreement = share of the unwrapped detections (score >= 0.25) reproduced at IoU 0.5",
              f"{'':46s} {'fps':>6s} {'speedup':>8s} {'agreement':>10s} {'area':>6s}"]
    for r in rows:
        lines.append(f"{r['method']:46s} {r['fps']:6.1f} {r['speedup']:7.2f}x {r['agreement']:10.3f} {r['area']:6.3f}")
    if cal:
        lines.append(f"argos, calibrated = {cal['config']}")
    return "\n".join(lines)
