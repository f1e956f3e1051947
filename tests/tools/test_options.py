"""tools.options.adapter_kwargs_for: which CLI options reach which adapter."""
from __future__ import annotations

import pytest

from argos.tools.options import adapter_kwargs_for
from argos.registry import ADAPTERS


class _NoConf:
    """An adapter-like factory that takes only img_size and depth (like a segmentation model)."""

    def __init__(self, img_size: int = 640, depth: int = 50) -> None:
        self.img_size, self.depth = img_size, depth


@pytest.fixture
def no_conf_name():
    name = "_test_no_conf_adapter"
    ADAPTERS.register(name, _NoConf)
    yield name
    ADAPTERS._entries.pop(name)


def test_detector_gets_conf_iou_weights():
    kw = adapter_kwargs_for("yolov5", 320, conf=0.1, iou=0.5, weights="w.pt")
    assert kw == {"img_size": 320, "conf": 0.1, "iou": 0.5, "weights": "w.pt"}


def test_options_an_adapter_lacks(no_conf_name):
    # conf/iou are generic CLI defaults: they are left out for adapters without them...
    assert adapter_kwargs_for(no_conf_name, 256, conf=0.001, iou=0.65) == {"img_size": 256}
    # ...but a checkpoint the adapter cannot take is an error, not silently dropped.
    with pytest.raises(ValueError, match="takes no 'weights'"):
        adapter_kwargs_for(no_conf_name, 256, weights="w.pt")


def test_detector_opt_wins(no_conf_name):
    kw = adapter_kwargs_for(no_conf_name, 256, extra={"depth": 101, "img_size": 512})
    assert kw == {"img_size": 512, "depth": 101}
    assert ADAPTERS.build(no_conf_name, **kw).depth == 101
