"""Executors with a segmentation adapter (PSPNet-18, random init, 128 px): the full proposer
reproduces the unwrapped model, pixels off the mask are background, gather_scatter equals a
masked-dense reference written out here, packed crops equal direct crop runs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import argos
from argos import RegionProposals, SegmentationMap
from argos.adapters.pspnet import PoolBranch, PSPNetAdapter
from argos.executors.gather_scatter import GatherScatterExecutor, context_of, convert, letterbox_mask
from argos.executors.masked import MaskedExecutor
from argos.executors.packed_crops import PackedCropsExecutor
from argos.sparse import SparseConv2d
from argos.testing import blocky_image as image, reference_layer_mask as ref_mask


EXECUTORS = ["masked", "gather_scatter", "packed_crops"]


@pytest.fixture(scope="module")
def adapter(pspnet18) -> PSPNetAdapter:
    return pspnet18




def box_mask(h: int, w: int, *boxes) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes:
        m[y1:y2, x1:x2] = True
    return m


def assert_same(a: SegmentationMap, b: SegmentationMap) -> None:
    assert a.image_size == b.image_size
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)


# ---- the full proposer reproduces the unwrapped model ----


@pytest.mark.parametrize("executor", EXECUTORS)
def test_full_proposer_equals_unwrapped(adapter, executor):
    ims = [image(96, 128, 1), image(100, 150, 2)]
    fast = argos.wrap(adapter, proposer="full", executor=executor)
    for im in ims:
        got = fast(im)
        assert isinstance(got, SegmentationMap)
        assert_same(got, adapter.predict([im])[0])
        st = fast.last_stats
        assert st.area_processed == 1.0 and st.images == 1 and st.detector_ms > 0
        assert st.gflops == pytest.approx(adapter.flops(fast.executor.last_stats["input_hw"]))
    # masked and packed_crops run a batch of two sizes one size at a time: each image as it is
    # alone, never padded to the other's letterbox. gather_scatter pads them to one input.
    refs = adapter.predict(ims) if executor == "gather_scatter" else [adapter.predict([im])[0] for im in ims]
    for got, ref in zip(fast(ims), refs):
        assert_same(got, ref)


# ---- pixels off the mask ----


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("background", [None, 0])
def test_pixels_off_the_mask_are_background(adapter, executor, background):
    im = image(100, 150, 3)
    mask = box_mask(100, 150, (10, 20, 60, 70), (100, 5, 140, 40))
    ex = argos.EXECUTORS.build(executor, background=background)
    (seg,) = ex.run(adapter, [im], [RegionProposals(mask)])
    assert seg.image_size == (100, 150) and seg.scores.shape == (19, 100, 150)
    expected = 255 if background is None else background
    assert bool((seg.labels[~mask] == expected).all())
    assert float(seg.scores[:, ~mask].abs().max()) == 0.0
    on = seg.labels[mask]
    assert bool(((on >= 0) & (on < 19)).all())
    torch.testing.assert_close(seg.scores[:, mask].sum(0), torch.ones(int(mask.sum())), atol=1e-4, rtol=0)
    assert torch.equal(seg.labels[mask], seg.scores[:, mask].argmax(0))
    assert 0 < ex.last_stats["gflops"][0]


def test_masked_runs_the_model_on_the_painted_image(adapter):
    im = image(100, 150, 4)
    mask = box_mask(100, 150, (30, 10, 90, 80))
    (seg,) = MaskedExecutor().run(adapter, [im], [RegionProposals(mask)])
    painted = im.copy()
    painted[~mask.numpy()] = (124, 116, 104)  # the ImageNet mean colour
    (ref,) = adapter.predict([painted])
    assert torch.equal(seg.labels[mask], ref.labels[mask])
    torch.testing.assert_close(seg.scores[:, mask], ref.scores[:, mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_empty_mask_is_all_background(adapter, executor):
    im = image(64, 80, 5)
    ex = argos.EXECUTORS.build(executor)
    (seg,) = ex.run(adapter, [im], [RegionProposals(torch.zeros(64, 80, dtype=torch.bool))])
    assert bool((seg.labels == 255).all()) and seg.scores.shape == (19, 64, 80) and float(seg.scores.abs().max()) == 0
    assert ex.last_stats["gflops"] == [0.0]


def test_background_is_validated(adapter):
    with pytest.raises(ValueError, match="background"):
        MaskedExecutor(background=-1)
    with pytest.raises(ValueError, match="background"):
        GatherScatterExecutor(background=1.5)
    im = image(64, 80)
    with pytest.raises(ValueError, match=r"class id in \[0, 19\)"):
        PackedCropsExecutor(background=40).run(adapter, [im], [RegionProposals(box_mask(64, 80, (0, 0, 8, 8)))])


# ---- gather_scatter against the masked-dense reference ----


def masked_dense_logits(net: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The original network with every conv output outside the pyramid pooling branches
    multiplied by its layer's mask; the branches (and everything else) run densely."""
    skip = {id(m) for b in net.modules() if isinstance(b, PoolBranch) for m in b.modules()}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and id(m) not in skip]
    cache = {}

    def hook(m, inputs, out):
        key = tuple(out.shape[-2:])
        if key not in cache:
            cache[key] = ref_mask(mask, *key)[:, None].to(out.dtype)
        return out * cache[key]

    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            return net(x)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("hw", [(96, 128), (64, 128)])
def test_sparse_network_equals_masked_dense_reference(adapter, hw):
    x, _ = adapter.preprocess([image(*hw, seed=6)])
    assert tuple(x.shape[-2:]) == hw
    mask = box_mask(*hw, (8, 8, 40, 30), (70, 40, 100, 60))[None]
    sparse = convert(adapter.module, exclude=adapter.sparse_exclude)
    # The pyramid pooling branches stay dense: their convs run on pooled bins, not image positions.
    branches = [b for b in sparse.modules() if isinstance(b, PoolBranch)]
    assert branches and not any(isinstance(m, SparseConv2d) for b in branches for m in b.modules())
    ctx = context_of(sparse)
    with torch.inference_mode(), ctx.activate(mask):
        out = sparse(x)
        st = ctx.stats
    ref = masked_dense_logits(adapter.module, x, mask)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert st.macs[0] < 0.8 * st.dense_macs  # it skipped work
    # The reference differs from the dense model, so the comparison is not vacuous.
    with torch.inference_mode():
        assert not torch.allclose(ref, adapter.module(x), atol=1e-2)


def test_gather_scatter_executor_equals_reference_labels(adapter):
    im = image(100, 150, 7)
    mask = box_mask(100, 150, (20, 10, 70, 60))
    ex = GatherScatterExecutor(dense_above=1.0)
    (seg,) = ex.run(adapter, [im], [RegionProposals(mask)])
    assert ex.last_stats["mode"] == "sparse"
    assert ex.last_stats["gflops"][0] < 0.8 * adapter.flops(ex.last_stats["input_hw"])
    x, metas = adapter.preprocess([im])
    net_mask = letterbox_mask(mask, metas[0], tuple(x.shape[-2:]))[None]
    (ref,) = adapter.postprocess(masked_dense_logits(adapter.module, x, net_mask), metas)
    assert torch.equal(seg.labels[mask], ref.labels[mask])
    torch.testing.assert_close(seg.scores[:, mask], ref.scores[:, mask], atol=1e-4, rtol=0)
    assert bool((seg.labels[~mask] == 255).all())


# ---- packed crops ----


def test_packed_crops_paste_back_equals_direct_crop_runs(adapter):
    """Frames the letterbox leaves as they are (96 x 128 at img_size 128), one stride-aligned
    48 x 48 region each, canvases of exactly that size: each canvas is the crop itself."""
    ims = [image(96, 128, 8), image(96, 128, 9)]
    regions = [(32, 16, 80, 64), (8, 40, 56, 88)]
    props = [RegionProposals(box_mask(96, 128, r)) for r in regions]
    ex = PackedCropsExecutor(margin=0, gap=0, canvas_sizes=[(48, 48)])
    out = ex.run(adapter, ims, props)
    assert ex.last_stats["canvases"] == 2 and ex.last_stats["fallback"] == [False, False]
    for im, (x1, y1, x2, y2), seg, p in zip(ims, regions, out, props):
        batch, metas = adapter.preprocess_native([im[y1:y2, x1:x2]])
        (direct,) = adapter.postprocess(adapter.forward(batch), metas)
        assert torch.equal(seg.labels[y1:y2, x1:x2], direct.labels)
        torch.testing.assert_close(seg.scores[:, y1:y2, x1:x2], direct.scores, atol=1e-4, rtol=0)
        assert len(direct.labels.unique()) > 1
        assert bool((seg.labels[~p.mask] == 255).all())


def test_packed_crops_on_a_resized_frame(adapter):
    im = image(200, 300, 10)
    mask = box_mask(200, 300, (20, 30, 90, 110), (200, 120, 260, 190))
    ex = PackedCropsExecutor()
    (seg,) = ex.run(adapter, [im], [RegionProposals(mask)])
    assert ex.last_stats["canvases"] >= 1 and not ex.last_stats["fallback"][0]
    assert seg.image_size == (200, 300)
    assert bool((seg.labels[~mask] == 255).all())
    torch.testing.assert_close(seg.scores[:, mask].sum(0), torch.ones(int(mask.sum())), atol=1e-4, rtol=0)
    assert torch.equal(seg.labels[mask], seg.scores[:, mask].argmax(0))


class LocalAdapter(PSPNetAdapter):
    """PSPNet's pre- and post-processing around a network whose output cells each see only
    their own 8 x 8 input cell: crops on the stride grid then give the full run's cells."""

    def __init__(self) -> None:
        super().__init__(depth=18, img_size=128)
        torch.manual_seed(0)
        self.local = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 19, 1)).eval()

    @property
    def module(self) -> nn.Module:
        return self.local

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.local(batch)


def test_packed_crops_map_back_to_the_original_frame():
    """Resized and padded frames (200 x 300 -> 85 x 128 + padding): with a local network the
    pasted crops agree with the full-frame run away from the crop borders."""
    adapter = LocalAdapter()
    im = image(200, 300, 11)
    regions = [(20, 30, 110, 120), (180, 100, 290, 190)]
    mask = box_mask(200, 300, *regions)
    ex = PackedCropsExecutor(margin=0)
    (seg,) = ex.run(adapter, [im], [RegionProposals(mask)])
    assert ex.last_stats["crops"] == [2] and not ex.last_stats["fallback"][0]
    (full,) = adapter.predict([im])
    inner = box_mask(200, 300, *[(x1 + 24, y1 + 24, x2 - 24, y2 - 24) for x1, y1, x2, y2 in regions])
    agree = float((seg.labels[inner] == full.labels[inner]).float().mean())
    assert agree > 0.99  # a one-pixel offset in the paste gives about 0.94
    assert len(full.labels[inner].unique()) > 2
    torch.testing.assert_close(seg.scores[:, inner], full.scores[:, inner], atol=5e-3, rtol=0)


# ---- wrap ----


def test_wrap_builds_pspnet_by_name():
    torch.manual_seed(0)
    fast = argos.wrap("pspnet", proposer="full", executor="masked", depth=18, img_size=64)
    seg = fast(image(48, 64, 12))
    assert isinstance(seg, SegmentationMap) and seg.image_size == (48, 64)
    assert torch.equal(seg.labels, fast.adapter.predict([image(48, 64, 12)])[0].labels)
    assert fast.last_stats.gflops == pytest.approx(fast.adapter.flops((48, 64)))


def test_wrap_refuses_teacher_proposers_for_segmentation(adapter):
    with pytest.raises(ValueError, match="cannot use a segmentation adapter"):
        argos.wrap(adapter, proposer="distill", executor="masked")
