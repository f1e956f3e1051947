import numpy as np
import pytest
import torch
from torch.nn import functional as F

from argos.proposers.qunet.quant import ActQuant, BinaryConv2d, binarize_weight, dorefa_activation


def test_binary_weight_values():
    w = torch.tensor([[0.5, -0.25], [0.0, -1.25]])
    q = binarize_weight(w)
    s = (0.5 + 0.25 + 0.0 + 1.25) / 4
    # zero counts as +1 (the packed format stores one sign bit)
    assert torch.allclose(q, torch.tensor([[s, -s], [s, -s]]))


def test_binary_weight_two_levels_and_scale():
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    q = binarize_weight(w)
    levels = torch.unique(q)
    assert len(levels) == 2
    s = np.abs(w.numpy()).mean()
    assert levels.tolist() == pytest.approx([-s, s], rel=1e-6)
    assert torch.equal(q > 0, w >= 0)


def test_binary_weight_straight_through_gradient():
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    g = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    (binarize_weight(w) * g).sum().backward()
    assert torch.equal(w.grad, g)  # identity backward


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_matches_reference_and_has_2k_levels(bits):
    x = torch.linspace(-0.5, 1.5, 4001)
    n = 2**bits - 1
    ref = np.round(np.clip(x.numpy(), 0, 1) * np.float32(n)) / np.float32(n)  # float32, like the model
    q = dorefa_activation(x, bits)
    assert np.allclose(q.numpy(), ref, atol=1e-6)
    assert len(torch.unique(q)) == 2**bits
    assert q.min() == 0 and q.max() == 1


def test_dorefa_one_bit_is_a_step_at_half():
    q = dorefa_activation(torch.tensor([-3.0, 0.2, 0.49, 0.51, 0.9, 7.0]), 1)
    assert q.tolist() == [0, 0, 0, 1, 1, 1]


def test_dorefa_straight_through_gradient_clipped_outside_unit_interval():
    x = torch.tensor([-0.5, 0.1, 0.33, 0.5, 0.99, 1.5], requires_grad=True)
    dorefa_activation(x, 2).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]


def test_inference_path_equals_training_path():
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = dorefa_activation(x, 4)
    b = dorefa_activation(x.clone().requires_grad_(), 4)
    assert torch.equal(a, b.detach())


def test_bad_bits():
    with pytest.raises(ValueError):
        dorefa_activation(torch.zeros(2), 0)
    with pytest.raises(ValueError):
        ActQuant(33)


def test_act_quant_full_precision_is_relu():
    x = torch.tensor([-1.0, 0.5, 3.0])
    assert ActQuant(None)(x).tolist() == [0, 0.5, 3.0]
    assert ActQuant(32)(x).tolist() == [0, 0.5, 3.0]
    assert ActQuant(8)(x).tolist() == pytest.approx([0, 128 / 255, 1.0])


def test_binary_conv_equals_conv_with_binarized_weight_and_cache_follows_updates():
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 6, 6)
    w = conv.weight.detach()
    ref = F.conv2d(x, torch.where(w >= 0, 1.0, -1.0) * w.abs().mean(), padding=1)
    with torch.inference_mode():
        assert torch.allclose(conv(x), ref, atol=1e-6)
    with torch.no_grad():
        conv.weight.mul_(-2.0)  # in-place update: the cached binary weight must not be reused
        w = conv.weight.detach()
        ref = F.conv2d(x, torch.where(w >= 0, 1.0, -1.0) * w.abs().mean(), padding=1)
        assert torch.allclose(conv(x), ref, atol=1e-6)
    plain = BinaryConv2d(3, 4, 3, padding=1, bias=False, binary=False)
    plain.weight.data.copy_(conv.weight.data)
    assert torch.allclose(plain(x), F.conv2d(x, conv.weight, padding=1), atol=1e-6)


def test_binary_conv_gradient_reaches_latent_weight():
    torch.manual_seed(0)
    conv = BinaryConv2d(2, 2, 3, padding=1, bias=False)
    conv(torch.randn(1, 2, 5, 5)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
