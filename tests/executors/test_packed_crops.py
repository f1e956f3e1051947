"""packed_crops executor: crops mapped back equal direct runs, full frames equal the unwrapped detector."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import argos
from argos import Detections, RegionProposals
from argos.adapters.base import Adapter
from argos.adapters.yolov5 import LetterboxMeta, YOLOv5Adapter, boxes_to_original, letterbox
from argos.executors.crops import _same_class_pairs, assign_to_crops, filter_crop_detections, frame_geometry
from argos.executors.packed_crops import PackedCropsExecutor


def assert_same(a: Detections, b: Detections, atol: float = 0.0):
    assert a.image_size == b.image_size
    assert len(a) == len(b)
    if atol:
        assert torch.allclose(a.boxes, b.boxes, atol=atol) and torch.allclose(a.scores, b.scores, atol=1e-5)
    else:
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.labels, b.labels)


def proposals_from_boxes(image_size, boxes) -> RegionProposals:
    h, w = image_size
    mask = torch.zeros(h, w, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes:
        mask[int(y1) : int(y2), int(x1) : int(x2)] = True
    return RegionProposals(mask, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))


def inside_share(boxes: torch.Tensor, rect: Sequence[float]) -> torch.Tensor:
    x1, y1, x2, y2 = rect
    iw = (boxes[:, 2].clamp(max=x2) - boxes[:, 0].clamp(min=x1)).clamp(min=0)
    ih = (boxes[:, 3].clamp(max=y2) - boxes[:, 1].clamp(min=y1)).clamp(min=0)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-9)
    return iw * ih / area


# ---------------------------------------------------------------------------------------------
# A model-free YOLO-style adapter: it "detects" pure red rectangles, so every box is known.
# ---------------------------------------------------------------------------------------------


class _Identity(nn.Module):
    def forward(self, x):
        return x


class RedBoxAdapter(Adapter):
    """Letterboxes like YOLOv5 and reports each 8-connected red blob's box, score 0.9, class 0;
    with ``see_pad``, also each blob of exact pad grey (a detector hallucinating in padding), class 1."""

    names = {0: "red", 1: "pad"}

    def __init__(self, img_size: int = 640, stride: int = 32, see_pad: bool = False) -> None:
        self.img_size, self.stride, self.iou, self.max_det = img_size, stride, 0.65, 300
        self.see_pad = see_pad
        self._net = _Identity()
        self.batches: List[Tuple[int, ...]] = []

    @property
    def module(self) -> nn.Module:
        return self._net

    def preprocess(self, images, native=False):
        boxed, metas = zip(*(letterbox(im, max(im.shape[:2]) if native else self.img_size, self.stride, True,
                                       self.pad_value) for im in images))
        h, w = max(b.shape[0] for b in boxed), max(b.shape[1] for b in boxed)
        arr = np.full((len(boxed), h, w, 3), self.pad_value, np.uint8)
        for k, b in enumerate(boxed):
            arr[k, : b.shape[0], : b.shape[1]] = b
        self.batches.append(arr.shape)
        return torch.from_numpy(arr).permute(0, 3, 1, 2), list(metas)

    def forward(self, batch):
        return batch

    def postprocess(self, raw, metas: List[LetterboxMeta]):
        out = []
        for im, meta in zip(raw.permute(0, 2, 3, 1).numpy(), metas):
            masks = [(im[..., 0] > 200) & (im[..., 1] < 60) & (im[..., 2] < 60)]
            if self.see_pad:
                masks.append((im == self.pad_value).all(-1))
            boxes, labels = [], []
            for label, m in enumerate(masks):
                n, _, st, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
                boxes += [(x, y, x + w, y + h) for x, y, w, h in st[1:, :4].tolist()]
                labels += [label] * (n - 1)
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append(Detections(boxes_to_original(b, meta), torch.full((len(b),), 0.9),
                                  torch.tensor(labels, dtype=torch.int64), meta.orig_size))
        return out

    def flops(self, input_hw):
        return input_hw[0] * input_hw[1] * 1e-6


class NativeRedBoxAdapter(RedBoxAdapter):
    """Also runs images at scale 1, like YOLOv5Adapter.preprocess_native."""

    def preprocess_native(self, images):
        return self.preprocess(images, native=True)


def red_scene(size, rects, seed=0):
    """Noise-free grey image with red rectangles (xyxy, exclusive ends)."""
    rng = np.random.default_rng(seed)
    im = np.zeros((*size, 3), np.uint8)
    im[...] = rng.integers(60, 100, 3, dtype=np.uint8)  # flat, neither red nor pad grey
    for x1, y1, x2, y2 in rects:
        im[y1:y2, x1:x2] = (255, 0, 0)
    return im


def test_frame_geometry_matches_letterbox():
    for h, w in [(480, 640), (427, 640), (640, 481), (333, 517), (97, 640), (1080, 1920), (17, 23), (640, 640)]:
        boxed, meta = letterbox(np.zeros((h, w, 3), np.uint8), 640, 32, True)
        g = frame_geometry((h, w), 640, 32, True)
        assert g.input_size == boxed.shape[:2] and g.pad == meta.pad and g.ratio == meta.ratio
        boxed, meta = letterbox(np.zeros((h, w, 3), np.uint8), 320, 32, False)
        g = frame_geometry((h, w), 320, 32, False)
        assert g.input_size == boxed.shape[:2] == (320, 320) and g.pad == meta.pad


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("size,scale", [((480, 640), 1), ((333, 517), 517 / 640), ((960, 1280), 2)])
def test_red_boxes_mapped_back_to_original_pixels(size, scale, native):
    # Objects in network pixels, scaled to the frame; regions around each, some far apart.
    net_rects = [(40, 40, 80, 100), (300, 200, 340, 260), (500, 30, 560, 60), (100, 300, 140, 330)]
    rects = [tuple(int(round(v * scale)) for v in r) for r in net_rects]
    image = red_scene(size, rects)
    regions = [(x1 - 4, y1 - 4, x2 + 4, y2 + 4) for x1, y1, x2, y2 in rects]
    adapter = NativeRedBoxAdapter() if native else RedBoxAdapter()
    ex = PackedCropsExecutor(margin=8, gap=8, align=8)
    (got,) = ex.run(adapter, [image], [proposals_from_boxes(size, np.clip(regions, 0, None))])
    st = ex.last_stats
    assert st["fallback"] == [False] and st["canvases"] >= 1 and st["crops"] == [4]
    assert st["input_hw"] == st["canvas_hw"]
    # Without a native path the canvas must pass the letterbox unscaled: long side img_size.
    assert (max(st["canvas_hw"]) < 640) if native else (max(st["canvas_hw"]) == 640)
    assert len(adapter.batches) == 1, "one detector call for the whole batch of canvases"
    assert st["packed_fraction"][0] < 0.8
    (ref,) = adapter.predict([image])  # the full frame
    assert len(got) == len(ref) == 4
    order = lambda d: d.boxes[torch.argsort(d.boxes[:, 0] * 1e4 + d.boxes[:, 1])]  # noqa: E731
    tol = 0.0 if scale == 1 else 1.0 / min(1.0, 640 / max(size)) + 1e-3
    assert torch.allclose(order(got), order(ref), atol=tol)
    if scale == 1:
        assert torch.equal(order(got), torch.tensor(rects, dtype=torch.float32)[torch.argsort(torch.tensor(
            [r[0] * 1e4 + r[1] for r in rects]))])


def test_detections_mostly_in_padding_are_dropped():
    # The adapter also "detects" pad-grey areas (class 1): on a canvas, the unused space and the
    # gaps are one such area, mostly outside every crop, so it must not come back. A grey patch
    # inside a region is a real detection and stays.
    image = red_scene((480, 640), [(100, 100, 160, 140)])
    image[300:340, 400:460] = 114
    adapter = RedBoxAdapter(see_pad=True)
    regions = [(90, 90, 170, 150), (390, 290, 470, 350)]
    ex = PackedCropsExecutor(margin=0, gap=8, align=8)
    (got,) = ex.run(adapter, [image], [proposals_from_boxes((480, 640), regions)])
    assert ex.last_stats["fallback"] == [False]
    assert sorted((int(l), b) for l, b in zip(got.labels, got.boxes.tolist())) == [
        (0, [100, 100, 160, 140]), (1, [400, 300, 460, 340])]
    # A region that cuts the object: the part inside the crop is what the detector sees.
    (got,) = ex.run(RedBoxAdapter(), [image], [proposals_from_boxes((480, 640), [(96, 96, 112, 144)])])
    assert len(got) == 1 and got.boxes[0].tolist() == [100, 100, 112, 140]


def test_cut_detection_dropped_when_another_crop_holds_the_object_whole():
    crops = np.array([[0, 0, 120, 100], [80, 0, 200, 100]])
    boxes = np.array([
        [90, 10, 120, 60],   # crop 0, cut by its right edge (x=120 runs through the image)
        [90, 10, 150, 60],   # crop 1, whole
        [90, 10, 119.5, 60],  # crop 0, cut, other class: nothing replaces it
        [0, 0, 30, 30],      # crop 0, touches the image border only: not cut
    ], dtype=np.float64)  # fmt: skip
    labels = np.array([1, 1, 2, 1])
    crop_index = np.array([0, 1, 0, 0])
    keep = filter_crop_detections(boxes, labels, crop_index, crops, (0, 0, 640, 480))
    assert keep.tolist() == [False, True, True, True]
    # A single crop never drops anything.
    assert filter_crop_detections(boxes, labels, np.zeros(4, int), crops[:1], (0, 0, 640, 480)).all()
    # A crop edge on the image border is not a cut: crop 0's right edge at the content edge.
    keep = filter_crop_detections(boxes, labels, crop_index, crops, (0, 0, 120, 480))
    assert keep.tolist() == [True, True, True, True]


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(a) -> float:
    return max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])


def random_crop_layout(rng, n_det: int, n_crops: int):
    """Crops on a grid of a 640x480 frame (some along its border), detections near them."""
    x1 = rng.integers(0, 10, n_crops) * 64
    y1 = rng.integers(0, 7, n_crops) * 64
    crops = np.stack([x1, y1, x1 + rng.integers(1, 4, n_crops) * 64, y1 + rng.integers(1, 4, n_crops) * 64], 1)
    crops = np.minimum(crops, [640, 480, 640, 480])
    xy = rng.uniform(-20, 620, (n_det, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 150, (n_det, 2))], 1)
    boxes[: n_det // 4] = np.round(boxes[: n_det // 4] / 64) * 64  # edges exactly on crop edges
    return crops, boxes


@pytest.mark.parametrize("seed", range(5))
def test_assign_to_crops_equals_a_loop_over_canvases_and_crops(seed):
    rng = np.random.default_rng(seed)
    placed, boxes = random_crop_layout(rng, 300, 9)
    crop_canvas = rng.integers(0, 3, 9)
    crop_canvas[crop_canvas == 2] = 1  # canvas 2 holds no crop
    det_canvas = rng.integers(0, 3, 300)
    for min_inside in (0.0, 0.5, 1.0):
        crop, inside = assign_to_crops(boxes, det_canvas, placed, crop_canvas, min_inside)
        for n, (box, c) in enumerate(zip(boxes.tolist(), det_canvas.tolist())):
            on = [k for k in range(9) if crop_canvas[k] == c]
            if not on:
                assert not inside[n]
                continue
            held = [_overlap(box, placed[k]) for k in on]
            k = on[held.index(max(held))]  # the first crop holding the most
            assert crop[n] == k
            assert inside[n] == (max(held) >= min_inside * max(_area(box), 1e-9))


@pytest.mark.parametrize("seed", range(5))
def test_filter_crop_detections_equals_a_loop_over_pairs(seed):
    rng = np.random.default_rng(seed)
    crops, _ = random_crop_layout(rng, 0, 6)
    crops[:, 2:] = np.minimum(crops[:, :2] + 192, [640, 480])  # large crops, so that they overlap
    # Each detection starts inside its own crop, some run over an edge (cut); the last 100 are
    # the first 100 again, slightly moved, as seen from another crop.
    crop_index = rng.integers(0, 6, 250)
    c = crops[crop_index].astype(float)
    xy = c[:, :2] + rng.uniform(0, 1, (250, 2)) * (c[:, 2:] - c[:, :2])
    boxes = np.concatenate([xy, xy + rng.uniform(2, 60, (250, 2))], 1)
    labels = rng.integers(0, 2, 250)
    boxes[150:] = boxes[:100] + rng.uniform(-3, 3, (100, 4))
    labels[150:] = labels[:100]
    crop_index[150:] = (crop_index[:100] + rng.integers(1, 6, 100)) % 6
    content = (0, 0, 640, 480) if seed % 2 else (0, 64, 640, 416)
    keep = filter_crop_detections(boxes, labels, crop_index, crops, content, border_tol=2.0, min_cover=0.5)
    cl, ct, cr, cb = content

    def cut(n):
        (x1, y1, x2, y2), (c1, d1, c2, d2) = boxes[n], crops[crop_index[n]]
        return (
            (x1 <= c1 + 2 and c1 > cl) or (y1 <= d1 + 2 and d1 > ct)
            or (x2 >= c2 - 2 and c2 < cr) or (y2 >= d2 - 2 and d2 < cb)
        )  # fmt: skip

    is_cut = [cut(n) for n in range(250)]
    dropped = 0
    for n in range(250):
        replaced = is_cut[n] and any(
            not is_cut[m] and labels[m] == labels[n] and crop_index[m] != crop_index[n]
            and _overlap(boxes[n], boxes[m]) >= 0.5 * max(_area(boxes[n]), 1e-9)
            for m in range(250)
        )  # fmt: skip
        assert keep[n] == (not replaced), n
        dropped += replaced
    assert 0 < dropped and 0 < sum(is_cut) < 250  # the layout exercises both outcomes


def test_same_class_pairs_lists_every_pair_once():
    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 6, 40), rng.integers(0, 6, 70)
    i, j = _same_class_pairs(la, lb)
    got = sorted(zip(i.tolist(), j.tolist()))
    assert got == [(a, b) for a in range(40) for b in range(70) if la[a] == lb[b]]
    assert len(_same_class_pairs(la, lb[:0])[0]) == 0 and len(_same_class_pairs(la[:0], lb)[0]) == 0


def test_overlapping_crops_do_not_duplicate_an_object():
    # An L-shaped pair of regions that does not merge (its bounding box costs more) with an
    # object in their overlap: the object comes back once.
    image = red_scene((480, 640), [(200, 200, 230, 230)])
    regions = [(0, 180, 640, 250), (180, 0, 250, 480)]
    adapter = RedBoxAdapter()
    ex = PackedCropsExecutor(margin=0, gap=8, align=8, fallback_ratio=2.0)
    (got,) = ex.run(adapter, [image], [proposals_from_boxes((480, 640), regions)])
    assert ex.last_stats["crops"] == [2]
    assert len(got) == 1 and got.boxes[0].tolist() == [200, 200, 230, 230]


def test_frames_of_a_batch_share_canvases_and_split_the_cost():
    sizes = [(480, 640), (333, 517), (640, 427)]
    images = [red_scene(s, [(20, 20, 50, 60)], seed=k) for k, s in enumerate(sizes)]
    props = [proposals_from_boxes(s, [(10, 10, 60, 70)]) for s in sizes]
    adapter = RedBoxAdapter()
    ex = PackedCropsExecutor()
    dets = ex.run(adapter, images, props)
    st = ex.last_stats
    assert st["canvases"] == 1 and st["fallback"] == [False] * 3 and len(adapter.batches) == 1
    canvas = adapter.flops(st["canvas_hw"])
    assert sum(st["gflops"]) == pytest.approx(canvas)
    assert sum(st["packed_area"]) == pytest.approx(st["canvas_hw"][0] * st["canvas_hw"][1])
    assert all(g > 0 for g in st["gflops"])
    for d, s in zip(dets, sizes):
        assert d.image_size == s and len(d) == 1
        r = 640 / max(s)
        assert torch.allclose(d.boxes[0], torch.tensor([20.0, 20, 50, 60]), atol=1 / r + 1e-3)


def test_empty_and_mixed_batches():
    adapter = RedBoxAdapter()
    ex = PackedCropsExecutor()
    empty = RegionProposals(torch.zeros(64, 80, dtype=torch.bool))
    (d,) = ex.run(adapter, [np.zeros((64, 80, 3), np.uint8)], [empty])
    assert len(d) == 0 and d.image_size == (64, 80)
    assert ex.last_stats["detector_ms"] == 0.0 and ex.last_stats["gflops"] == [0.0] and ex.last_stats["canvases"] == 0
    assert ex.run(adapter, [], []) == []

    scene = red_scene((480, 640), [(20, 20, 50, 60), (400, 300, 420, 330)])
    images = [scene, scene, scene]
    props = [RegionProposals(torch.zeros(480, 640, dtype=torch.bool)), RegionProposals.full((480, 640)),
             proposals_from_boxes((480, 640), [(10, 10, 60, 70)])]
    dets = ex.run(adapter, images, props)
    st = ex.last_stats
    assert st["fallback"] == [False, True, False] and st["gflops"][0] == 0.0
    assert [len(d) for d in dets] == [0, 2, 1]
    assert st["gflops"][1] == pytest.approx(adapter.flops((480, 640)))
    assert len(adapter.batches) == 2  # canvases, then the whole frame


def test_crop_too_large_for_any_canvas_falls_back_to_full_frame():
    image = red_scene((480, 640), [(20, 20, 50, 400)])
    adapter = RedBoxAdapter()
    ex = PackedCropsExecutor(canvas_sizes=[(128, 640)], fallback_ratio=2.0)
    (got,) = ex.run(adapter, [image], [proposals_from_boxes((480, 640), [(10, 10, 60, 410)])])
    assert ex.last_stats["fallback"] == [True] and ex.last_stats["canvases"] == 0
    assert got.boxes.tolist() == [[20, 20, 50, 400]], "the region is never dropped"


def test_bad_options_and_canvases_rejected():
    adapter = RedBoxAdapter()
    image = np.zeros((64, 80, 3), np.uint8)
    props = [proposals_from_boxes((64, 80), [(0, 0, 10, 10)])]
    with pytest.raises(ValueError, match="long side"):
        PackedCropsExecutor(canvas_sizes=[(320, 320)]).run(adapter, [image], props)
    with pytest.raises(ValueError, match="divide"):
        PackedCropsExecutor(align=12).run(adapter, [image], props)
    bad = ({"gap": -1}, {"align": 0}, {"margin": -2}, {"fallback_ratio": 0}, {"min_inside": 2}, {"canvas_sizes": []})
    for kw in bad:
        with pytest.raises(ValueError):
            PackedCropsExecutor(**kw)
    with pytest.raises(ValueError, match="proposal mask"):
        PackedCropsExecutor().run(adapter, [image], [RegionProposals.full((64, 81))])
    assert "packed_crops" in argos.list_executors()


# ---------------------------------------------------------------------------------------------
# The real detector
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_full_proposer_equals_unwrapped_detector(yolov5n, coco128):
    images = [coco128[i].image for i in (0, 4)]  # landscape and portrait
    fast = argos.wrap(yolov5n, proposer="full", executor="packed_crops")
    for im in images:
        (ref,) = yolov5n.predict([im])
        assert len(ref) > 0
        assert_same(fast(im), ref)
        assert fast.executor.last_stats["fallback"] == [True]
    for got, im in zip(fast(images), images):  # whole frames of two shapes: each as it is alone
        assert_same(got, yolov5n.predict([im])[0])


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_crop_detections_equal_detector_run_on_that_crop(yolov5n, yolov5n_weights, coco128, scale):
    """One region: the detector run by hand on the crop (cut from the frame resized to the
    network scale, on a pad-grey canvas of the same shape) gives the same detections."""
    s = coco128[7]  # 488 x 640: the letterbox pads 12 px top and bottom
    image = s.image
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    region = np.array([[261.0, 205.0, 453.0, 297.0]]) * scale
    ex = PackedCropsExecutor(margin=8, gap=8, align=8)
    (got,) = ex.run(yolov5n, [image], [proposals_from_boxes(image.shape[:2], region)])
    plan, st = ex.last_plan, ex.last_stats
    assert st["fallback"] == [False] and st["canvases"] == 1
    assert plan.positions.tolist() == [[0, 0]]
    x1, y1, x2, y2 = plan.boxes[0].tolist()
    # The crop covers the region plus the margin, in network pixels (pad 12 on top).
    assert x1 <= 261 - 8 and y1 <= 205 + 12 - 8 and x2 >= 453 + 8 and y2 >= 297 + 12 + 8

    # Reference, by hand: network-scale frame, letterbox padding, crop at the canvas origin.
    net = image if scale == 1.0 else cv2.resize(image, (640, 488), interpolation=cv2.INTER_LINEAR)
    boxed = np.full((512, 640, 3), 114, np.uint8)
    boxed[12:500] = net
    canvas = np.full((*st["canvas_hw"], 3), 114, np.uint8)
    canvas[: y2 - y1, : x2 - x1] = boxed[y1:y2, x1:x2]
    # A detector whose input size is the canvas's long side sees the canvas at scale 1.
    direct = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=max(st["canvas_hw"]))
    (ref,) = direct.predict([canvas])
    ref = ref[inside_share(ref.boxes, (0, 0, x2 - x1, y2 - y1)) >= 0.5]
    ref.boxes[:, 0::2] = ((ref.boxes[:, 0::2] + x1) / (640 / image.shape[1])).clamp(0, image.shape[1])
    ref.boxes[:, 1::2] = ((ref.boxes[:, 1::2] + y1 - 12) / (488 / image.shape[0])).clamp(0, image.shape[0])
    ref.image_size = image.shape[:2]
    assert len(ref) > 0
    assert_same(got, ref, atol=1e-3)


def test_packed_detections_agree_with_full_frame_on_objects(yolov5n, coco128):
    """Several separated regions on one canvas: confident detections of the full frame whose
    object lies well inside a region come back (the detector sees the same pixels at the same scale)."""
    s = coco128[33]  # 40 objects, 6 confident full-frame detections
    props = argos.PROPOSERS.build("oracle", dilation="adaptive").propose([s.image], [s.boxes])
    ex = PackedCropsExecutor()
    (got,) = ex.run(yolov5n, [s.image], props)
    assert ex.last_stats["fallback"] == [False] and ex.last_stats["packed_fraction"][0] < 0.8
    (ref,) = yolov5n.predict([s.image])
    ref = ref[ref.scores >= 0.5]
    assert len(ref) >= 3
    from torchvision.ops import box_iou

    conf = got[got.scores >= 0.25]
    iou = box_iou(ref.boxes, conf.boxes)
    same_class = ref.labels[:, None] == conf.labels[None, :]
    matched = ((iou >= 0.5) & same_class).any(1).float().mean().item()
    assert matched >= 0.9
