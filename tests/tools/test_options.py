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


def test_native_img_size_rounds_the_first_frames_long_side_up_to_the_stride(tmp_path):
    import cv2
    import numpy as np

    from argos.tools.options import native_img_size

    for (h, w), want in (((120, 160), 160), ((100, 150), 160), ((720, 1280), 1280), ((470, 300), 480)):
        path = tmp_path / f"{h}x{w}.avi"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
        vw.write(np.full((h, w, 3), 100, np.uint8))
        vw.release()
        assert native_img_size(path) == want
    assert native_img_size(tmp_path / "120x160.avi", stride=64) == 192


def test_run_with_img_size_0_runs_at_native_scale(tmp_path, yolov5n_weights, capsys):
    import json

    import cv2
    import numpy as np

    from argos.cli import main

    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (200, 120))
    for k in range(3):
        vw.write(np.full((120, 200, 3), 90 + 10 * k, np.uint8))
    vw.release()
    out = tmp_path / "s.json"
    assert main(["run", str(path), "--weights", str(yolov5n_weights), "--img-size", "0", "--json", str(out),
                 "--no-progress"]) == 0
    assert "native scale, input size 224" in capsys.readouterr().err
    assert json.loads(out.read_text())["frames"] == 3
