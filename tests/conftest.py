"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from argos.assets import assets_dir

# One intra-op thread for the whole suite: the models here are tiny, so more threads mostly add
# synchronisation, and on a shared 2-core machine they oversubscribe it. Benchmarks set their own.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def assets() -> Path:
    """Assets root (``$ARGOS_ASSETS``, else ``../shared``); skips the test when absent."""
    root = assets_dir()
    if root is None or not root.is_dir():
        pytest.skip("assets not found: set ARGOS_ASSETS to the folder holding data/ and weights/ (e.g. ../shared)")
    return root


@pytest.fixture(scope="session")
def coco128(assets: Path):
    """The 128 COCO train2017 images with their original instances JSON, as a CocoDataset."""
    from argos.data import CocoDataset

    images = assets / "data/coco128/images/train2017"
    annotations = assets / "data/coco128/annotations/instances_train2017.json"
    if not images.is_dir() or not annotations.is_file():
        pytest.skip(f"coco128 not found under {assets / 'data/coco128'} (needs images/train2017 and "
                    "annotations/instances_train2017.json)")
    return CocoDataset(images, annotations)


@pytest.fixture(scope="session")
def yolov5n_weights(assets: Path) -> Path:
    """The original YOLOv5n COCO checkpoint from the assets."""
    path = assets / "weights/yolov5n.pt"
    if not path.is_file():
        pytest.skip(f"yolov5n checkpoint not found at {path}")
    return path


@pytest.fixture(scope="session")
def yolov5n(yolov5n_weights: Path):
    """YOLOv5n adapter at 640, conf 0.001, IoU 0.65 (the evaluation setting)."""
    from argos.adapters.yolov5 import YOLOv5Adapter

    return YOLOv5Adapter(weights=str(yolov5n_weights))


@pytest.fixture(scope="module")
def pspnet18():
    """A small random-init PSPNet (ResNet-18, 128 px) with non-trivial BatchNorm statistics; one
    per test module, since executors may convert it in place."""
    from argos.adapters.pspnet import PSPNetAdapter
    from argos.testing import randomize_bn

    torch.manual_seed(0)
    adapter = PSPNetAdapter(depth=18, img_size=128)
    randomize_bn(adapter.module)
    return adapter
