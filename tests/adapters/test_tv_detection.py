"""torchvision adapter: equals the model's own forward per family, COCO-91 labels, FLOPs vs
fvcore, registry construction, instance masks through the executors."""
from __future__ import annotations

from typing import List

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import argos
from argos import Detections, RegionProposals
from argos.adapters.base import Adapter
from argos.adapters.tv_detection import TorchvisionAdapter, TorchvisionFeatures, coco91_names
from argos.adapters.yolov5 import LetterboxMeta, boxes_to_original, letterbox
from argos.executors.packed_crops import PackedCropsExecutor
from argos.wrap import build_adapter

# Small inputs and few RoIs keep the random-init R-CNNs fast on CPU.
FAST_RCNN = dict(rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30)


def _images(seed: int = 0) -> List[np.ndarray]:
    """Two noise images of different shapes (odd sizes: resizing and padding differ per image)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (150, 210, 3), dtype=np.uint8), rng.integers(0, 256, (203, 131, 3), dtype=np.uint8)]


def _reference(adapter: TorchvisionAdapter, images: List[np.ndarray]) -> List[dict]:
    """The torchvision model called directly, as its docs say: list of float [0, 1] CHW tensors."""
    with torch.inference_mode():
        return adapter.model([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])


def _named(ref: dict, names) -> torch.Tensor:
    return torch.isin(ref["labels"], torch.tensor(sorted(names)))


@pytest.fixture(scope="module")
def maskrcnn() -> TorchvisionAdapter:
    torch.manual_seed(0)
    return TorchvisionAdapter("maskrcnn_resnet50_fpn", img_size=128, conf=0.001, max_det=4, **FAST_RCNN)


@pytest.fixture(scope="module")
def mobile() -> TorchvisionAdapter:
    torch.manual_seed(0)
    return TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", img_size=128, conf=0.001, **FAST_RCNN)


# ---------------------------------------------------------------------------------------------
# Against the model's own forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", dict(img_size=128, **FAST_RCNN)),
        ("retinanet_resnet50_fpn", dict(img_size=64)),
        ("fcos_resnet50_fpn", dict(img_size=64)),
        ("ssdlite320_mobilenet_v3_large", {}),
    ],
)
def test_equals_torchvision_forward(name, kwargs):
    torch.manual_seed(0)
    adapter = TorchvisionAdapter(name, conf=0.001, max_det=50, **kwargs)
    images = _images()
    got = adapter.predict(images)
    ref = _reference(adapter, images)
    for d, r, im in zip(got, ref, images):
        keep = _named(r, adapter.names)
        assert keep.sum() > 0, "random init still gives detections at conf 0.001"
        assert d.image_size == im.shape[:2] and d.masks is None
        assert torch.equal(d.boxes, r["boxes"][keep]) and torch.equal(d.scores, r["scores"][keep])
        assert torch.equal(d.labels, r["labels"][keep])


def test_mask_rcnn_equals_torchvision_forward_with_masks(maskrcnn):
    images = _images(1)
    got = maskrcnn.predict(images)
    ref = _reference(maskrcnn, images)
    for d, r, im in zip(got, ref, images):
        keep = _named(r, maskrcnn.names)
        assert 0 < len(d) <= 4 and torch.equal(d.boxes, r["boxes"][keep])
        assert d.masks.dtype == torch.bool and d.masks.shape == (len(d), *im.shape[:2])
        assert torch.equal(d.masks, r["masks"][keep, 0] > 0.5)


def test_preprocess_is_the_model_transform(mobile):
    images = _images()
    batch, metas = mobile.preprocess(images)
    assert batch.shape[0] == 2 and batch.shape[-2] % 32 == 0 and batch.shape[-1] % 32 == 0
    for im, m in zip(images, metas):
        h, w = im.shape[:2]
        assert m.orig_size == (h, w) and m.pad == (0, 0) and max(m.input_size) == 128  # long side at img_size
        assert m.ratio == pytest.approx((m.input_size[1] / w, m.input_size[0] / h))
    raw = mobile.forward(batch)
    assert isinstance(raw, TorchvisionFeatures) and raw.batch is batch
    # The native path never resizes: sizes are the images', padded to 32.
    batch, metas = mobile.preprocess_native([images[0]])
    assert tuple(batch.shape[-2:]) == (160, 224) and metas[0].ratio == (1.0, 1.0) and metas[0].input_size == (150, 210)


def test_thresholds_and_img_size_reach_the_model(mobile):
    transform = mobile.model.transform
    assert mobile.img_size == 128 and transform.min_size == (128,) and transform.max_size == 128
    assert mobile.conf == pytest.approx(0.001) and mobile.model.roi_heads.score_thresh == pytest.approx(0.001)
    assert mobile.iou == pytest.approx(0.5) and mobile.max_det == 100
    assert mobile.module is mobile.model.backbone and not mobile.model.training
    assert mobile.pad_value == 114 and mobile.stride == 32


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def test_coco91_names_and_label_ids(mobile):
    names = coco91_names()
    assert len(names) == 80 and names[1] == "person" and names[90] == "toothbrush"
    assert 12 not in names and 0 not in names, "N/A gaps and the background have no name"
    assert mobile.names == names
    assert mobile.class_ids(["person", "toothbrush"]).tolist() == [1, 90]
    for d in mobile.predict(_images()):
        assert set(d.labels.tolist()) <= set(names)


def test_dataset_label_map_pairs_names_with_coco_ids(mobile, coco128):
    label_map = coco128.label_map(mobile.names)
    assert all(label_map[k] == k for k in mobile.names), "torchvision labels are COCO category ids"


def test_custom_num_classes_names():
    torch.manual_seed(0)
    a = TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", img_size=64, num_classes=4, conf=0.0, **FAST_RCNN)
    assert a.names == {1: "class_1", 2: "class_2", 3: "class_3"}
    d = a.predict(_images()[:1])[0]
    assert len(d) > 0 and set(d.labels.tolist()) <= {1, 2, 3}


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------


def test_weights_path_loads_a_local_state_dict(mobile, tmp_path):
    path = tmp_path / "mobile.pth"
    torch.save({"model": mobile.model.state_dict()}, path)  # torchvision reference-script layout
    torch.manual_seed(1)  # a different random init, replaced by the file
    other = TorchvisionAdapter(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights=path, img_size=128, conf=0.001, **FAST_RCNN
    )
    images = _images()
    for a, b in zip(mobile.predict(images), other.predict(images)):
        assert len(a) > 0 and torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    with pytest.raises(FileNotFoundError):
        TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", weights=tmp_path / "missing.pth")


def test_module_instance_is_used_as_is(mobile):
    a = TorchvisionAdapter(mobile.model, conf=0.001)
    assert a.model is mobile.model and a.img_size == 128
    image = _images()[:1]
    assert torch.equal(a.predict(image)[0].boxes, mobile.predict(image)[0].boxes)


def test_bad_arguments_are_refused(mobile):
    with pytest.raises(ValueError, match="fasterrcnn_resnet50_fpn"):
        TorchvisionAdapter("yolo_v99")
    with pytest.raises(ValueError, match="weights=PATH"):
        TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", weights_backbone="DEFAULT")
    with pytest.raises(ValueError, match="not both"):
        TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", img_size=128, min_size=64)
    with pytest.raises(ValueError, match="builder name"):
        TorchvisionAdapter(mobile.model, num_classes=3)
    with pytest.raises(TypeError, match="supported families"):
        TorchvisionAdapter(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="conf"):
        TorchvisionAdapter(mobile.model, conf=1.5)
    with pytest.raises(ValueError, match="img_size must be 320"):
        TorchvisionAdapter("ssdlite320_mobilenet_v3_large", img_size=256)
    with pytest.raises(TypeError, match="list of images"):
        mobile.preprocess(_images()[0])
    with pytest.raises(ValueError, match="uint8"):
        mobile.preprocess([_images()[0].astype(np.float32)])


def test_wrap_builds_through_the_registry():
    torch.manual_seed(0)
    w = argos.wrap("torchvision", model="fasterrcnn_mobilenet_v3_large_320_fpn", img_size=96, conf=0.001, **FAST_RCNN)
    assert isinstance(w.adapter, TorchvisionAdapter) and w.adapter.img_size == 96
    image = _images()[0]
    d = w(image)
    assert isinstance(d, Detections) and len(d) > 0
    ref = w.adapter.predict([image])[0]
    assert torch.equal(d.boxes, ref.boxes) and torch.equal(d.scores, ref.scores)
    a = build_adapter("torchvision", model="fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3, img_size=64)
    assert isinstance(a, TorchvisionAdapter) and len(a.names) == 2


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def test_flops_within_5_percent_of_fvcore(mobile):
    fvcore = pytest.importorskip("fvcore.nn")
    hw = (96, 128)
    probe = mobile.cost_probe()  # backbone, RPN head and the box head on all 30 proposals
    counter = fvcore.FlopCountAnalysis(probe, torch.zeros(1, 3, *hw))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    ours = mobile.flops(hw)
    theirs = 2 * counter.total() / 1e9  # fvcore counts one flop per multiply-accumulate
    assert ours == pytest.approx(theirs, rel=0.05)


def test_flops_count_box_heads_per_proposal():
    # Box head = TwoMLPHead (256*7*7 -> 1024 -> 1024) + predictor (1024 -> 91 scores, 364 deltas).
    per_roi = 2 * (256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * (91 + 91 * 4)) / 1e9
    a, b = (
        TorchvisionAdapter("fasterrcnn_mobilenet_v3_large_320_fpn", img_size=128, rpn_post_nms_top_n_test=n)
        for n in (30, 31)
    )
    assert b.flops((96, 128)) - a.flops((96, 128)) == pytest.approx(per_roi, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Through the executors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["masked", "packed_crops", "gather_scatter"])
def test_full_proposer_equals_unwrapped(maskrcnn, executor):
    image = _images(2)[0]
    ref = maskrcnn.predict([image])[0]
    got = argos.wrap(maskrcnn, proposer="full", executor=executor)(image)
    assert len(ref) > 0 and torch.equal(got.boxes, ref.boxes) and torch.equal(got.scores, ref.scores)
    assert torch.equal(got.masks, ref.masks)


def test_oracle_regions_through_packed_crops_give_full_size_masks(maskrcnn):
    image = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    regions = torch.tensor([[10.0, 10.0, 30.0, 30.0], [290.0, 210.0, 310.0, 230.0]])  # 8 x 8 network pixels each
    w = argos.wrap(maskrcnn, proposer="oracle", executor="packed_crops")
    d = w(image, targets=[regions])
    st = w.executor.last_stats
    assert st["fallback"] == [False] and st["canvases"] >= 1
    assert d.masks is not None and d.masks.shape == (len(d), 240, 320)
    # Each mask lies in one crop: the two regions, with the margin and the 32-pixel grid, scaled
    # back by 320 / 128.
    in_crops = torch.zeros(240, 320, dtype=torch.bool)
    for x1, y1, x2, y2 in w.executor.last_plan.boxes.tolist():
        in_crops[int(y1 * 2.5) : int(y2 * 2.5), int(x1 * 2.5) : int(x2 * 2.5)] = True
    assert not (d.masks & ~in_crops).any()


def test_masked_executor_keeps_masks_with_their_detections(maskrcnn):
    image = _images(2)[0]
    region = torch.tensor([[0.0, 0.0, 120.0, 150.0]])
    d = argos.wrap(maskrcnn, proposer="oracle", executor="masked")(image, targets=[region])
    assert d.masks.shape == (len(d), *image.shape[:2])
    centres = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2
    assert torch.all(centres[:, 0] < 120)


# A model-free instance-mask detector: finds pure red rectangles and returns their masks, so every
# mask packed_crops maps back is known exactly.


class _Identity(nn.Module):
    def forward(self, x):
        return x


class RedMaskAdapter(Adapter):
    """Letterboxes like YOLOv5 and reports each red blob with its mask, score 0.9, class 0."""

    names = {0: "red"}

    def __init__(self, img_size: int) -> None:
        self.img_size, self.iou, self.max_det = img_size, 0.65, 100
        self._net = _Identity()

    @property
    def module(self) -> nn.Module:
        return self._net

    def preprocess(self, images, native=False):
        boxed, metas = zip(*(letterbox(im, max(im.shape[:2]) if native else self.img_size, 32, True) for im in images))
        h, w = max(b.shape[0] for b in boxed), max(b.shape[1] for b in boxed)
        arr = np.full((len(boxed), h, w, 3), self.pad_value, np.uint8)
        for k, b in enumerate(boxed):
            arr[k, : b.shape[0], : b.shape[1]] = b
        return torch.from_numpy(arr).permute(0, 3, 1, 2), list(metas)

    def preprocess_native(self, images):
        return self.preprocess(images, native=True)

    def forward(self, batch):
        return batch

    def postprocess(self, raw, metas: List[LetterboxMeta]):
        out = []
        for im, meta in zip(raw.permute(0, 2, 3, 1).numpy(), metas):
            red = ((im[..., 0] > 200) & (im[..., 1] < 60) & (im[..., 2] < 60)).astype(np.uint8)
            n, comp, st, _ = cv2.connectedComponentsWithStats(red, connectivity=8)
            boxes = torch.tensor([(x, y, x + w, y + h) for x, y, w, h in st[1:, :4].tolist()], dtype=torch.float32)
            (left, top), (h, w) = meta.pad, meta.orig_size
            masks = []
            for c in range(1, n):  # back to the original frame by nearest neighbour
                m = (comp == c)[top : top + round(h * meta.ratio[1]), left : left + round(w * meta.ratio[0])]
                masks.append(cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0)
            masks_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
            out.append(Detections(boxes_to_original(boxes.reshape(-1, 4), meta), torch.full((n - 1,), 0.9),
                                  torch.zeros(n - 1, dtype=torch.int64), (h, w), masks_t))
        return out

    def flops(self, input_hw):
        return input_hw[0] * input_hw[1] * 1e-6


@pytest.mark.parametrize("size,img_size", [((480, 640), 640), ((960, 1280), 640)])
def test_packed_crops_pastes_each_mask_at_its_place(size, img_size):
    rects = [(40, 40, 80, 100), (300, 200, 340, 262), (500, 30, 560, 61)]
    scale = size[1] / img_size
    rects = [tuple(int(v * scale) for v in r) for r in rects]
    image = np.full((*size, 3), 80, np.uint8)
    for x1, y1, x2, y2 in rects:
        image[y1:y2, x1:x2] = (255, 0, 0)
    regions = torch.tensor([(x1 - 4, y1 - 4, x2 + 4, y2 + 4) for x1, y1, x2, y2 in rects], dtype=torch.float32)
    mask = torch.zeros(size, dtype=torch.bool)
    for x1, y1, x2, y2 in regions.int().tolist():
        mask[y1:y2, x1:x2] = True
    ex = PackedCropsExecutor(margin=8, gap=8, align=8)
    (got,) = ex.run(RedMaskAdapter(img_size), [image], [RegionProposals(mask, regions)])
    assert ex.last_stats["fallback"] == [False] and ex.last_stats["crops"] == [3]
    assert len(got) == 3 and got.masks.shape == (3, *size)
    for x1, y1, x2, y2 in rects:
        truth = torch.zeros(size, dtype=torch.bool)
        truth[y1:y2, x1:x2] = True
        iou = (got.masks & truth).sum((1, 2)).float() / (got.masks | truth).sum((1, 2)).float()
        if scale == 1:
            assert (iou == 1).sum() == 1, "at scale 1 the mask comes back pixel-exact"
        else:
            assert (iou > 0.9).sum() == 1  # nearest-neighbour upsampling by 2 moves edges by a pixel
