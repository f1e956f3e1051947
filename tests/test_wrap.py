import numpy as np
import pytest
import torch

import argos
from argos.adapters.base import Adapter


def test_wrap_by_name_single_and_batch(yolov5n_weights, coco128):
    fast = argos.wrap("yolov5", weights=str(yolov5n_weights), proposer="full", executor="masked")
    s = coco128[2]
    d = fast(s.image)
    assert isinstance(d, argos.Detections) and d.image_size == s.image.shape[:2]
    st = fast.last_stats
    assert st.images == 1 and st.area_processed == 1.0 and st.regions == 1
    assert st.gflops > 1.0 and st.total_ms >= st.detector_ms > 0 and st.proposer_ms >= 0
    out = fast([s.image, s.image])
    assert isinstance(out, list) and len(out) == 2 and fast.last_stats.images == 2


def test_wrap_with_oracle_targets(yolov5n, coco128):
    s = coco128[0]
    fast = argos.wrap(yolov5n, proposer="oracle", executor="masked", proposer_kwargs={"dilation": 4})
    d = fast(s.image, targets={"boxes": s.boxes})
    assert 0 < fast.last_stats.area_processed < 1
    assert len(d) > 0
    with pytest.raises(ValueError, match="targets"):
        fast(s.image)


def test_bgr_frames_with_channel_order(yolov5n, coco128):
    s = coco128[3]
    rgb = argos.wrap(yolov5n)(s.image)
    bgr = argos.wrap(yolov5n, channel_order="bgr")(np.ascontiguousarray(s.image[:, :, ::-1]))
    assert torch.equal(rgb.labels, bgr.labels) and torch.allclose(rgb.boxes, bgr.boxes)


def test_wrap_accepts_ultralytics_yolo_object():
    from ultralytics import YOLO

    fast = argos.wrap(YOLO("yolov5nu.yaml"), proposer="full", img_size=320)
    assert isinstance(fast.adapter, Adapter)
    d = fast(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
    assert d.image_size == (240, 320)


def test_wrap_errors(yolov5n, tmp_path):
    with pytest.raises(ValueError, match="valid names: .*yolov5"):
        argos.wrap("yolov9000")
    with pytest.raises(FileNotFoundError):
        argos.wrap(str(tmp_path / "missing.pt"))
    with pytest.raises(TypeError, match="detector must be"):
        argos.wrap(object())
    with pytest.raises(ValueError, match="valid names"):
        argos.wrap(yolov5n, proposer="qunett")
    with pytest.raises(ValueError, match="cannot be applied"):
        argos.wrap(yolov5n, img_size=320)
    fast = argos.wrap(yolov5n)
    with pytest.raises(ValueError, match="grayscale"):
        fast(np.zeros((32, 32), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        fast(np.zeros((32, 32, 3), np.float64))
    with pytest.raises(ValueError, match="RGBA"):
        fast(np.zeros((32, 32, 4), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt"):
        fast(str(bad))


def test_adapter_class_ids(yolov5n):
    assert yolov5n.class_ids(["person", "car"]).tolist() == [0, 2]
    assert yolov5n.class_ids(None) is None
    with pytest.raises(ValueError, match="unknown class"):
        yolov5n.class_ids(["persn"])


def test_auto_is_the_measured_default(pspnet18):
    from argos.adapters.yolov5 import YOLOv5Adapter
    from argos.executors.packed_crops import PackedCropsExecutor
    from argos.proposers.temporal import TemporalProposer

    fast = argos.wrap(YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64), proposer="auto", executor="auto")
    assert isinstance(fast.proposer, TemporalProposer) and isinstance(fast.executor, PackedCropsExecutor)
    p = fast.proposer  # motion-compensated key frames every other frame, at the adapter's own threshold
    assert (p.max_interval, p.velocity, p.newcomers) == (2, True, False)
    assert p.hold_score == p.track_score == fast.adapter.conf
    fast = argos.wrap(YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64, conf=0.4), proposer="auto", executor="auto",
                      proposer_kwargs={"max_interval": 3})
    assert fast.proposer.hold_score == 0.4 and fast.proposer.max_interval == 3  # the caller's options win
    named = argos.wrap(YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64), proposer="temporal", executor="auto")
    assert named.proposer.max_interval == 4 and not named.proposer.velocity  # a named proposer keeps its defaults
    with pytest.raises(ValueError, match="detectors only"):
        argos.wrap(pspnet18, proposer="auto", executor="masked")
