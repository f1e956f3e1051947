"""Swin-T Cascade Mask R-CNN adapter (mmdet): equals mmdet's own test pipeline, 80.7M
parameters, FLOPs vs fvcore, instance masks through the executors."""
from __future__ import annotations

import subprocess
import sys
from typing import List

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
# mmdet's mask head builds a tensor from a tensor; harmless, and not ours to change.
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")

import argos  # noqa: E402
from argos import Detections  # noqa: E402
from argos.adapters.cascade_mask_rcnn import CascadeMaskRCNNAdapter, MMDetFeatures, _BackboneRPN  # noqa: E402
from argos.registry import ADAPTERS  # noqa: E402

# Random init scores every class about 1/81, so conf 0.01 keeps detections; few proposals and
# detections keep the three cascade stages and their mask heads cheap on CPU.
SMALL = dict(img_size=160, conf=0.01, max_det=3, proposals=20)


def _images(seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (150, 210, 3), dtype=np.uint8), rng.integers(0, 256, (203, 131, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def cascade() -> CascadeMaskRCNNAdapter:
    torch.manual_seed(0)
    return CascadeMaskRCNNAdapter(**SMALL)


def _mmdet_reference(adapter: CascadeMaskRCNNAdapter, images: List[np.ndarray]):
    """mmdet's own test pipeline (LoadImageFromNDArray, Resize keep_ratio, PackDetInputs) and
    ``test_step``, on BGR arrays as mmdet's inference_detector takes them."""
    from mmcv.transforms import Compose
    from mmdet.datasets.transforms import LoadImageFromNDArray, PackDetInputs, Resize

    s = adapter.img_size
    pipeline = Compose(
        [
            LoadImageFromNDArray(),
            Resize(scale=(s, s), keep_ratio=True),
            PackDetInputs(meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
        ]
    )
    data = [pipeline({"img": np.ascontiguousarray(im[..., ::-1]), "img_id": k}) for k, im in enumerate(images)]
    with torch.inference_mode():
        out = adapter.model.test_step(
            {"inputs": [d["inputs"] for d in data], "data_samples": [d["data_samples"] for d in data]}
        )
    return [o.pred_instances for o in out]


def test_architecture_has_80_7m_parameters(cascade):
    n = sum(p.numel() for p in cascade.model.parameters())
    assert n == pytest.approx(80.7e6, rel=0.01)
    assert type(cascade.model).__name__ == "CascadeRCNN"
    assert type(cascade.model.backbone).__name__ == "SwinTransformer"
    assert cascade.module is cascade.model and not cascade.model.training


def test_equals_mmdet_test_pipeline(cascade):
    images = _images()
    got = cascade.predict(images)
    ref = _mmdet_reference(cascade, images)
    for d, r, im in zip(got, ref, images):
        h, w = im.shape[:2]
        assert len(d) == len(r) > 0
        bound = torch.tensor([w, h, w, h], dtype=torch.float32)
        assert torch.allclose(d.boxes, r.bboxes.clamp(min=0).minimum(bound))
        assert torch.equal(d.scores, r.scores) and torch.equal(d.labels, r.labels)
        assert torch.equal(d.masks, r.masks)


def test_preprocess_matches_mmdet_resize_and_padding(cascade):
    images = _images()
    batch, metas = cascade.preprocess(images)
    assert batch.shape[0] == 2 and batch.shape[-2] % 32 == 0 and batch.shape[-1] % 32 == 0
    for im, m in zip(images, metas):
        h, w = im.shape[:2]
        assert m.orig_size == (h, w) and m.pad == (0, 0) and max(m.input_size) == 160
        assert m.ratio == pytest.approx((m.input_size[1] / w, m.input_size[0] / h))
    # Normalised with mmdet's COCO mean/std: the mean colour becomes ~0.
    grey = np.empty((64, 64, 3), np.uint8)
    grey[...] = (124, 116, 104)
    b, _ = cascade.preprocess([grey])
    assert b.abs().max() < 0.02
    raw = cascade.forward(batch)
    assert isinstance(raw, MMDetFeatures) and raw.input_hw == tuple(batch.shape[-2:]) and len(raw.features) == 5
    b, m = cascade.preprocess_native([images[0]])
    assert tuple(b.shape[-2:]) == (160, 224) and m[0].ratio == (1.0, 1.0) and m[0].input_size == (150, 210)


def test_end_to_end_on_a_coco128_image(cascade, coco128):
    sample = coco128[0]
    image = sample.image
    (d,) = cascade.predict([image])
    h, w = image.shape[:2]
    assert isinstance(d, Detections) and d.image_size == (h, w)
    assert 0 < len(d) <= 3 and d.boxes.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert d.masks is not None and d.masks.dtype == torch.bool and d.masks.shape == (len(d), h, w)
    assert torch.all(d.scores >= 0.01) and torch.all((d.labels >= 0) & (d.labels < 80))
    assert len(cascade.names) == 80 and cascade.names[0] == "person" and cascade.names[79] == "toothbrush"
    assert coco128.label_map(cascade.names)[0] == 1  # names match COCO's categories


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def test_dense_flops_within_5_percent_of_fvcore(cascade):
    fvcore = pytest.importorskip("fvcore.nn")
    hw = (160, 224)
    counter = fvcore.FlopCountAnalysis(_BackboneRPN(cascade.model).eval(), torch.zeros(1, 3, *hw))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    theirs = 2 * counter.total() / 1e9  # fvcore: one flop per multiply-accumulate, matmuls included
    assert cascade.dense_flops(hw) == pytest.approx(theirs, rel=0.05)
    assert counter.by_operator()["matmul"] > 0, "Swin's attention matmuls are part of the count"


def test_head_flops_equal_the_layer_arithmetic(cascade):
    proposals, detections = cascade.roi_counts()
    assert (proposals, detections) == (20, 3)
    # Each of 3 stages: box head 256*7*7 -> 1024 -> 1024 -> 81 scores + 4 class-agnostic deltas;
    # mask head 4 x conv3x3 256 at 14x14, deconv 2x2 to 28x28, conv1x1 to 80 classes.
    box = 256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 81 + 1024 * 4
    mask = 4 * 256 * 256 * 9 * 14 * 14 + 256 * 256 * 4 * 14 * 14 + 256 * 80 * 28 * 28
    expected = 2 * 3 * (proposals * box + detections * mask) / 1e9
    assert cascade.head_flops() == pytest.approx(expected, rel=1e-9)
    assert cascade.flops((160, 224)) == pytest.approx(cascade.dense_flops((160, 224)) + expected)


# ---------------------------------------------------------------------------------------------
# Through argos
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["masked", "packed_crops", "gather_scatter"])
def test_full_proposer_equals_unwrapped(cascade, executor):
    image = _images(1)[0]
    ref = cascade.predict([image])[0]
    got = argos.wrap(cascade, proposer="full", executor=executor)(image)
    assert len(ref) > 0 and torch.equal(got.boxes, ref.boxes) and torch.equal(got.scores, ref.scores)
    assert torch.equal(got.labels, ref.labels) and torch.equal(got.masks, ref.masks)


def test_two_box_oracle_through_packed_crops_gives_masks_at_image_size(cascade):
    image = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    regions = torch.tensor([[10.0, 10.0, 40.0, 40.0], [350.0, 250.0, 390.0, 290.0]])
    w = argos.wrap(cascade, proposer="oracle", executor="packed_crops")
    d = w(image, targets=[regions])
    st = w.executor.last_stats
    assert st["fallback"] == [False] and st["canvases"] >= 1
    assert d.image_size == (300, 400) and d.masks is not None and d.masks.shape == (len(d), 300, 400)


def test_weights_load_from_a_local_mmdet_checkpoint(cascade, tmp_path):
    path = tmp_path / "cascade.pth"
    torch.save({"meta": {"note": "test"}, "state_dict": cascade.model.state_dict()}, path)
    torch.manual_seed(1)
    other = CascadeMaskRCNNAdapter(weights=path, **SMALL)
    image = _images(2)[:1]
    a, b = cascade.predict(image)[0], other.predict(image)[0]
    assert len(a) > 0 and torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    with pytest.raises(FileNotFoundError):
        CascadeMaskRCNNAdapter(weights=tmp_path / "missing.pth", **SMALL)


def test_mmdet_is_imported_only_when_the_adapter_is_built():
    code = (
        "import sys, argos, argos.adapters.cascade_mask_rcnn\n"
        "from argos.registry import ADAPTERS\n"
        "ADAPTERS.get('cascade_mask_rcnn')\n"
        "assert not any(m.split('.')[0] in ('mmdet', 'mmcv', 'mmengine') for m in sys.modules), 'imported early'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_and_bad_arguments(monkeypatch):
    assert ADAPTERS.get("cascade_mask_rcnn") is CascadeMaskRCNNAdapter
    with pytest.raises(ValueError, match="conf"):
        CascadeMaskRCNNAdapter(conf=2.0)
    with pytest.raises(ValueError, match="proposals"):
        CascadeMaskRCNNAdapter(proposals=0)
    # Without mmdet, construction says which extra to install.
    monkeypatch.setitem(sys.modules, "mmdet", None)
    with pytest.raises(ImportError, match=r"argos-cv\[mmdet\]"):
        CascadeMaskRCNNAdapter()
