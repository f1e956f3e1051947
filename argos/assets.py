"""Where argos finds data and weights: ``$ARGOS_ASSETS``, else a ``shared/`` folder beside the checkout."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["assets_dir", "asset_path", "AssetMissing"]

#: Public sources, for users who are online and want to fetch what ``../shared`` holds here.
SOURCES = {
    "weights/yolov5n.pt": "https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5n.pt",
    "data/coco128": "https://ultralytics.com/assets/coco128.zip (images) + COCO train2017 instances JSON",
}


class AssetMissing(FileNotFoundError):
    """An asset argos needs is not on this machine."""


def assets_dir() -> Optional[Path]:
    """The assets root, or None when none is found.

    Order: ``$ARGOS_ASSETS``; ``../shared`` from the working directory; ``shared`` beside the
    source checkout (``<repo>/../shared``).
    """
    env = os.environ.get("ARGOS_ASSETS")
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd().parent / "shared", Path(__file__).resolve().parents[2] / "shared"):
        if candidate.is_dir():
            return candidate
    return None


def asset_path(relative: str) -> Path:
    """Absolute path of an asset, e.g. ``"weights/yolov5n.pt"``; raises :class:`AssetMissing` with a hint."""
    root = assets_dir()
    path = None if root is None else root / relative
    if path is None or not path.exists():
        where = "no assets folder found" if root is None else f"not found under {root}"
        hint = SOURCES.get(relative, "")
        raise AssetMissing(
            f"asset {relative!r}: {where}. Set ARGOS_ASSETS to a folder that holds it"
            + (f" (public source: {hint})" if hint else "")
        )
    return path
