"""Command line: ``argos bench``, ``argos run``, ``argos demo``, ``argos list``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from argos.tools.options import detector_for, parse_kv  # noqa: F401  (parse_kv also importable from here, as before)

__all__ = ["main"]


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (a COCO, Cityscapes or CityPersons dataset, or a video)")
    src.add_argument("--dataset", choices=("coco", "cityscapes", "citypersons"), default="coco",
                     help="format of --images/--annotations (cityscapes: ROOT/leftImg8bit/SPLIT, annotations "
                          "ROOT/gtFine/SPLIT, found on their own; citypersons: a COCO-style JSON or "
                          "ROOT/gtBboxCityPersons/SPLIT)")
    src.add_argument("--subset", choices=("reasonable", "small", "heavy", "all"), default=None,
                     help="CityPersons evaluation subset (others become ignore regions)")
    src.add_argument("--images", help="folder of images (with --annotations)")
    src.add_argument("--annotations", help="COCO instances JSON (or see --dataset)")
    src.add_argument("--video", help="video file or image folder; ground truth = the unwrapped detector's output")
    src.add_argument("--teacher", help="per-frame boxes JSON for the oracle proposer on --video")
    src.add_argument("--teacher-scale", type=float, default=1.0, help="scale of teacher boxes to video pixels")
    src.add_argument("--teacher-score", type=float, default=0.5, help="keep teacher boxes with at least this score")
    src.add_argument("--stride", type=positive_int, default=1, help="every N-th video frame")
    src.add_argument("--start", type=nonnegative_int, default=0, help="first video frame (e.g. a held-out block)")
    src.add_argument("--gt-score", type=float, default=0.25,
                     help="on video: full-frame detections with this score are the ground truth")
    p.add_argument("--detector", default="yolov5", help="adapter name (default: yolov5)")
    p.add_argument("--weights", default=None, help="detector checkpoint (.pt)")
    p.add_argument("--cfg", default=None, help="ultralytics model yaml instead of weights (random init, timing only)")
    p.add_argument("--proposer", default="oracle")
    p.add_argument("--executor", default="masked")
    p.add_argument("--img-size", type=positive_int, default=640)
    p.add_argument("--conf", type=float, default=0.001, help="detector score threshold")
    p.add_argument("--iou", type=float, default=0.65, help="NMS IoU threshold")
    p.add_argument("--limit", type=positive_int, default=None, help="first N images / frames only")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (fix it for stable timings)")
    p.add_argument("--warmup", type=nonnegative_int, default=2)
    p.add_argument("--classes", nargs="+", default=None, help="class names that count (foreground, scoring)")
    p.add_argument("--proposer-opt", nargs="+", metavar="KEY=VALUE", help="proposer options, e.g. dilation=8")
    p.add_argument("--executor-opt", nargs="+", metavar="KEY=VALUE", help="executor options")
    p.add_argument("--detector-opt", nargs="+", metavar="KEY=VALUE", help="adapter options, e.g. depth=101")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--no-progress", action="store_true")


def _config(args):
    from argos.tools.bench import BenchConfig

    if args.video is None and (args.images is None or (args.annotations is None and args.dataset != "cityscapes")):
        raise ValueError("give --images and --annotations, or --video")
    return BenchConfig(
        dataset=args.dataset, subset=args.subset,
        images=args.images, annotations=args.annotations, video=args.video, teacher=args.teacher,
        teacher_scale=args.teacher_scale, teacher_score=args.teacher_score, stride=args.stride, start=args.start,
        gt_score=args.gt_score, detector=detector_for(args.detector, args.weights), weights=args.weights, cfg=args.cfg,
        proposer=args.proposer, executor=args.executor, img_size=args.img_size, conf=args.conf, iou=args.iou,
        limit=args.limit, threads=args.threads, warmup=args.warmup, classes=args.classes,
        proposer_kwargs=parse_kv(args.proposer_opt), executor_kwargs=parse_kv(args.executor_opt),
        detector_kwargs=parse_kv(args.detector_opt),
    )


def cmd_bench(args) -> int:
    from argos.tools.bench import format_table, run_bench, write_json
    from argos.tools.outputs import check_outputs

    cfg = _config(args)
    check_outputs([cfg.video, cfg.images, cfg.annotations, cfg.teacher, cfg.weights], [args.json])
    result = run_bench(cfg, progress=not args.no_progress)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args) -> int:
    from argos.assets import AssetMissing

    if args.coco:
        return _demo_coco(args)
    from argos.tools.demo import format_rows, run_demo

    try:
        result = run_demo(args.out, limit=args.limit, threads=args.threads, progress=not args.no_progress,
                          calibrate_frames=args.calibrate_frames)
    except AssetMissing as err:
        print(f"argos demo: {err}", file=sys.stderr)
        return 2
    s = result["summary"]
    print(format_rows(result["rows"], s, args.threads, 640))
    for what, path in result["files"].items():
        print(f"wrote {path}")
    return 130 if s["interrupted"] else 0


def _demo_coco(args) -> int:
    from argos.assets import AssetMissing, asset_path
    from argos.tools.bench import BenchConfig, format_table, run_bench, write_json
    from argos.viz import draw_overlay, save_grid

    try:
        images = asset_path("data/coco128/images/train2017")
        annotations = asset_path("data/coco128/annotations/instances_train2017.json")
        weights = asset_path("weights/yolov5n.pt")
    except AssetMissing as err:
        print(f"argos demo: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) / "demo_coco"
    cfg = BenchConfig(images=str(images), annotations=str(annotations), weights=str(weights),
                      proposer="oracle", executor="masked", limit=args.limit or 32, threads=args.threads,
                      proposer_kwargs={"dilation": args.dilation})
    result = run_bench(cfg, progress=not args.no_progress, keep=args.overlays)
    print(format_table(result))
    write_json(result, str(out / "bench.json"))
    samples, names = result["_samples"], result["_names"]
    tiles = [draw_overlay(s["image"], s["proposals"], s["argos"], names, baseline=s["baseline"]) for s in samples]
    if tiles:
        png = save_grid(tiles, str(out / "overlay.png"))
        print(f"wrote {out / 'bench.json'} and {png} (dimmed: not processed; blue: proposals; green: argos; red: unwrapped detector)")
    return 0


def cmd_run(args) -> int:
    from argos.tools.options import adapter_kwargs_for
    from argos.tools.outputs import check_outputs
    from argos.tools.run import RunConfig, run_stream
    from argos.wrap import wrap

    sources = args.source
    if args.ray is not None:
        from argos.tools.ray_streams import looks_like_ray_address

        if not looks_like_ray_address(args.ray):  # `--ray SRC1 SRC2`: SRC1 is a source, not an address
            sources.insert(0, args.ray)
            args.ray = "local"
        if args.out_dir is None:
            raise ValueError("--ray writes per-stream outputs: give --out-dir DIR")
        if args.out is not None:
            raise ValueError("--ray writes no videos (--out); run without --ray for annotated videos")
    multi = len(sources) > 1 or args.out_dir is not None
    if multi:
        from argos.tools.streams import stream_paths

        if args.out_dir is None:
            raise ValueError(f"{len(sources)} sources: give --out-dir DIR for their per-stream outputs")
        if args.start:
            raise ValueError("--start is for one source; several streams start at their first frame")
        if args.detections or args.json or (args.out not in (None, PER_STREAM)):
            raise ValueError("with several sources, outputs go under --out-dir (DIR/<stem>.jsonl, .json, and .mp4 "
                             "with a bare --out); --detections, --json and --out PATH are for one source")
        paths = stream_paths(sources, args.out_dir)  # two sources with one stem: refused here
        check_outputs(sources, [p[k] for p in paths for k in ("jsonl", "json")], [p["mp4"] for p in paths]
                      if args.out == PER_STREAM else [])
    else:
        if args.out == PER_STREAM:
            raise ValueError("--out needs a path (an .mp4 or .avi) for one source")
        args.source = sources[0]
        detections = args.detections
        if detections is None and args.json:
            detections = str(Path(args.json).with_suffix(".jsonl"))
        # Before the model loads: a bad output path must not cost a run, or overwrite the input.
        check_outputs([args.source], [detections, args.json], [args.out])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.detector = detector_for(args.detector, args.weights)
    calibration = None
    if args.calibration:
        from argos.calibration import load_calibration

        calibration = load_calibration(args.calibration)
        if args.img_size is None:
            args.img_size = calibration.img_size
        from argos.data.video import VideoReader

        for src in sources:  # before any output is opened: a wrong camera must not cost earlier results
            if not str(src).isdigit():
                for _, frame in VideoReader(src, limit=1):
                    calibration.check_frame(frame.shape)
    if args.img_size == 0:
        from argos.tools.options import native_img_size

        args.img_size = native_img_size(sources[0])
        print(f"--img-size 0: native scale, input size {args.img_size} (from {sources[0]})", file=sys.stderr)
    args.img_size = args.img_size or 640
    adapter_kwargs = adapter_kwargs_for(args.detector, args.img_size, conf=args.conf, weights=args.weights,
                                        cfg=args.cfg, extra=parse_kv(args.detector_opt))
    build = dict(detector=args.detector, proposer=args.proposer, executor=args.executor,
                 proposer_kwargs=parse_kv(args.proposer_opt), executor_kwargs=parse_kv(args.executor_opt),
                 calibration=calibration, **adapter_kwargs)
    fast = wrap(**build)  # here too under --ray: a bad name or weights file fails before Ray starts
    if args.ray is not None:
        from argos.tools.ray_streams import run_streams_ray

        del fast
        s = run_streams_ray(build, sources, args.out_dir, address=args.ray, workers=args.ray_workers,
                            threads=args.threads or 1, compare=args.compare, stride=args.stride, limit=args.limit,
                            progress=not args.no_progress)
        print(f"Ray: {s['workers']} workers, {s['restarts']} restarts, start-up {s['startup_s']:.1f} s | "
              f"{s['fps_wall']:.1f} fps wall")
        return _print_many(s, args)
    if multi:
        return _run_many(fast, args)
    cfg = RunConfig(source=args.source, start=args.start, out_video=args.out, detections=detections,
                    summary=args.json, compare=args.compare, stride=args.stride, limit=args.limit,
                    classes=args.classes)
    summary = run_stream(fast, cfg, progress=not args.no_progress)
    line = (f"{summary['frames']} frames | {summary['fps']:.1f} fps | teacher fraction {summary['teacher_fraction']:.3f}"
            f" | area processed {summary['area_processed']:.3f} | median ms {summary['latency_ms']['median']:.1f}"
            f" (proposer {summary['latency_ms']['proposer']:.1f}, detector {summary['latency_ms']['detector']:.1f})")
    print(line + f" | RSS {summary['memory_mb']['rss_first_frame']:.0f} -> {summary['memory_mb']['rss_end']:.0f} MiB")
    if args.compare and "speedup" in summary:
        quality = (f"agreement {summary['agreement']:.3f} | mAP50 vs baseline {summary['map50_vs_baseline']:.3f}"
                   if summary["reference_detections"] else
                   "agreement n/a: the unwrapped detector found nothing at score >= 0.25 in these frames")
        print(f"baseline {summary['baseline_fps']:.1f} fps | speedup {summary['speedup']:.2f}x (throughput; "
              f"{summary['speedup_median']:.2f}x median frame) | {quality}")
    if "decode_error" in summary:
        print(f"warning: {summary['decode_error']}; results kept for the {summary['frames']} frames that decoded")
    for change in summary.get("size_changes", []):
        print(f"warning: {change}; the proposer started afresh there", file=sys.stderr)
    for path in (detections, args.json, args.out):
        if path:
            print(f"wrote {path}")
    if summary["interrupted"]:
        print(f"argos run: {summary['ended']} after {summary['frames']} frames; the outputs above hold them",
              file=sys.stderr)
        return 143 if "SIGTERM" in summary["ended"] else 130
    return 0


PER_STREAM = "<per stream>"  # a bare --out with several sources: DIR/<stem>.mp4 each


def _run_many(fast, args) -> int:
    from argos.tools.streams import run_streams

    s = run_streams(fast, args.source, args.out_dir, compare=args.compare, stride=args.stride, limit=args.limit,
                    videos=args.out == PER_STREAM, progress=not args.no_progress)
    return _print_many(s, args)


def _print_many(s, args) -> int:
    ticks = f" in {s['ticks']} ticks" if "ticks" in s else ""
    print(f"{s['streams']} streams | {s['frames']} frames{ticks} | {s['fps_total']:.1f} fps total"
          + (f" | baseline (batched) {s['baseline_fps_total']:.1f} fps | speedup {s['speedup']:.2f}x"
             if "speedup" in s else ""))
    for src, st in s["per_stream"].items():
        extra = f" | agreement {st['agreement']:.3f}" if "agreement" in st else ""
        if "error" in st:
            print(f"  {src}: {st['frames']} frames; error: {st['error']}", file=sys.stderr)
        else:
            print(f"  {src}: {st['frames']} frames | area {st['area_processed']:.3f} | key frames "
                  f"{st['teacher_fraction']:.3f}{extra}")
    print(f"wrote {args.out_dir}/summary.json and a .jsonl and .json per stream")
    if s["interrupted"]:
        return 143 if "SIGTERM" in s["ended"] else 130
    return 0


def cmd_pareto(args) -> int:
    from argos.tools.pareto import main as pareto_main

    return pareto_main(args)


def cmd_calibrate(args) -> int:
    from argos.tools.calibrate import main as calibrate_main

    return calibrate_main(args)


def cmd_list(args) -> int:
    import argos

    print("proposers:", ", ".join(argos.list_proposers()))
    print("executors:", ", ".join(argos.list_executors()))
    print("adapters: ", ", ".join(argos.list_adapters()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argos", description="Run detectors only where objects may be.")
    sub = parser.add_subparsers(dest="command", required=True)
    # These two hand their arguments to the QU-Net modules' own parsers (see their --help).
    p = sub.add_parser("train", help="train a proposer: argos train qunet --help", add_help=False)
    p.add_argument("model", choices=["qunet"])
    p.set_defaults(func=_forward("argos.tools.qunet.train"))
    p = sub.add_parser("bench-proposer", help="regions detected, area, GFLOPs and latency of a proposer", add_help=False)
    p.set_defaults(func=_forward("argos.tools.qunet.bench"))
    p = sub.add_parser("export", help="export to ONNX: argos export qunet --help, argos export detector --help",
                       add_help=False)
    p.add_argument("model", choices=["qunet", "detector"])
    p.set_defaults(func=_export)
    p = sub.add_parser("bench", help="baseline vs argos, interleaved, on a COCO-format dataset")
    _add_bench_args(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="the bundled street video through yolov5n, argos beside the unwrapped detector "
                                    "and frame skipping (assets: ARGOS_ASSETS, default ../shared)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="frames of the run, after the calibration's (default: the rest of the video; --coco: 32)")
    p.add_argument("--calibrate-frames", type=nonnegative_int, default=150,
                   help="first frames to calibrate on; the run starts after them (0: no calibration, the default "
                        "configuration from frame 0)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--out", default="outputs", help="output folder (default: outputs/)")
    p.add_argument("--coco", action="store_true", help="the earlier demo: oracle + masked on the COCO photos")
    p.add_argument("--dilation", default=8, type=int, help="--coco: oracle margin in pixels")
    p.add_argument("--overlays", type=nonnegative_int, default=4, help="--coco: overlay tiles")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("run", help="run a wrapped detector over a video, image folder or camera index")
    p.add_argument("source", nargs="+", help="video file, image folder, or camera index (0, 1, ...); several "
                                             "run together (with --out-dir), their crops sharing the detector's batches")
    p.add_argument("--out-dir", default=None, help="several sources: DIR/<stem>.jsonl and .json per stream, "
                                                  "DIR/summary.json")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="place the streams on Ray workers: a local instance, or the cluster at ADDRESS "
                        "(auto, ray://host:port); a worker that dies has its streams restarted")
    p.add_argument("--ray-workers", type=positive_int, default=None,
                   help="--ray: workers to place (default: the cluster's CPUs / --threads, at most one per source)")
    p.add_argument("--detector", default="yolov5")
    p.add_argument("--weights", default=None)
    p.add_argument("--cfg", default=None, help="ultralytics model yaml (random init, timing only)")
    p.add_argument("--proposer", default="auto", help="registered name (default auto: temporal)")
    p.add_argument("--executor", default="auto", help="registered name (default auto: packed_crops)")
    p.add_argument("--img-size", type=nonnegative_int, default=None,
                   help="detector input size (default: the calibration's, else 640); 0: the first frame's "
                        "long side rounded up to 32 (native scale)")
    p.add_argument("--calibration", default=None, metavar="CAM.json",
                   help="a camera's calibration (argos calibrate): its configuration replaces auto")
    p.add_argument("--conf", type=float, default=0.25, help="detector score threshold")
    p.add_argument("--proposer-opt", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--executor-opt", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--detector-opt", nargs="+", metavar="KEY=VALUE", help="adapter options, e.g. depth=101")
    p.add_argument("--out", nargs="?", const=PER_STREAM, default=None,
                   help="annotated video (.mp4 or .avi); with --out-dir, a bare --out writes DIR/<stem>.mp4 per stream")
    p.add_argument("--detections", default=None, help="per-frame detections, JSON lines (default: next to --json)")
    p.add_argument("--json", default=None, help="summary JSON")
    p.add_argument("--compare", action="store_true", help="also run the unwrapped detector on every frame")
    p.add_argument("--classes", nargs="+", default=None, help="classes scored by --compare")
    p.add_argument("--stride", type=positive_int, default=1)
    p.add_argument("--start", type=nonnegative_int, default=0,
                   help="first frame of one source (e.g. after the frames a calibration used)")
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("pareto", help="argos beside frame skipping, lower input sizes and a smaller model, on one video")
    p.add_argument("source", help="video file or image folder")
    p.add_argument("--weights", required=True, help="detector checkpoint (.pt), or an exported .onnx")
    p.add_argument("--img-size", type=nonnegative_int, default=640,
                   help="reference input size (default: 640; 0: the frame's long side rounded up to 32)")
    p.add_argument("--small-weights", default=None, help="a smaller detector with the same classes")
    p.add_argument("--detector-opt", nargs="+", metavar="KEY=VALUE",
                   help="adapter options for every model of the run, e.g. backend=openvino for .onnx weights")
    p.add_argument("--sizes", type=positive_int, nargs="*", default=None,
                   help="lower input sizes (default: 512 416 320 for 640; 960 640 for 1280)")
    p.add_argument("--skips", type=_int_at_least(2), nargs="*", default=[2, 3, 4], help="frame-skip intervals")
    p.add_argument("--argos", nargs="*", default=None, metavar="PROPOSER+EXECUTOR[:p.k=v,e.k=v]",
                   help="argos configurations (default: the auto configuration and two variants)")
    p.add_argument("--calibration", default=None, metavar="CAM.json",
                   help="also run the configuration a calibration chose (argos calibrate), as an argos point")
    p.add_argument("--conf", type=float, default=0.25, help="detector score threshold")
    p.add_argument("--start", type=nonnegative_int, default=0, help="first frame (e.g. a held-out block)")
    p.add_argument("--limit", type=positive_int, default=None, help="frames to use")
    p.add_argument("--warmup", type=nonnegative_int, default=2, help="frames run but not timed or scored")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--json", default=None, help="points JSON (the markdown table goes next to it, .md)")
    p.add_argument("--plot", default=None, help="PNG: agreement against speedup")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pareto)
    p = sub.add_parser("calibrate", help="choose a camera's configuration on its earlier footage (no labels)")
    p.add_argument("source", help="video file or image folder from the camera")
    p.add_argument("--weights", required=True, help="detector checkpoint (.pt), or an exported .onnx")
    p.add_argument("--img-size", type=nonnegative_int, default=640,
                   help="input size (default: 640; 0: the frame's long side rounded up to 32)")
    p.add_argument("--detector-opt", nargs="+", metavar="KEY=VALUE", help="adapter options, e.g. backend=openvino")
    p.add_argument("--conf", type=float, default=0.25, help="detector score threshold")
    p.add_argument("--target", type=float, default=0.97, help="agreement the choice must reach (default 0.97)")
    p.add_argument("--grid", nargs="*", default=None, metavar="PROPOSER+EXECUTOR[:p.k=v,e.k=v]",
                   help="configurations to try (default: argos.tools.calibrate.GRID)")
    p.add_argument("--start", type=nonnegative_int, default=0, help="first frame")
    p.add_argument("--limit", type=positive_int, default=300, help="frames to use at most (default 300)")
    p.add_argument("--warmup", type=nonnegative_int, default=2, help="frames run but not timed or scored")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--out", required=True, help="calibration file to write (CAM.json; the table goes next to it, .md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("list", help="registered proposers, executors and adapters")
    p.set_defaults(func=cmd_list)
    return parser


def _export(args) -> int:
    module = {"qunet": "argos.tools.qunet.export", "detector": "argos.tools.export_detector"}[args.model]
    return _forward(module)(args)


def _forward(module: str):
    def run(args) -> int:
        import importlib

        return int(importlib.import_module(module).main(args.rest) or 0)

    return run


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    # FFmpeg's own log lines ("moov atom not found") would come before argos's clearer message.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    args, rest = build_parser().parse_known_args(argv)
    if args.command not in ("train", "bench-proposer", "export") and rest:
        build_parser().parse_args(argv)  # reports the unknown arguments the usual way
    args.rest = rest
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        # OSError: missing, unreadable or unwritable files (FileNotFoundError, PermissionError, ...).
        print(f"argos {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"argos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
