import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from argos.metrics.flops import count_gflops
from argos.proposers.qunet.dct import block_dct, block_idct
from argos.proposers.qunet.model import PRESETS, QUNet, QUNetConfig, block_names, flop_breakdown
from argos.proposers.qunet.quant import BinaryConv2d
from argos.tools.qunet.train import class_weights, downsample_target, qunet_loss


SIZE = (32, 48)


def _tiny(preset, **kw):
    kw = {"width": 4, "depth": 2, "input_size": SIZE, **kw}
    return QUNet(QUNetConfig.from_preset(preset, **kw))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_forwards_and_trains_a_step(preset):
    torch.manual_seed(0)
    model = _tiny(preset)
    x = torch.rand(2, 3, *SIZE)
    out = model(x)
    stride = 8 if preset.endswith("dct") else 1
    assert out.shape == (2, 2, SIZE[0] // stride, SIZE[1] // stride)
    target = torch.zeros(2, *out.shape[2:], dtype=torch.long)
    target[:, : out.shape[2] // 2] = 1
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    loss = qunet_loss(model(x), target)
    loss.backward()
    first = float(loss.detach())
    assert math.isfinite(first)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    # SE branches may start with a dead ReLU unit and get no gradient; every conv and BN moves.
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert {k for k in before if ".se." not in k} <= changed
    for _ in range(4):
        opt.zero_grad()
        loss = qunet_loss(model(x), target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(qunet_loss(model(x), target)) < first


def test_preset_bit_layout_follows_the_thesis():
    c = QUNetConfig.from_preset("all_quantized")
    assert c.block_bits() == {
        "stem": (1, 8), "down1": (1, 8), "down2": (1, 8), "down3": (1, 1), "down4": (1, 1),
        "up1": (1, 4), "up2": (1, 4), "up3": (1, 4), "up4": (1, 4),
    }
    fp = (32, 32)
    mid = QUNetConfig.from_preset("middle_quantized").block_bits()
    assert [n for n, b in mid.items() if b != fp] == ["down3", "down4"]
    up = QUNetConfig.from_preset("middle_up_quantized").block_bits()
    assert [n for n, b in up.items() if b != fp] == ["down3", "down4", "up1", "up2", "up3", "up4"]
    assert set(QUNetConfig.from_preset("full_precision").block_bits().values()) == {fp}
    dct = QUNetConfig.from_preset("all_quantized_dct")
    assert dct.dct and dct.block_bits() == c.block_bits()


def test_quantized_model_really_uses_binary_weights_and_k_bit_inputs():
    torch.manual_seed(0)
    model = _tiny("all_quantized").eval()
    seen = {}

    def hook(m, inputs, output):
        seen[m] = (torch.unique(m.effective_weight()).numel(), inputs[0])

    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, *SIZE))
    assert len(seen) == 2 * len(block_names(2))
    for m, (levels, inp) in seen.items():
        assert levels == 2
        n = 2**m.act_bits - 1
        assert torch.allclose(inp * n, torch.round(inp * n), atol=1e-4), m.act_bits
        assert inp.min() >= 0 and inp.max() <= 1


def test_se_only_on_quantized_convs_and_can_be_disabled():
    def n_se(model):
        return sum(1 for m in model.modules() if type(m).__name__ == "SqueezeExcite")

    assert n_se(_tiny("full_precision")) == 0
    assert n_se(_tiny("middle_quantized")) == 2  # down2's two convs (depth 2: the middle is down2)
    assert n_se(_tiny("all_quantized")) == 10
    assert n_se(_tiny("all_quantized", se=False)) == 0


def test_config_validation_and_round_trip():
    c = QUNetConfig.from_preset("all_quantized_dct", width=6, depth=2, input_size=(64, 96))
    assert QUNetConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="valid presets"):
        QUNetConfig.from_preset("half_quantized")
    with pytest.raises(ValueError, match="one entry per block"):
        QUNetConfig(depth=3)
    with pytest.raises(ValueError, match="multiple of 8"):
        QUNetConfig.from_preset("all_quantized_dct", input_size=(60, 96))
    with pytest.raises(ValueError, match="too small for depth 4 with DCT"):
        QUNetConfig.from_preset("all_quantized_dct", input_size=(64, 96))
    with pytest.raises(ValueError, match="unknown QUNetConfig field"):
        QUNetConfig.from_dict({**c.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="QUNet expects"):
        QUNet(c)(torch.zeros(1, 1, 64, 96))


def test_odd_input_sizes_still_give_full_resolution_logits():
    model = _tiny("all_quantized", depth=3)
    assert model(torch.rand(1, 3, 37, 53)).shape == (1, 2, 37, 53)


def _naive_dct8(block):
    """DCT-II of one 8x8 block straight from the definition (orthonormal scaling)."""
    out = np.zeros((8, 8))
    for u in range(8):
        for v in range(8):
            cu = math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8)
            cv = math.sqrt(1 / 8) if v == 0 else math.sqrt(2 / 8)
            s = 0.0
            for i in range(8):
                for j in range(8):
                    s += block[i, j] * math.cos((2 * i + 1) * u * math.pi / 16) * math.cos((2 * j + 1) * v * math.pi / 16)
            out[u, v] = cu * cv * s
    return out


def test_block_dct_matches_the_definition():
    x = torch.rand(1, 2, 16, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = block_dct(x)
    assert y.shape == (1, 128, 2, 3)
    ref = _naive_dct8(x[0, 1, 8:16, 16:24].numpy())
    assert np.allclose(y[0, 64:128, 1, 2].reshape(8, 8).numpy(), ref, atol=1e-10)
    # the DC term of an orthonormal 8x8 DCT is 8 x the block mean
    assert torch.allclose(y[0, 0], 8 * F.avg_pool2d(x[:, :1], 8)[0, 0])


def test_dct_round_trip():
    x = torch.rand(2, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(block_idct(block_dct(x)), x, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 8"):
        block_dct(torch.rand(1, 3, 20, 16))
    with pytest.raises(ValueError, match="multiple of 64"):
        block_idct(torch.rand(1, 10, 2, 2))


def test_class_weights_inverse_frequency():
    t = torch.tensor([[[0, 0], [0, 1]]])
    w = class_weights(t, 2)
    assert w.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])


def test_loss_on_hand_made_masks():
    target = torch.tensor([[[0, 1], [0, 0]]])
    # logits: pixel (0,0) p(bg)=sigmoid(2), (0,1) fg correct with margin 1, (1,0) wrong, (1,1) tie
    d = torch.tensor([[2.0, -1.0], [-3.0, 0.0]])  # logit_bg - logit_fg
    logits = torch.stack([d, torch.zeros(2, 2)])[None]
    w = torch.tensor([0.5, 2.0])
    p_bg = torch.sigmoid(d)
    p_true = torch.where(target[0] == 0, p_bg, 1 - p_bg)
    wt = w[target[0]]
    ce_ref = float((wt * -torch.log(p_true)).sum() / wt.sum())
    assert float(qunet_loss(logits, target, w, dice_weight=0)) == pytest.approx(ce_ref, rel=1e-5)
    p = torch.stack([p_bg, 1 - p_bg])
    onehot = torch.stack([target[0] == 0, target[0] == 1]).float()
    dice_ref = float(np.mean([1 - (2 * (p[c] * onehot[c]).sum() + 1) / (p[c].sum() + onehot[c].sum() + 1) for c in range(2)]))
    assert float(qunet_loss(logits, target, w, dice_weight=0.5)) == pytest.approx(ce_ref + 0.5 * dice_ref, rel=1e-5)
    perfect = (torch.stack([target[0] == 0, target[0] == 1]).float() * 40 - 20)[None]
    assert float(qunet_loss(perfect, target, w)) < 1e-6
    assert float(qunet_loss(-perfect, target, w)) > 20
    with pytest.raises(ValueError, match="do not match"):
        qunet_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long))


def test_downsample_target_keeps_any_covered_cell():
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[0, 9, 2] = True
    assert downsample_target(m, 8).tolist() == [[[0, 0], [1, 0]]]


def test_flops_full_precision_matches_the_generic_counter():
    model = _tiny("full_precision")
    fb = flop_breakdown(model)
    assert fb["gflops_equiv"] == pytest.approx(fb["gflops_dense"])
    assert fb["gflops_dense"] == pytest.approx(count_gflops(model, (1, 3, *SIZE)))


def test_flops_quantized_counts_low_bit_macs_separately():
    model = _tiny("all_quantized", se=False)
    fb = flop_breakdown(model)
    assert set(fb["macs"]) == {"w1a8", "w1a1", "w1a4", "fp"}
    assert fb["gflops_dense"] == pytest.approx(count_gflops(model, (1, 3, *SIZE)))
    expected = sum(n * (2 * int(k[1]) * int(k[3:]) / 64 if k != "fp" else 2) for k, n in fb["macs"].items()) / 1e9
    assert fb["gflops_equiv"] == pytest.approx(expected)
    assert fb["gflops_equiv"] < fb["gflops_dense"] / 5
    dct = flop_breakdown(_tiny("all_quantized_dct", se=False))
    assert dct["macs"]["fp"] >= 3 * SIZE[0] * SIZE[1] * 64  # the DCT itself
