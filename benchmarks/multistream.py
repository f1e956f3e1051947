"""Many cameras: separate argos streams, the packed multi-stream runner, and the unwrapped detector batched.

For n = 1, 2, 4, 8 streams cut from the shared videos at offset starts (PETS and the intel
clip, alternately), every tick runs, in rotating order:

- **separate**: one ``Wrapped`` per stream (``for_stream`` copies), called one after another;
- **packed**: :class:`argos.MultiStream`: one proposer state per stream, one executor call per
  tick that packs every stream's crops onto shared canvases;
- **unwrapped, batched**: ``adapter.predict`` on the tick's frames, one call per frame size.

Frames are decoded before timing. Total frames/s is frames over the summed tick times (key
frames included). Agreement is per stream against the batched unwrapped detector (recall at
IoU 0.5, score >= 0.25), over all streams' frames together and for the lowest stream (a
stream with few objects, such as the intel clip's empty road, makes the lowest one noisy).

    python benchmarks/multistream.py --weights ../shared/weights/yolov5n.pt --ticks 60 --threads 2 \\
        --json benchmarks/multistream.json --plot benchmarks/multistream.png
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch


def _clips(assets: Path, n: int, ticks: int, offset: int):
    from argos.data.video import VideoReader

    videos = [assets / "data/video/pets2009_s2l1_480x360.avi", assets / "data/video/intel_car_detection_768x432.mp4"]
    clips, names = [], []
    for k in range(n):
        video, start = videos[k % 2], offset * (k // 2)
        clips.append([f for _, f in VideoReader(video, start=start, limit=ticks)])
        names.append(f"{video.stem}@{start}")
    return clips, names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--assets", default=None, help="folder with data/video (default: ../shared)")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--ticks", type=int, default=60)
    p.add_argument("--offset", type=int, default=80, help="frames between the starts of clips of one video "
                   "(the intel clip has 377 frames: 4 starts x 80 + ticks must fit)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args(argv)

    import argos
    from argos.assets import assets_dir
    from argos.metrics.detection import recall_vs_reference
    from argos.tools.streams import _baseline
    from tqdm import tqdm

    torch.set_num_threads(a.threads)
    assets = Path(a.assets) if a.assets else assets_dir()
    adapter = argos.build_adapter(a.weights, img_size=a.img_size, conf=0.25)
    rows = []
    for n in a.streams:
        clips, names = _clips(assets, n, a.ticks + a.warmup, a.offset)
        if min(len(c) for c in clips) < a.ticks + a.warmup:
            raise SystemExit(f"a clip is shorter than {a.ticks + a.warmup} frames: lower --offset or --ticks")
        base = argos.wrap(adapter, proposer="auto", executor="auto")
        separate = [base] + [base.for_stream() for _ in range(n - 1)]
        packed = argos.MultiStream(argos.wrap(adapter, proposer="auto", executor="auto"), n)
        ms: Dict[str, List[float]] = {"separate": [], "packed": [], "unwrapped": []}
        dets: Dict[str, List[List]] = {k: [[] for _ in range(n)] for k in ms}
        ticks = min(len(c) for c in clips)
        for t in tqdm(range(ticks), desc=f"{n} streams"):
            frames = {k: clips[k][t] for k in range(n)}
            order = list(ms)[t % 3:] + list(ms)[: t % 3]
            for method in order:
                t0 = time.perf_counter()
                if method == "separate":
                    out = {k: separate[k](frames[k]) for k in range(n)}
                elif method == "packed":
                    out = packed.step(frames)
                else:
                    out = _baseline(adapter, frames)
                dt = (time.perf_counter() - t0) * 1e3
                if t >= a.warmup:
                    ms[method].append(dt)
                    for k in range(n):
                        dets[method][k].append(out[k])
        frames_total = n * len(ms["packed"])
        row = {"streams": n, "clips": names, "ticks": len(ms["packed"])}
        for method in ms:
            row[f"{method}_fps"] = 1e3 * frames_total / sum(ms[method])
        for method in ("separate", "packed"):
            agree = [recall_vs_reference(dets[method][k], dets["unwrapped"][k], 0.5, 0.25) for k in range(n)]
            pooled = recall_vs_reference(sum(dets[method], []), sum(dets["unwrapped"], []), 0.5, 0.25)
            row[f"{method}_agreement_min"], row[f"{method}_agreement_pooled"] = min(agree), pooled
            row[f"{method}_agreement_per_stream"] = agree
        row["references_per_stream"] = [sum(int((d.scores >= 0.25).sum()) for d in dets["unwrapped"][k])
                                        for k in range(n)]
        row["packed_vs_separate"] = row["packed_fps"] / row["separate_fps"]
        row["packed_vs_unwrapped"] = row["packed_fps"] / row["unwrapped_fps"]
        rows.append(row)
        print(json.dumps(row))
    print(f"\nyolov5n at {a.img_size}, {a.threads} threads, {a.ticks} ticks after {a.warmup} warm-up\n")
    print("| streams | unwrapped batched fps | separate argos fps | packed fps | packed / separate | packed / unwrapped "
          "| agreement separate (all frames / lowest stream) | agreement packed (all frames / lowest stream) |")
    print("|" + "---|" * 8)
    for r in rows:
        print(f"| {r['streams']} | {r['unwrapped_fps']:.1f} | {r['separate_fps']:.1f} | {r['packed_fps']:.1f} | "
              f"{r['packed_vs_separate']:.2f}x | {r['packed_vs_unwrapped']:.2f}x | "
              f"{r['separate_agreement_pooled']:.3f} / {r['separate_agreement_min']:.3f} | "
              f"{r['packed_agreement_pooled']:.3f} / {r['packed_agreement_min']:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"img_size": a.img_size, "threads": a.threads, "rows": rows}, indent=2))
        print(f"wrote {a.json}")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["streams"] for r in rows]
        for method, style in (("unwrapped", "k--o"), ("separate", "b-s"), ("packed", "g-^")):
            ax.plot(xs, [r[f"{method}_fps"] for r in rows], style, label={"unwrapped": "unwrapped, batched",
                                                                         "separate": "argos, one Wrapped per stream",
                                                                         "packed": "argos, packed multi-stream"}[method])
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("streams")
        ax.set_ylabel("total frames / s")
        ax.set_title(f"yolov5n at {a.img_size}, {a.threads} CPU threads")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
