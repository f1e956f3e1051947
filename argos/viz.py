"""Overlays: proposals shaded, detections drawn. Everything here returns/writes RGB uint8 images."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from argos.structures import Detections, RegionProposals

__all__ = ["draw_overlay", "save_grid"]

_PROPOSAL = (0, 200, 255)
_DETECTION = (40, 230, 60)
_BASELINE = (255, 80, 80)


def draw_overlay(
    image: np.ndarray,
    proposals: Optional[RegionProposals] = None,
    detections: Optional[Detections] = None,
    names: Optional[Dict[int, str]] = None,
    min_score: float = 0.25,
    baseline: Optional[Detections] = None,
) -> np.ndarray:
    """RGB image (H, W, 3) uint8 -> annotated copy.

    Inactive pixels are dimmed, proposal boxes thin light-blue outlines, argos detections green,
    and (optionally) baseline detections red and thin, so disagreements stand out.
    """
    out = image.copy()
    if proposals is not None:
        inactive = ~proposals.mask.numpy()
        out[inactive] = (out[inactive] * 0.35).astype(np.uint8)
        for x1, y1, x2, y2 in proposals.boxes.round().int().tolist():
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), _PROPOSAL, 1, cv2.LINE_AA)
    thick = max(1, round(max(image.shape[:2]) / 400))
    if baseline is not None:
        for (x1, y1, x2, y2), s in zip(baseline.boxes.round().int().tolist(), baseline.scores.tolist()):
            if s >= min_score:
                cv2.rectangle(out, (x1, y1), (x2, y2), _BASELINE, 1, cv2.LINE_AA)
    if detections is not None:
        for (x1, y1, x2, y2), s, c in zip(
            detections.boxes.round().int().tolist(), detections.scores.tolist(), detections.labels.tolist()
        ):
            if s < min_score:
                continue
            cv2.rectangle(out, (x1, y1), (x2, y2), _DETECTION, thick + 1, cv2.LINE_AA)
            text = f"{names.get(c, c) if names else c} {s:.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            y0 = max(th + 2, y1)
            cv2.rectangle(out, (x1, y0 - th - 3), (x1 + tw + 2, y0), _DETECTION, -1)
            cv2.putText(out, text, (x1 + 1, y0 - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8) with ``text`` in white on a dark strip along the top."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, w / 1400)
    thick = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    strip = min(h, th + base + 8)
    out[:strip] = (out[:strip] * 0.3).astype(np.uint8)
    cv2.putText(out, text, (6, strip - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def save_grid(images: Sequence[np.ndarray], path: str, height: int = 360, columns: int = 2) -> Path:
    """Tile RGB images (resized to a common height) into one PNG; returns its path."""
    if not images:
        raise ValueError("save_grid needs at least one image")
    tiles = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
