"""gather_scatter: sparse convs against a masked-dense reference written out here, exactness of
the dense path, the executor end to end."""
from __future__ import annotations

import copy
import math
import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import argos
from argos import RegionProposals
from argos.adapters.yolov5 import YOLOv5Adapter, letterbox
from argos.executors.gather_scatter import GatherScatterExecutor, context_of, convert, letterbox_mask
from argos.sparse import MaskedDense, SparseContext, SparseConv2d, SparseConvBlock
from argos.testing import masked_dense_reference as masked_reference, randomize_bn, reference_layer_mask as ref_mask


# ---- the independent reference (argos.testing): masks by explicit cell spans, hooks that mask conv outputs ----


def random_mask(B: int, H: int, W: int, density: float, seed: int) -> torch.Tensor:
    """Blobs plus isolated pixels."""
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(B, 1, H, W, generator=g) < density / 9
    blobs = F.max_pool2d(seeds.float(), 3, 1, 1)[:, 0] > 0
    return blobs | (torch.rand(B, H, W, generator=g) < density / 10)


def _flat(out):
    """Model outputs (tensor, or nested tuple/list/dict of tensors) -> list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    return [t for o in out for t in _flat(o)]


def assert_close(a, b, atol=1e-4, rtol=1e-4):
    for x, y in zip(_flat(a), _flat(b), strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


def assert_equal(a, b):
    for x, y in zip(_flat(a), _flat(b), strict=True):
        assert torch.equal(x, y)


# ---- single convs ----

GEOMETRIES = [  # kernel, stride, padding, dilation, groups, bias
    (3, 1, 1, 1, 1, True),
    (3, 2, 1, 1, 1, False),
    (1, 1, 0, 1, 1, True),
    (1, 2, 0, 1, 1, False),
    (5, 1, 4, 2, 1, True),
    (3, 1, 1, 1, 4, True),
    (6, 2, 2, 1, 1, False),
    (3, 2, 0, 1, 2, True),
    (1, 1, 1, 1, 1, True),
    ((3, 1), (2, 1), (1, 0), 1, 1, True),
    (4, 1, "same", 1, 1, True),
    (3, 1, "same", 2, 1, False),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}p{}d{}g{}b{}".format(*g))
@pytest.mark.parametrize("tile", [None, 2, 4, 7, "im2col", "dense"])
def test_sparse_conv_equals_masked_dense(geometry, tile):
    k, s, p, d, g, bias = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, k, s, p, d, g, bias).eval()
    sparse = convert(conv, tile=tile)
    assert isinstance(sparse, SparseConv2d) and conv.weight is not sparse.weight  # a copy by default
    x = torch.randn(2, 8, 37, 29)
    mask = random_mask(2, 37, 29, 0.1, seed=1)
    ref = conv(x)
    ref = ref * ref_mask(mask, *ref.shape[-2:])[:, None]
    with context_of(sparse).activate(mask):
        out = sparse(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("halo", [0.0, 3.0, 9.5])
def test_halo_grows_each_layer_mask(halo):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, 2, 1).eval()
    sparse = convert(conv, context=SparseContext(halo=halo))
    x = torch.randn(1, 4, 40, 36)
    mask = torch.zeros(1, 40, 36, dtype=torch.bool)
    mask[0, 17, 11] = True
    with context_of(sparse).activate(mask):
        out = sparse(x)
    m = ref_mask(mask, 20, 18, halo)
    torch.testing.assert_close(out, conv(x) * m[:, None], atol=1e-5, rtol=1e-5)
    assert int(m.sum()) == (2 * math.ceil(halo / 2) + 1) ** 2


@pytest.mark.parametrize("size", [(64, 96, 32, 48), (64, 96, 8, 8), (37, 29, 19, 15), (40, 40, 5, 40)])
@pytest.mark.parametrize("halo", [0.0, 4.0, 17.0])
def test_layer_masks_and_tile_counts_equal_the_reference(size, halo):
    from argos.sparse.masks import _tile_any, layer_mask

    H, W, h, w = size
    mask = random_mask(2, H, W, 0.05, seed=H + w)
    got = layer_mask(mask, h, w, halo)
    assert torch.equal(got, ref_mask(mask, h, w, halo))
    for th, tw in [(2, 2), (4, 3), (8, 8)]:
        ref = torch.zeros(2, -(-h // th), -(-w // tw), dtype=torch.bool)
        for i in range(ref.shape[1]):
            for j in range(ref.shape[2]):
                ref[:, i, j] = got[:, i * th:(i + 1) * th, j * tw:(j + 1) * tw].flatten(1).any(1)
        assert torch.equal(_tile_any(got, th, tw), ref)


def test_conv_block_folds_batchnorm_and_activation():
    from ultralytics.nn.modules.conv import Conv

    torch.manual_seed(0)
    for act in (True, nn.LeakyReLU(0.1), nn.Softmax(dim=1)):  # Softmax: not elementwise, applied densely
        block = randomize_bn(Conv(6, 10, 3, 2, act=act))
        sparse = convert(block)
        assert isinstance(sparse, SparseConvBlock)
        assert sorted(sparse.state_dict()) == sorted(block.state_dict())
        x = torch.randn(2, 6, 30, 22)
        mask = random_mask(2, 30, 22, 0.15, seed=2)
        with torch.inference_mode():
            ref = block(x)
            ref = ref * ref_mask(mask, *ref.shape[-2:])[:, None]
            with context_of(sparse).activate(mask):
                out = sparse(x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_unsupported_convs_fall_back_or_raise():
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2 + 1

    torch.manual_seed(0)
    model = nn.Sequential(Scaled(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")).eval()
    sparse = convert(model)
    assert isinstance(sparse[0], MaskedDense) and isinstance(sparse[1], MaskedDense)
    x = torch.randn(1, 3, 12, 10)
    mask = random_mask(1, 12, 10, 0.2, seed=3)
    with context_of(sparse).activate(mask):
        out = sparse(x)
    m = ref_mask(mask, 12, 10)[:, None]
    torch.testing.assert_close(out, model[1](model[0](x) * m) * m)
    with pytest.raises(TypeError, match="no sparse path"):
        convert(model, unsupported="error")


def test_conv_on_non_image_tensor_is_refused():
    conv = convert(nn.Conv2d(16, 1, 1))
    with context_of(conv).activate(random_mask(2, 64, 64, 0.2, seed=0)):
        with pytest.raises(RuntimeError, match="not a down-sampled grid"):
            conv(torch.randn(2, 16, 4, 300))  # e.g. a DFL-style conv over (sides, anchors)


def test_bad_inputs():
    sparse = convert(nn.Conv2d(3, 4, 3))
    ctx = context_of(sparse)
    with pytest.raises(TypeError, match="bool"):
        with ctx.activate(torch.ones(1, 8, 8)):
            pass
    with pytest.raises(ValueError, match="shape"):
        with ctx.activate(torch.ones(1, 1, 8, 8, dtype=torch.bool)):
            pass
    with ctx.activate(random_mask(2, 8, 8, 0.3, seed=0)):
        with pytest.raises(ValueError, match="batch of 1"):
            sparse(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="already converted"):
        convert(sparse)
    with pytest.raises(ValueError, match="tile"):
        convert(nn.Conv2d(3, 4, 3), tile="big")
    with pytest.raises(ValueError, match="sparse layers"):
        context_of(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="kernel must be one of"):
        GatherScatterExecutor(kernel="cudnn")
    with pytest.raises(ValueError, match="triton_dense_above"):
        SparseContext(triton_dense_above=1.5)


def test_folded_blocks_become_sparse_blocks():
    from argos.adapters.yolov5 import fold_batchnorm

    net = randomize_bn(YOLOv5Adapter(cfg="yolov5nu.yaml", optimize=False).module, seed=3)
    x = torch.rand(1, 3, 64, 96)
    mask = random_mask(1, 64, 96, 0.2, seed=7)
    ref = masked_reference(net, x, mask)  # with the BatchNorms
    unfolded_blocks = [m for m in convert(net).modules() if isinstance(m, SparseConvBlock)]
    net_f = copy.deepcopy(net)
    assert fold_batchnorm(net_f) == len(unfolded_blocks) > 0
    sparse_f = convert(net_f)
    blocks = [m for m in sparse_f.modules() if isinstance(m, SparseConvBlock)]
    assert len(blocks) == len(unfolded_blocks) and all(b.bn is None for b in blocks)
    with torch.inference_mode(), context_of(sparse_f).activate(mask):
        out = sparse_f(x)
    assert_close(out, ref, atol=2e-3, rtol=1e-4)


def test_executor_passes_its_kernel_choice_to_the_context():
    adapter = YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64)
    for kernel in ("torch", "auto"):
        _, ctx = GatherScatterExecutor(kernel=kernel).prepare(adapter)
        assert ctx.kernel == kernel
        assert not ctx.use_triton(torch.device("cpu"))  # the CPU runs the PyTorch paths


# ---- whole networks ----


@pytest.fixture(scope="module")
def yolov5nu_net():
    return randomize_bn(YOLOv5Adapter(cfg="yolov5nu.yaml").module, seed=1)


@pytest.fixture(scope="module")
def resnet18():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return randomize_bn(resnet18(weights=None), seed=2)


@pytest.mark.parametrize("name", ["resnet18", "yolov5nu_net", "yolov5n"])
def test_all_active_mask_equals_original_exactly(name, request):
    if name == "yolov5n":  # needs the checkpoint from the assets
        model = YOLOv5Adapter(weights=str(request.getfixturevalue("yolov5n_weights"))).module
    else:
        model = request.getfixturevalue(name)
    torch.manual_seed(0)
    shapes = {"resnet18": (2, 3, 64, 96), "yolov5nu_net": (2, 3, 128, 160), "yolov5n": (1, 3, 160, 128)}
    x = torch.rand(shapes[name])
    sparse = convert(model)
    ctx = context_of(sparse)
    with torch.inference_mode():
        ref = model(x)
        assert_equal(sparse(x), ref)  # no context active: the original layers
        with ctx.activate(torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool)):
            assert ctx.mode == "dense"
            assert_equal(sparse(x), ref)


@pytest.mark.parametrize("halo, tile", [(0.0, None), (6.0, None), (6.0, 2), (0.0, "im2col")])
def test_network_equals_masked_dense_reference(yolov5nu_net, halo, tile):
    model = yolov5nu_net
    sparse = convert(model, context=SparseContext(halo=halo), tile=tile)
    assert not any(isinstance(m, MaskedDense) for m in sparse.modules())
    x = torch.rand(2, 3, 128, 160)
    mask = random_mask(2, 128, 160, 0.05, seed=4)
    ref = masked_reference(model, x, mask, halo)
    ctx = context_of(sparse)
    with torch.inference_mode(), ctx.activate(mask):
        out = sparse(x)
        st = ctx.stats
    assert_close(out, ref, atol=2e-3, rtol=1e-4)  # box coordinates up to ~160 px
    assert st.macs[0] > 0 and st.macs[1] > 0
    if tile is not None and halo == 0:  # forced sparse paths really skip work
        assert st.macs[0] < 0.8 * st.dense_macs and st.macs[1] < 0.8 * st.dense_macs


def test_resnet_equals_masked_dense_reference(resnet18):
    sparse = convert(resnet18)
    x = torch.rand(1, 3, 96, 64)
    mask = random_mask(1, 96, 64, 0.1, seed=5)
    # Separate BatchNorms stay dense here: only the Conv2d outputs are masked.
    handles = [m.register_forward_hook(lambda m, i, o: o * ref_mask(mask, *o.shape[-2:])[:, None])
               for m in resnet18.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    try:
        with torch.inference_mode():
            ref = resnet18(x)
    finally:
        for h in handles:
            h.remove()
    with torch.inference_mode(), context_of(sparse).activate(mask):
        out = sparse(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_batch_of_different_masks_equals_frames_alone(yolov5nu_net):
    sparse = convert(yolov5nu_net)
    ctx = context_of(sparse)
    x = torch.rand(3, 3, 96, 128)
    masks = random_mask(3, 96, 128, 0.08, seed=6)
    masks[1] = True  # a full frame in a sparse batch
    with torch.inference_mode():
        with ctx.activate(masks):
            batch = sparse(x)
        for i in range(3):
            with ctx.activate(masks[i : i + 1]):
                alone = sparse(x[i : i + 1])
            assert_close([t[i : i + 1] for t in _flat(batch)], alone, atol=2e-3, rtol=1e-4)


def test_empty_mask_computes_nothing(yolov5nu_net):
    sparse = convert(yolov5nu_net)
    ctx = context_of(sparse)
    outs = {}

    def grab(name):
        return lambda m, i, o: outs.__setitem__(name, o)

    for name, m in sparse.named_modules():
        if isinstance(m, (SparseConv2d, SparseConvBlock)):
            m.register_forward_hook(grab(name))
    with torch.inference_mode(), ctx.activate(torch.zeros(1, 64, 64, dtype=torch.bool)):
        sparse(torch.rand(1, 3, 64, 64))
        assert ctx.mode == "empty" and ctx.stats.macs == [0.0]
    assert len(outs) > 50 and all(not o.any() for o in outs.values())


def test_grad_modes_agree(yolov5nu_net):
    sparse = convert(yolov5nu_net)
    ctx = context_of(sparse)
    x = torch.rand(1, 3, 64, 96)
    mask = random_mask(1, 64, 96, 0.1, seed=7)
    with torch.inference_mode(), ctx.activate(mask):
        a = sparse(x)
    with torch.no_grad(), ctx.activate(mask):
        b = sparse(x)
    assert_equal(a, b)


def test_folded_weights_follow_state_dict_changes():
    from ultralytics.nn.modules.conv import Conv

    torch.manual_seed(0)
    block = randomize_bn(Conv(4, 4, 3))
    sparse = convert(block)
    x, mask = torch.randn(1, 4, 16, 16), random_mask(1, 16, 16, 0.2, seed=8)
    with torch.no_grad(), context_of(sparse).activate(mask):
        sparse(x)  # folds the current weights
    block.bn.running_mean.add_(1.0)
    sparse.load_state_dict(block.state_dict())
    with torch.no_grad(), context_of(sparse).activate(mask):
        out = sparse(x)
        torch.testing.assert_close(out, block(x) * ref_mask(mask, 16, 16)[:, None], atol=1e-5, rtol=1e-5)


# ---- the executor ----


def test_letterbox_mask_maps_boxes_and_pads():
    image = np.zeros((100, 200, 3), np.uint8)
    _, meta = letterbox(image, img_size=64, stride=32, rect=True)  # 200x100 -> 64x32, no padding
    mask = torch.zeros(100, 200, dtype=torch.bool)
    mask[20:40, 50:100] = True
    out = letterbox_mask(mask, meta, (48, 64))  # batch padding below
    ys, xs = out.nonzero(as_tuple=True)
    assert (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())) == (6, 12, 16, 31)
    assert not out[32:].any()
    _, meta = letterbox(np.zeros((50, 100, 3), np.uint8), img_size=64, stride=32, rect=False)  # pad top/bottom 16
    out = letterbox_mask(torch.ones(50, 100, dtype=torch.bool), meta, (64, 64))
    assert out[16:48].all() and not out[:16].any() and not out[48:].any()


@pytest.fixture(scope="module")
def yolov5n_own(yolov5n_weights):
    """A private adapter: the session fixture must not see this module's conversions."""
    return YOLOv5Adapter(weights=str(yolov5n_weights))


def test_full_proposer_equals_unwrapped_detector(yolov5n_own, coco128):
    images = [coco128[i].image for i in range(2)]
    refs = [yolov5n_own.predict([im])[0] for im in images]
    fast = argos.wrap(yolov5n_own, proposer="full", executor="gather_scatter")
    for im, ref in zip(images, refs):
        got = fast(im)
        assert len(ref) > 0 and len(got) == len(ref)
        assert torch.equal(got.boxes, ref.boxes) and torch.equal(got.scores, ref.scores)
        assert torch.equal(got.labels, ref.labels)
    st = fast.executor.last_stats
    assert st["gflops"] == [pytest.approx(yolov5n_own.flops(st["input_hw"]))]
    assert not any(isinstance(m, SparseConv2d) for m in yolov5n_own.module.modules())  # converted a copy


def test_partial_mask_detections_stay_inside(yolov5n_own, coco128):
    s = coco128[1]
    h, w = s.image.shape[:2]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, : w // 2] = True
    ex = GatherScatterExecutor()
    (dets,) = ex.run(yolov5n_own, [s.image], [RegionProposals(mask)])
    centres_x = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
    assert len(dets) > 0 and bool((centres_x < w // 2).all())
    st = ex.last_stats
    dense = yolov5n_own.flops(st["input_hw"])
    assert 0.3 * dense < st["gflops"][0] < 0.8 * dense
    assert st["density"][0] == pytest.approx(0.5, abs=0.05)
    assert set(st["breakdown"]) == {"forward", "index", "gather", "conv", "scatter", "dense"}
    # Same as the masked-dense network, mapped through the same pre/post-processing.
    (ref,) = GatherScatterExecutor(tile="dense").run(yolov5n_own, [s.image], [RegionProposals(mask)])
    got, ref = dets[dets.scores >= 0.25], ref[ref.scores >= 0.25]
    assert len(got) == len(ref) > 0
    torch.testing.assert_close(got.boxes, ref.boxes, atol=1e-2, rtol=1e-4)


def test_empty_and_mixed_batches(yolov5n_own, coco128):
    image = coco128[1].image
    h, w = image.shape[:2]
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[1, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    masks[2, :, : 2 * w // 3] = True
    masks[3] = True
    ex = GatherScatterExecutor()
    (empty,) = ex.run(yolov5n_own, [image], [RegionProposals(masks[0])])
    assert len(empty) == 0 and ex.last_stats["gflops"] == [0.0] and ex.last_stats["detector_ms"] == 0.0
    batch = ex.run(yolov5n_own, [image] * 4, [RegionProposals(m) for m in masks])
    gflops = ex.last_stats["gflops"]
    assert len(batch[0]) == 0 and all(len(d) > 0 for d in batch[1:])
    assert gflops[0] == 0.0 < gflops[1] < gflops[2] < gflops[3]
    # Frames are independent: each one alone gives the same detections.
    for k in (1, 2):
        (alone,) = ex.run(yolov5n_own, [image], [RegionProposals(masks[k])])
        assert len(alone) == len(batch[k])
        torch.testing.assert_close(alone.boxes, batch[k].boxes, atol=1e-2, rtol=1e-4)
    # A whole frame in a sparse batch differs from the unwrapped detector only through its
    # letterbox padding, which is inactive here.
    (ref,) = yolov5n_own.predict([image])
    full, ref = batch[3][batch[3].scores >= 0.25], ref[ref.scores >= 0.25]
    assert len(full) == len(ref) > 0 and torch.equal(full.labels, ref.labels)
    from torchvision.ops import box_iou

    assert bool((box_iou(full.boxes, ref.boxes).diagonal() > 0.9).all())


def test_inactive_cells_score_zero_in_ultralytics_heads():
    from argos.sparse.masks import layer_mask

    adapter = YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=128, conf=0.0)
    ex = GatherScatterExecutor()
    runner, ctx = ex.prepare(adapter)
    floored = [m for m in runner.module.modules() if isinstance(m, SparseConv2d) and m.inactive_value < 0]
    assert len(floored) == 3 and all(m.out_channels == 80 for m in floored)
    assert not any(isinstance(m, SparseConv2d) for m in adapter.module.modules())  # the user's model is untouched
    mask = random_mask(1, 96, 128, 0.05, seed=9)
    with torch.inference_mode(), ctx.activate(mask):
        raw = runner.forward(torch.rand(1, 3, 96, 128))
    scored = int((raw[0, 4:].amax(0) > 0).sum())
    assert scored == sum(int(layer_mask(mask, 96 // s, 128 // s).sum()) for s in (8, 16, 32))


def test_near_full_masks_run_dense(yolov5n_own, coco128):
    s = coco128[1]
    h, w = s.image.shape[:2]
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[: h // 10] = False
    for dense_above, mode in ((0.75, "dense"), (1.0, "sparse")):
        ex = GatherScatterExecutor(dense_above=dense_above)
        (dets,) = ex.run(yolov5n_own, [s.image], [RegionProposals(mask)])
        st = ex.last_stats
        assert st["mode"] == mode and len(dets) > 0
        assert bool(((dets.boxes[:, 1] + dets.boxes[:, 3]) / 2 >= h // 10).all())
        if mode == "dense":
            assert st["gflops"][0] == pytest.approx(yolov5n_own.flops(st["input_hw"]))
            assert set(st["breakdown"]) == {"forward", "dense"}
    with pytest.raises(ValueError, match="dense_above"):
        GatherScatterExecutor(dense_above=1.5)
