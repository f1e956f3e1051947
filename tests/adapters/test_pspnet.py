"""PSPNet adapter: architecture, pre/post-processing against hand-written references, FLOPs
against fvcore, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from argos import ADAPTERS, SegmentationMap
from argos.adapters.pspnet import (
    CITYSCAPES_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PSPNet,
    PSPNetAdapter,
    PSPNetConfig,
)
from argos.adapters.yolov5 import letterbox
from argos.testing import blocky_image as image, randomize_bn


@pytest.fixture(scope="module")
def adapter(pspnet18) -> PSPNetAdapter:
    return pspnet18




def test_registry_builds_the_common_suite_kwargs():
    a = ADAPTERS.build("pspnet", depth=18, img_size=128)
    assert isinstance(a, PSPNetAdapter)
    assert a.task == "segmentation" and a.stride == 8 and a.img_size == 128
    assert [a.names[i] for i in range(19)] == list(CITYSCAPES_CLASSES) and a.ignore_index == 255
    assert a.class_ids(["car", "person"]).tolist() == [13, 11]
    assert not a.module.training


@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_backbone_has_output_stride_8(depth):
    net = PSPNet(PSPNetConfig(depth=depth, num_classes=5)).eval()
    with torch.inference_mode():
        out = net(torch.rand(1, 3, 48, 80))
    assert out.shape == (1, 5, 6, 10)
    convs = [(n, m) for n, m in net.backbone.named_modules() if isinstance(m, nn.Conv2d)]
    dil = {(n, m.dilation) for n, m in convs if m.kernel_size == (3, 3)}
    assert all(m.stride == (1, 1) for n, m in net.backbone.layer3.named_modules() if isinstance(m, nn.Conv2d))
    assert all(m.stride == (1, 1) for n, m in net.backbone.layer4.named_modules() if isinstance(m, nn.Conv2d))
    # torchvision's rule: the conv that carried the stride keeps the previous dilation.
    strided = "layer3.0.conv1" if depth == 18 else "layer3.0.conv2"
    assert {(strided, (1, 1)), ("layer3.1.conv2", (2, 2)), ("layer4.1.conv2", (4, 4))} <= dil
    assert (strided.replace("layer3", "layer4"), (2, 2)) in dil
    # Same parameter names and shapes as torchvision's ResNet, less fc.
    from torchvision.models import resnet18, resnet50

    tv = (resnet18 if depth == 18 else resnet50)(weights=None).state_dict()
    own = net.backbone.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in tv.items() if not k.startswith("fc.")}
    # Pyramid pooling bins and the concatenated width.
    assert [b[0].output_size for b in net.ppm.branches] == [1, 2, 3, 6]
    c4 = 512 if depth == 18 else 2048
    assert net.head[0].in_channels == c4 * 2


def test_dilated_basic_blocks_keep_the_receptive_field():
    """A dilated stage of stride 1 equals the strided stage on the sub-sampled grid: at the
    positions the strided net computes, both see the same input pixels."""
    from torchvision.models import resnet18

    from argos.adapters.pspnet import _dilate_basic_layer

    torch.manual_seed(0)
    strided = randomize_bn(resnet18(weights=None)).layer3
    dilated = randomize_bn(resnet18(weights=None)).layer3
    dilated.load_state_dict(strided.state_dict())
    _dilate_basic_layer(dilated, 1, 2)
    x = torch.rand(1, 128, 16, 16)
    with torch.inference_mode():
        a, b = strided(x), dilated(x)
    assert b.shape[-2:] == (16, 16)
    # Away from the border (where padding differs), the even positions hold the strided output.
    torch.testing.assert_close(b[..., 4:12:2, 4:12:2], a[..., 2:6, 2:6], atol=1e-5, rtol=1e-5)


def test_letterbox_geometry_and_pad_colour(adapter):
    im = image(100, 150)
    out, meta = adapter.letterbox(im)
    ref, ref_meta = letterbox(im, 128, 8, True, 0)
    assert meta == ref_meta and out.shape == ref.shape == (88, 128, 3)
    (left, top) = meta.pad
    assert (left, top) == (0, 1)
    assert (out[0] == adapter.pad_value).all() and (out[-1] == adapter.pad_value).all()
    np.testing.assert_array_equal(out[top : top + 85], ref[top : top + 85])
    # The pad colour is the ImageNet mean: about 0 after normalisation.
    batch, _ = adapter.preprocess([im])
    assert batch[0, :, 0].abs().max() < 0.01


def test_postprocess_equals_a_hand_written_pipeline(adapter):
    """An image the letterbox leaves as is (96 x 128: scale 1, no padding)."""
    im = image(96, 128, seed=3)
    (seg,) = adapter.predict([im])
    x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = F.interpolate(adapter.module(x), size=(96, 128), mode="bilinear", align_corners=False)[0]
    assert isinstance(seg, SegmentationMap) and seg.image_size == (96, 128)
    torch.testing.assert_close(seg.scores, logits.softmax(0), atol=1e-5, rtol=1e-4)
    agree = (seg.labels == logits.argmax(0)).float().mean()
    assert agree > 0.999  # exact up to float ties
    assert len(seg.labels.unique()) > 1  # a non-trivial output, so the comparison means something


def test_outputs_at_original_size_for_any_shape_and_batch(adapter):
    ims = [image(100, 150, 1), image(37, 20, 2), image(128, 128, 3)]
    out = adapter.predict(ims)
    for im, seg in zip(ims, out):
        assert seg.image_size == im.shape[:2]
        assert seg.scores.shape == (19, *im.shape[:2])
        torch.testing.assert_close(seg.scores.sum(0), torch.ones(im.shape[:2]), atol=1e-5, rtol=0)
        assert torch.equal(seg.labels, seg.scores.argmax(0))
        assert seg.ignore_index == 255
    # Alone, an image that needs no batch padding gives the same result as in the batch.
    (alone,) = adapter.predict([ims[2]])
    assert torch.equal(alone.labels, out[2].labels)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # fvcore traces with torch.jit
@pytest.mark.parametrize("hw", [(128, 128), (64, 96)])
def test_flops_within_5_percent_of_fvcore(adapter, hw):
    from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(adapter.module.eval(), torch.zeros(1, 3, *hw))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    ref = 2 * fca.total() / 1e9  # fvcore counts one multiply-accumulate as one flop
    assert adapter.flops(hw) == pytest.approx(ref, rel=0.05)
    conv_only = 2 * fca.by_operator()["conv"] / 1e9
    assert adapter.flops(hw) == pytest.approx(conv_only, rel=1e-6)


def test_aux_head_only_in_training():
    torch.manual_seed(0)
    net = PSPNet(PSPNetConfig(depth=18, num_classes=4, aux_head=True))
    x = torch.rand(2, 3, 32, 48)
    main, aux = net.train()(x)
    assert main.shape == aux.shape == (2, 4, 4, 6)
    with torch.inference_mode():
        assert net.eval()(x).shape == (2, 4, 4, 6)
    a = PSPNetAdapter(config=PSPNetConfig(depth=18, num_classes=4, aux_head=True), img_size=64)
    b = PSPNetAdapter(depth=18, num_classes=4, img_size=64)
    assert a.flops((64, 64)) == pytest.approx(b.flops((64, 64)))  # aux head not counted


def test_save_and_load_full_checkpoint(adapter, tmp_path):
    path = tmp_path / "psp.pt"
    adapter.save(path)
    loaded = PSPNetAdapter(weights=path, img_size=128)
    assert loaded.config == adapter.config and loaded.names == adapter.names
    im = image(70, 90, 4)
    a, b = adapter.predict([im])[0], loaded.predict([im])[0]
    assert torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores)

    names = [f"k{i}" for i in range(3)]
    small = PSPNetAdapter(depth=18, names=names, img_size=64)
    small.save(tmp_path / "small.pt")
    again = PSPNetAdapter(weights=tmp_path / "small.pt", img_size=64)
    assert again.num_classes == 3 and list(again.names.values()) == names
    with pytest.raises(ValueError, match="does not match"):
        PSPNetAdapter(weights=tmp_path / "small.pt", depth=50)


def test_backbone_weights_load_torchvision_state_dicts(tmp_path):
    from torchvision.models import resnet18, resnet50

    torch.manual_seed(1)
    tv = resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    a = PSPNetAdapter(depth=18, img_size=64, backbone_weights=tmp_path / "r18.pth")
    for k, v in a.module.backbone.state_dict().items():
        assert torch.equal(v, tv.state_dict()[k]), k
    # A ResNet-50 state dict does not fit a ResNet-18 trunk.
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="does not fit"):
        PSPNetAdapter(depth=18, img_size=64, backbone_weights=tmp_path / "r50.pth")
    # ... nor is it a full checkpoint.
    with pytest.raises(ValueError, match="not an argos PSPNet checkpoint"):
        PSPNetAdapter(weights=tmp_path / "r18.pth", img_size=64)


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        PSPNetAdapter(depth=18, weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch"):
        PSPNetAdapter(weights=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a readable PyTorch"):
        PSPNetAdapter(depth=18, backbone_weights=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="depth must be one of"):
        PSPNetAdapter(depth=34)
    with pytest.raises(ValueError, match="multiple of 8"):
        PSPNetAdapter(depth=18, img_size=100)
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        PSPNetAdapter(depth=18, num_classes=4, names=["a", "b", "c"])
    with pytest.raises(ValueError, match="ignore_index"):
        PSPNetAdapter(depth=18, num_classes=4, ignore_index=2)
    with pytest.raises(ValueError, match="not both"):
        PSPNetAdapter(depth=18, config=PSPNetConfig(depth=18))
    with pytest.raises(ValueError, match="not both"):
        PSPNetAdapter(weights="a.pt", backbone_weights="b.pt")
    with pytest.raises(ValueError, match="expected ndarray"):
        PSPNetAdapter(depth=18, img_size=64).preprocess([np.zeros((8, 8), np.uint8)])
