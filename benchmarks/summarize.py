"""Markdown table of ``argos bench`` JSON files: ``python benchmarks/summarize.py outputs/bench/*.json``."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def run_speed(r: dict) -> str:
    """With key frames (a video proposer), also the whole-run (mean) speedup, which counts them."""
    if r["argos"].get("teacher_fraction") and "speedup_mean" in r:
        return f" ({r['speedup_mean']:.2f}x run)"
    return ""


def row(path: Path) -> str:
    r = json.loads(path.read_text())
    c, b, a = r["config"], r["baseline"], r["argos"]
    model = Path(str(c.get("weights") or c.get("cfg"))).stem
    data = "PETS" if c.get("video") else "COCO"
    lat = a["latency_ms"]
    return (
        f"| {path.stem} | {data} {r['images']} | {model} | {c['proposer']} | {c['executor']} "
        f"| {a['area_processed']:.3f} | {a['compute_fraction']:.3f} | {a.get('teacher_fraction', 0):.3f} "
        f"| {b['map50']:.3f} / {a['map50']:.3f} | {a['regions_detected']:.3f} "
        f"| {b['latency_ms']['median']:.1f} | {lat['median']:.1f} ({lat['proposer']:.1f} / {lat['detector']:.1f} / {lat['overhead']:.1f}) "
        f"| **{r['speedup']:.2f}x**{run_speed(r)} | {r['agreement']['recall_vs_baseline@0.5']:.3f} |"
    )


def main(paths) -> None:
    print("| run | data, frames | model | proposer | executor | area | compute | teacher | mAP50 base / argos "
          "| regions det. | base ms | argos ms (prop / det / over) | speedup | agreement |")
    print("|" + "---|" * 14)
    for p in paths:
        print(row(Path(p)))


if __name__ == "__main__":
    main(sys.argv[1:])
