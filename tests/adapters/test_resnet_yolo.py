"""ResNet-YOLO adapter: architecture, YOLOv5 decoding, executors, FLOPs against fvcore, weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision

import argos
from argos import RegionProposals
from argos.adapters.resnet_yolo import ResNetYOLO, ResNetYOLOAdapter, ResNetYOLOConfig, YOLOV5_ANCHORS
from argos.assets import assets_dir
from argos.executors.gather_scatter import GatherScatterExecutor, letterbox_mask
from argos.structures import Detections


def real_image(size: int = 160) -> np.ndarray:
    """A COCO128 image (long side ``size``) when the assets are here, else a synthetic scene."""
    root = assets_dir()
    path = None if root is None else root / "data/coco128/images/train2017/000000000036.jpg"
    if path is not None and path.is_file():
        im = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        r = size / max(im.shape[:2])
        return cv2.resize(im, (round(im.shape[1] * r), round(im.shape[0] * r)), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    im = np.full((size * 3 // 4, size, 3), 90, np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, size - 30), rng.integers(0, size * 3 // 4 - 30)
        im[y : y + 30, x : x + 24] = rng.integers(0, 255, 3, dtype=np.uint8)
    return im


@pytest.fixture(scope="module")
def adapter() -> ResNetYOLOAdapter:
    torch.manual_seed(0)
    # conf near 0: a random-init head scores ~1e-5, and the comparisons need detections.
    return ResNetYOLOAdapter(depth=18, img_size=128, conf=1e-7)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return real_image()


def assert_close_dets(got: Detections, ref: Detections) -> None:
    assert got.image_size == ref.image_size
    assert len(ref) > 0 and len(got) == len(ref)
    torch.testing.assert_close(got.boxes, ref.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-6, rtol=1e-4)
    assert torch.equal(got.labels, ref.labels)


# ---- architecture ----


@pytest.mark.parametrize("depth, channels", [(18, (128, 256, 512)), (50, (512, 1024, 2048))])
def test_backbone_levels(depth, channels):
    net = ResNetYOLO(ResNetYOLOConfig(depth=depth, neck_channels=(16, 32, 64), num_classes=3)).eval()
    with torch.no_grad():
        c3, c4, c5 = net.backbone(torch.zeros(1, 3, 64, 96))
    assert [c.shape[1] for c in (c3, c4, c5)] == list(channels)
    assert [tuple(c.shape[-2:]) for c in (c3, c4, c5)] == [(8, 12), (4, 6), (2, 3)]


def test_adapter_contract(adapter):
    assert adapter.stride == 32 and adapter.pad_value == 114 and adapter.img_size == 128
    assert adapter.head_format == "anchor"
    assert len(adapter.names) == 80 and adapter.names[0] == "person" and adapter.names[79] == "toothbrush"
    assert not adapter.module.training
    assert adapter.module.head.anchors.tolist()[0][0] == [10.0, 13.0]  # YOLOv5 P3 anchors, pixels


def test_config_validation():
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNetYOLOConfig(depth=19)
    with pytest.raises(ValueError, match="anchors"):
        ResNetYOLOConfig(anchors=YOLOV5_ANCHORS[:2])
    with pytest.raises(ValueError, match="names"):
        ResNetYOLOConfig(num_classes=2, names=("a",))
    with pytest.raises(ValueError, match="disagrees"):
        ResNetYOLOAdapter(ResNetYOLOConfig(depth=18), depth=50)
    with pytest.raises(TypeError, match="ResNetYOLOConfig"):
        ResNetYOLOAdapter(config={"depth": 18})


def test_head_decodes_like_yolov5():
    """Eval output = YOLOv5's decoding of the raw map, written out for single cells."""
    torch.manual_seed(1)
    net = ResNetYOLO(ResNetYOLOConfig(depth=18, num_classes=3, neck_channels=(8, 16, 32))).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        net.head.train()  # raw maps, the rest of the network still in eval mode
        maps = net(x)
        net.head.eval()
        pred = net(x)
    shapes = [(8, 12), (4, 6), (2, 3)]
    assert pred.shape == (1, 3 * sum(h * w for h, w in shapes), 8)
    offset = 0
    for level, ((ny, nx), stride) in enumerate(zip(shapes, (8, 16, 32))):
        raw = maps[level]
        assert raw.shape == (1, 3, ny, nx, 8)
        for a, j, i in [(0, 0, 0), (2, ny - 1, nx - 1), (1, ny // 2, 1)]:
            s = torch.sigmoid(raw[0, a, j, i])
            aw, ah = YOLOV5_ANCHORS[level][2 * a : 2 * a + 2]
            expected = torch.tensor([
                (2 * s[0] - 0.5 + i) * stride, (2 * s[1] - 0.5 + j) * stride,
                (2 * s[2]) ** 2 * aw, (2 * s[3]) ** 2 * ah, *s[4:],
            ])  # fmt: skip
            got = pred[0, offset + (a * ny + j) * nx + i]
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
        offset += 3 * ny * nx


# ---- inference ----


def test_predict_real_image(adapter, image):
    (d,) = adapter([image])
    assert isinstance(d, Detections) and d.image_size == image.shape[:2]
    assert 0 < len(d) <= adapter.max_det
    h, w = image.shape[:2]
    assert bool((d.boxes[:, [0, 2]] <= w).all() and (d.boxes[:, [1, 3]] <= h).all() and (d.boxes >= 0).all())
    batch, metas = adapter.preprocess([image])
    assert max(batch.shape[-2:]) == 128 and batch.shape[-2] % 32 == 0 and batch.shape[-1] % 32 == 0


def test_preprocess_native_keeps_scale(adapter):
    canvas = np.full((64, 96, 3), 114, np.uint8)
    batch, (meta,) = adapter.preprocess_native([canvas])
    assert tuple(batch.shape[-2:]) == (64, 96) and meta.ratio == (1.0, 1.0) and meta.pad == (0, 0)


@pytest.mark.parametrize("executor", ["masked", "packed_crops", "gather_scatter"])
def test_full_proposer_equals_unwrapped(adapter, image, executor):
    ref = adapter.predict([image])[0]
    fast = argos.wrap(adapter, proposer="full", executor=executor)
    assert_close_dets(fast(image), ref)
    other = image[:, ::-1].copy()  # a batch of two frames
    for got, want in zip(fast([image, other]), adapter.predict([image, other])):
        assert_close_dets(got, want)


def _pooled(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bool Tensor[B, H, W] -> [B, h, w]: a cell is active when any pixel of its span is
    (spans are exact: the network's maps divide the input evenly)."""
    B, H, W = mask.shape
    return mask.view(B, h, H // h, w, W // w).any(4).any(2)


def test_gather_scatter_partial_mask_equals_masked_dense_reference(adapter, image):
    """Raw predictions of the converted network under a half-frame mask equal the original
    network with every conv output multiplied by its layer's mask (forward hooks)."""
    h, w = image.shape[:2]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[: h // 2, w // 3 :] = True
    ex = GatherScatterExecutor(dense_above=1.0)
    runner, ctx = ex.prepare(adapter)
    batch, (meta,) = adapter.preprocess([image])
    net_mask = letterbox_mask(mask, meta, tuple(batch.shape[-2:]))[None]
    with torch.inference_mode(), ctx.activate(net_mask):
        got = runner.forward(batch)
        assert ctx.mode == "sparse"
        executed, dense = ctx.stats.macs[0], ctx.stats.dense_macs
    assert 0.2 * dense < executed < 0.8 * dense

    def hook(m, inputs, out):
        return out * _pooled(net_mask, *out.shape[-2:])[:, None].to(out.dtype)

    handles = [m.register_forward_hook(hook) for m in adapter.module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        ref = adapter.forward(batch)
    finally:
        for hd in handles:
            hd.remove()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-3)

    (dets,) = ex.run(adapter, [image], [RegionProposals(mask)])
    cx = ((dets.boxes[:, 0] + dets.boxes[:, 2]) / 2).long()
    cy = ((dets.boxes[:, 1] + dets.boxes[:, 3]) / 2).long()
    assert len(dets) > 0 and bool(mask[cy.clamp(max=h - 1), cx.clamp(max=w - 1)].all())


# ---- FLOPs ----


@pytest.mark.parametrize("hw", [(128, 128), (96, 160)])
def test_flops_match_fvcore(adapter, hw):
    from fvcore.nn import FlopCountAnalysis

    counter = FlopCountAnalysis(adapter.module, torch.zeros(1, 3, *hw))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    reference = 2 * counter.total() / 1e9  # fvcore counts one multiply-accumulate as one flop
    assert adapter.flops(hw) == pytest.approx(reference, rel=0.05)
    # Convs alone: exactly 2 x fvcore's conv count.
    assert adapter.flops(hw) == pytest.approx(2 * counter.by_operator()["conv"] / 1e9, rel=1e-6)


# ---- weights ----


def test_backbone_weights_from_torchvision_state_dict(tmp_path):
    torch.manual_seed(2)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    a = ResNetYOLOAdapter(depth=18, img_size=64, backbone_weights=path)
    ours = a.module.backbone.state_dict()
    theirs = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())
    # The backbone computes what torchvision's layers compute.
    tv.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        got = a.module.backbone(x)[2]
    torch.testing.assert_close(got, want)


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ResNetYOLOAdapter(depth=18, backbone_weights=tmp_path / "missing.pth")
    r34 = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), r34)
    with pytest.raises(ValueError, match="unexpected keys: layer1.2"):
        ResNetYOLOAdapter(depth=18, backbone_weights=r34)
    r50 = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(ValueError, match="missing keys|shape mismatches"):
        ResNetYOLOAdapter(depth=18, backbone_weights=r50)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable"):
        ResNetYOLOAdapter(depth=18, backbone_weights=junk)


def test_save_and_load_checkpoint(adapter, image, tmp_path):
    path = tmp_path / "ry.pt"
    adapter.save(path)
    loaded = ResNetYOLOAdapter(weights=path, img_size=128, conf=1e-7)
    assert loaded.config == adapter.config
    assert_close_dets(loaded.predict([image])[0], adapter.predict([image])[0])
    with pytest.raises(ValueError, match="disagrees"):
        ResNetYOLOAdapter(weights=path, depth=50)
    with pytest.raises(ValueError, match="not both"):
        ResNetYOLOAdapter(weights=path, backbone_weights=path)


def test_bad_checkpoints(adapter, tmp_path):
    with pytest.raises(FileNotFoundError):
        ResNetYOLOAdapter(weights=tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    adapter.save(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable"):
        ResNetYOLOAdapter(weights=truncated)
    plain = tmp_path / "plain.pt"
    torch.save(adapter.module.state_dict(), plain)
    with pytest.raises(ValueError, match="not an argos"):
        ResNetYOLOAdapter(weights=plain)
    ckpt = torch.load(good, weights_only=True)
    ckpt["state_dict"].pop("head.m.0.bias")
    ckpt["state_dict"]["neck.lat5.0.weight"] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="missing keys: head.m.0.bias.*shape mismatches.*neck.lat5.0.weight"):
        ResNetYOLOAdapter(weights=bad)
    ckpt = torch.load(good, weights_only=True)
    ckpt["format"] = "argos.dynconv"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="not 'argos.resnet_yolo'"):
        ResNetYOLOAdapter(weights=bad)


def test_registry_builds_it():
    a = argos.wrap("resnet_yolo", depth=18, img_size=64).adapter
    assert isinstance(a, ResNetYOLOAdapter) and a.config.depth == 18
