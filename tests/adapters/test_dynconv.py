"""DynConv: hard gates at inference, gather-scatter branches against a masked-dense reference
written out here, all-on gates against the plain ResNet-YOLO, the budget loss and the gate-noise
annealing, the YOLO loss."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import argos
from argos import RegionProposals
from argos.adapters.dynconv import (
    BlockCost,
    DynConvAdapter,
    DynConvConfig,
    DynConvLoss,
    DynConvYOLO,
    GatedResidualBlock,
    budget_loss,
    gate_noise_scale,
    gumbel_gate,
)
from argos.adapters.resnet_yolo import ResNetYOLO, ResNetYOLOAdapter, ResNetYOLOConfig
from argos.adapters.yolo_loss import YOLOLoss, giou
from argos.assets import assets_dir
from argos.executors.gather_scatter import GatherScatterExecutor
from argos.testing import randomize_bn


SMALL = dict(depth=18, num_classes=4, neck_channels=(16, 32, 64))


def spread_gates(net: DynConvYOLO, seed: int = 0, size: tuple = (64, 96)) -> None:
    """Gates that switch on about half of the positions: random weights, and each bias set to
    minus the median logit its gate gives on a random image (block inputs are post-ReLU, so
    random weights alone give one sign everywhere)."""
    g = torch.Generator().manual_seed(seed)

    def centre(gate, inputs, out):
        med = out.median()
        gate.bias -= med
        return out - med

    with torch.no_grad():
        for b in net.gated_blocks():
            b.gate.weight.copy_(torch.randn(b.gate.weight.shape, generator=g))
            b.gate.bias.zero_()
        hooks = [b.gate.register_forward_hook(centre) for b in net.gated_blocks()]
        was_training = net.training
        try:
            net.eval()
            net(torch.rand(1, 3, *size, generator=g))
        finally:
            for h in hooks:
                h.remove()
            net.train(was_training)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A COCO128 image (long side 160) when the assets are here, else a synthetic one."""
    root = assets_dir()
    path = None if root is None else root / "data/coco128/images/train2017/000000000036.jpg"
    if path is not None and path.is_file():
        im = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        r = 160 / max(im.shape[:2])
        return cv2.resize(im, (round(im.shape[1] * r), round(im.shape[0] * r)), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)


# ---- gates ----


def test_gumbel_gate_is_hard_with_bernoulli_rate_and_a_gradient():
    torch.manual_seed(0)
    logits = torch.tensor([-2.0, 0.0, 1.5]).repeat(20000, 1).requires_grad_()
    m = gumbel_gate(logits, temperature=1.0)
    assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    rate = m.detach().mean(0)
    torch.testing.assert_close(rate, torch.sigmoid(torch.tensor([-2.0, 0.0, 1.5])), atol=0.015, rtol=0)
    m.sum().backward()
    assert bool((logits.grad > 0).all()), "straight-through: the soft sample's positive slope"


def test_gumbel_gate_without_noise_is_the_inference_gate_with_sigmoid_gradient():
    logits = torch.linspace(-3, 3, 13).requires_grad_()
    m = gumbel_gate(logits, temperature=0.5, noise=0.0)
    assert torch.equal(m.detach(), (logits > 0).float())
    (m * torch.arange(13.0)).sum().backward()
    ref = logits.detach().clone().requires_grad_()
    (torch.sigmoid(ref / 0.5) * torch.arange(13.0)).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    with pytest.raises(ValueError, match="noise"):
        gumbel_gate(logits, noise=-1.0)


def test_gate_noise_schedule_decays_from_one_to_zero():
    for schedule in ("linear", "cosine"):
        scales = [gate_noise_scale(s, 40, schedule) for s in range(-2, 45)]
        assert scales[:3] == [1.0, 1.0, 1.0] and scales[-5:] == [0.0] * 5  # steps -2..0, 40..44
        assert all(a >= b for a, b in zip(scales, scales[1:]))
        assert gate_noise_scale(20, 40, schedule) == pytest.approx(0.5)
    assert gate_noise_scale(10, 40, "linear") == pytest.approx(0.75)
    assert gate_noise_scale(10, 40, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert gate_noise_scale(10**6, None) == 1.0 == gate_noise_scale(39, 40, "constant")
    with pytest.raises(ValueError, match="linear"):
        gate_noise_scale(0, 40, "exponential")
    with pytest.raises(ValueError, match="cosine"):
        DynConvLoss(DynConvYOLO(DynConvConfig(**SMALL)), noise_steps=10, noise_schedule="step")


def test_gate_is_hard_threshold_at_inference():
    torch.manual_seed(0)
    net = DynConvYOLO(DynConvConfig(**SMALL)).eval()
    spread_gates(net)
    x = torch.rand(2, 3, 64, 96)
    logits = {}
    hooks = [b.gate.register_forward_hook(lambda m, i, o, b=b: logits.__setitem__(b, o)) for b in net.gated_blocks()]
    with torch.inference_mode():
        net(x)
    for h in hooks:
        h.remove()
    for b in net.gated_blocks():
        assert b.last_mask.dtype == torch.bool
        assert torch.equal(b.last_mask, logits[b][:, 0] > 0)
        assert 0 < b.last_mask.float().mean() < 1


# ---- inference: sparse == dense masked, all-on == plain ----


def reference_block(b: GatedResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """``relu(identity + [gate(x) > 0] * branch(x))`` written out with functional ops."""

    def cbn(conv, bn, t):
        t = F.conv2d(t, conv.weight, None, conv.stride, conv.padding)
        return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    identity = x if b.downsample is None else cbn(b.downsample[0], b.downsample[1], x)
    mask = (F.conv2d(x, b.gate.weight, b.gate.bias, b.gate.stride) > 0).to(x.dtype)
    y = F.relu(cbn(b.conv1, b.bn1, x))
    if b.bottleneck:
        y = F.relu(cbn(b.conv2, b.bn2, y))
        y = cbn(b.conv3, b.bn3, y)
    else:
        y = cbn(b.conv2, b.bn2, y)
    return F.relu(identity + mask * y)


@pytest.mark.parametrize("depth", [18, 50])
def test_sparse_branches_equal_masked_dense_reference(depth):
    torch.manual_seed(depth)
    net = DynConvYOLO(DynConvConfig(**{**SMALL, "depth": depth})).eval()
    spread_gates(net, depth)
    randomize_bn(net, depth, spread=0.1)
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        got = net.backbone(x)
        bb = net.backbone
        h = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        want = []
        for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4):
            for b in layer:
                h = reference_block(b, h)
            want.append(h)
    for g, w in zip(got, want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    # The work really drops: the gather-scatter layers executed fewer MACs than the dense convs.
    executed = dense = 0.0
    for b in net.gated_blocks():
        first_ctx, rest_ctx, _ = b._sparse_layers()
        for ctx in (first_ctx, rest_ctx):
            executed += sum(ctx.stats.macs)
            dense += ctx.stats.dense_macs * 2  # dense_macs is per image; batch of 2
    assert executed < 0.85 * dense


def test_first_conv_mask_covers_what_the_3x3_conv_reads():
    """The first conv runs wherever the 3x3 conv of an active output reads (exactness), and the
    cost counts those positions times the first conv's MACs plus the block mask times the rest."""
    torch.manual_seed(3)
    net = DynConvYOLO(DynConvConfig(**{**SMALL, "depth": 50})).eval()
    spread_gates(net, 3)
    with torch.inference_mode():
        net(torch.rand(1, 3, 64, 64))
    costs = net.last_costs
    for b, cost in zip(net.gated_blocks(), costs):
        m = b.last_mask[:, None].float()
        x_hw = (m.shape[-2] * b.stride, m.shape[-1] * b.stride)
        first = b.first_mask(m, torch.zeros(1, 1, *x_hw))
        k3 = b.conv2  # the 3x3 conv: reads a 3x3 window (stride b.stride) of the first conv's output
        reads = F.conv_transpose2d(m, torch.ones(1, 1, 3, 3), stride=k3.stride, padding=1,
                                   output_padding=k3.stride[0] - 1) > 0  # fmt: skip
        assert reads.shape == first.shape and bool((first[reads] > 0).all())
        macs = lambda c: c.out_channels * c.in_channels * c.kernel_size[0] * c.kernel_size[1]  # noqa: E731
        want = macs(b.conv1) * first.sum() + (macs(b.conv2) + macs(b.conv3)) * m.sum()
        assert float(cost.executed[0]) == pytest.approx(float(want))
        dense = macs(b.conv1) * x_hw[0] * x_hw[1] + (macs(b.conv2) + macs(b.conv3)) * m[0, 0].numel()
        assert cost.total == pytest.approx(dense)


def test_all_on_gates_equal_plain_resnet_yolo():
    torch.manual_seed(4)
    dyn = DynConvYOLO(DynConvConfig(**SMALL)).eval()
    randomize_bn(dyn, 4, spread=0.1)
    with torch.no_grad():
        for b in dyn.gated_blocks():
            b.gate.weight.zero_()
            b.gate.bias.fill_(10.0)
    plain = ResNetYOLO(ResNetYOLOConfig(**SMALL)).eval()
    plain.load_state_dict({k: v for k, v in dyn.state_dict().items() if ".gate." not in k})  # strict
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        got, want = dyn(x), plain(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float(dyn.last_costs[0].fraction) == 1.0


# ---- training: budget ----


def test_budget_loss_bounds_anneal_from_budget_to_unit_interval():
    costs = [BlockCost(torch.tensor([10.0]), 100.0), BlockCost(torch.tensor([90.0]), 100.0)]
    loss0, st0 = budget_loss(costs, 0.25, step=0, anneal_steps=100)
    assert (st0["lower"], st0["upper"]) == (0.25, 0.25)
    # network: F = 100/200 = 0.5 -> 0.0625; blocks: (0.25-0.1)^2 and (0.9-0.25)^2, averaged.
    assert float(loss0) == pytest.approx(0.0625 + (0.15**2 + 0.65**2) / 2)
    _, mid = budget_loss(costs, 0.25, step=50, anneal_steps=100)
    assert 0.0 < mid["lower"] < 0.25 < mid["upper"] < 1.0
    assert mid["lower"] == pytest.approx(0.25 * math.cos(math.pi / 4) ** 2)
    loss_end, end = budget_loss(costs, 0.25, step=100, anneal_steps=100)
    assert (end["lower"], end["upper"]) == (0.0, 1.0) and float(loss_end) == pytest.approx(0.0625)


@pytest.mark.parametrize("gate_bias", [2.0, -4.0])
def test_budget_steps_move_executed_fraction_towards_target(gate_bias):
    """Budget loss alone, SGD on the gates: the executed share of training forwards (sampled
    gates) moves from ~0.95 / ~0.05 towards the 0.25 target."""
    torch.manual_seed(5)
    adapter = DynConvAdapter(DynConvConfig(**SMALL, gate_bias=gate_bias), img_size=64)
    x = torch.rand(2, 3, 64, 64)
    opt = torch.optim.SGD([p for b in adapter.module.gated_blocks() for p in b.gate.parameters()], lr=0.05)
    fractions = [adapter.train_step(x, None, opt)["fraction"] for _ in range(10)]
    assert not adapter.module.training
    start, end = fractions[0], sum(fractions[-3:]) / 3
    assert abs(end - 0.25) < 0.5 * abs(start - 0.25), fractions
    if gate_bias > 0:
        # Inference (hard threshold at 0) follows: from all-on to near the target.
        with torch.inference_mode():
            adapter.forward(x)
        assert abs(adapter.last_flops_fraction - 0.25) < 0.15, adapter.last_flops_fraction


def test_noise_annealing_brings_the_inference_fraction_to_the_budget():
    """The failure the annealing fixes: gate logits narrowly spread around -2 (median), where the
    sampled gates execute a budget-sized share but the hard threshold runs nothing. With the noise
    annealed to 0 over 4 of 10 budget-only steps, training ends on the inference gates and the
    budget loss pulls what inference executes to the target."""
    torch.manual_seed(12)
    adapter = DynConvAdapter(DynConvConfig(**SMALL, gate_bias=0.0), img_size=64)
    net = adapter.module
    x = torch.rand(2, 3, 64, 96)
    # Running statistics = the last training batch's: eval forwards then see the training
    # forwards' features, so the test isolates the gates (a fresh net's running stats do not).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    logits = {}
    hooks = [b.gate.register_forward_hook(lambda m, i, o, b=b: logits.__setitem__(b, o.detach()))
             for b in net.gated_blocks()]  # fmt: skip
    net.train()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():  # per block: logit spread (std over positions) 0.5, median -2
        for b in net.gated_blocks():
            z = (logits[b] - b.gate.bias) * (0.5 / logits[b].std())
            b.gate.weight.mul_(0.5 / logits[b].std())
            b.gate.bias.fill_(-2.0 - float(z.median()))
    net.eval()

    def inference_fraction() -> float:
        with torch.inference_mode():
            adapter.forward(x)
        return adapter.last_flops_fraction

    assert inference_fraction() < 0.02
    criterion = DynConvLoss(net, budget_weight=10.0, anneal_steps=1, noise_steps=4, noise_schedule="cosine")
    opt = torch.optim.SGD(net.gate_parameters(), lr=1.0)
    stats = [adapter.train_step(x, None, opt, criterion=criterion) for _ in range(10)]
    assert [st["noise"] for st in stats[4:]] == [0.0] * 6 and 0.0 < stats[1]["noise"] < 1.0
    assert stats[0]["fraction"] > 0.15, "sampled gates run a budget-sized share; the hard gates ~none"
    final = inference_fraction()
    assert abs(final - 0.25) < 0.05, (final, [round(st["fraction"], 3) for st in stats])


def test_task_and_budget_step_trains_everything():
    torch.manual_seed(6)
    adapter = DynConvAdapter(DynConvConfig(**SMALL), img_size=64)
    net = adapter.module
    x = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]  # fmt: skip
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = adapter.train_step(x, targets, torch.optim.SGD(net.parameters(), lr=0.01))
    assert {"loss", "task_loss", "budget_loss", "fraction", "box", "obj", "cls"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values())
    after = net.state_dict()
    for key in ("backbone.layer1.0.gate.weight", "backbone.layer2.0.conv1.weight", "head.m.0.weight"):
        assert not torch.equal(before[key], after[key]), key
    assert all(b._cost is None for b in net.gated_blocks()), "no autograd graph left on the modules"


# ---- YOLO loss ----


def test_giou_matches_torchvision():
    torch.manual_seed(7)
    xy = torch.rand(50, 2) * 10
    wh = torch.rand(50, 2) * 5 + 0.1
    a, b = torch.cat((xy, wh), 1), torch.cat((xy + torch.randn(50, 2), wh * 1.3), 1)
    to_xyxy = lambda t: torch.cat((t[:, :2] - t[:, 2:] / 2, t[:, :2] + t[:, 2:] / 2), 1)  # noqa: E731
    want = torchvision.ops.generalized_box_iou(to_xyxy(a), to_xyxy(b)).diagonal()
    torch.testing.assert_close(giou(a, b), want, atol=1e-5, rtol=1e-5)


def test_yolo_loss_matches_anchor_shaped_box_in_three_cells():
    anchors = torch.tensor([[[10.0, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                            [[116, 90], [156, 198], [373, 326]]])  # fmt: skip
    loss = YOLOLoss(anchors, (8, 16, 32), num_classes=3)
    # 16x30 box centred at (20.2, 28.9) px: on P3 cell (2, 3), fractions (0.525, 0.6125).
    target = [{"boxes": torch.tensor([[12.2, 13.9, 28.2, 43.9]]), "labels": torch.tensor([2])}]
    t = loss._flatten(target, torch.device("cpu"))
    b, a, gj, gi, tbox, anchor, cls = loss._match(t, 0, ny=8, nx=8)
    # Anchors 10x13 and 16x30 fit (ratios < 4), 33x23 too (33/16 and 30/23 < 4): 3 anchors x 3 cells.
    cells = sorted(set(zip(gj.tolist(), gi.tolist())))
    assert cells == [(3, 2), (3, 3), (4, 2)]  # centre, right neighbour (x frac > .5), lower (y frac > .5)
    assert sorted(set(a.tolist())) == [0, 1, 2] and len(a) == 9 and bool((cls == 2).all())
    # Targets are relative to each cell: the centre cell sees (0.525, 0.6125).
    centre = (gj == 3) & (gi == 2)
    torch.testing.assert_close(tbox[centre][0], torch.tensor([0.525, 0.6125, 2.0, 3.75]))
    # Raw maps that decode to the target box with confident objectness and class on every
    # matched prediction: the box loss vanishes, and the total drops well below blank maps'.
    blank = [torch.zeros(1, 3, s, s, 8) for s in (8, 4, 2)]
    perfect = [m.clone() for m in blank]
    for level, p in enumerate(perfect):
        b, a, gj, gi, tbox, anchor, cls = loss._match(t, level, p.shape[2], p.shape[3])
        p[b, a, gj, gi, :2] = torch.logit((tbox[:, :2] + 0.5) / 2)
        p[b, a, gj, gi, 2:4] = torch.logit((tbox[:, 2:] / anchor).sqrt() / 2)
        p[b, a, gj, gi, 4] = 8.0
        p[b, a, gj, gi, 5:] = -8.0
        p[b, a, gj, gi, 5 + cls] = 8.0
    low, parts_low = loss(perfect, target)
    high, parts_high = loss(blank, target)
    assert parts_low["box"] < 1e-5 < parts_high["box"]
    assert parts_low["cls"] < 0.01 * parts_high["cls"]
    assert float(low) < 0.5 * float(high)


# ---- adapter ----


def test_adapter_defaults_and_contract():
    assert DynConvConfig().depth == 101 and DynConvConfig().budget == 0.25
    a = DynConvAdapter(depth=18, img_size=128)
    assert a.head_format == "anchor" and a.stride == 32 and len(a.names) == 80 and a.sparse
    assert len(a.module.gated_blocks()) == 8
    with pytest.raises(ValueError, match="budget"):
        DynConvConfig(budget=0.0)


def test_flops_are_dense_plus_gates_and_last_gflops_smaller(image):
    torch.manual_seed(8)
    dyn = DynConvAdapter(DynConvConfig(**SMALL), img_size=128, conf=1e-7)
    plain = ResNetYOLOAdapter(ResNetYOLOConfig(**SMALL), img_size=128)
    hw = (96, 128)
    # Gate MACs: a 1x1 conv to one channel per block, at the block's output resolution
    # (layer1 at stride 4, then 8, 16, 32).
    gates = 0
    bb = dyn.module.backbone
    for stride, layer in zip((4, 8, 16, 32), (bb.layer1, bb.layer2, bb.layer3, bb.layer4)):
        gates += sum(b.gate.in_channels * (hw[0] // stride) * (hw[1] // stride) for b in layer)
    assert dyn.flops(hw) == pytest.approx(plain.flops(hw) + 2 * gates / 1e9, rel=1e-9)
    spread_gates(dyn.module)
    dyn.predict([image])
    frac = dyn.last_flops_fraction
    assert 0.05 < frac < 0.95
    batch, _ = dyn.preprocess([image])
    (gf,) = dyn.last_gflops
    assert 2 * gates / 1e9 < gf < dyn.flops(tuple(batch.shape[-2:]))
    assert dyn.last_flops_fraction == frac, "flops() must not replace the last forward's costs"


@pytest.mark.parametrize("executor", ["masked", "gather_scatter", "packed_crops"])
def test_full_proposer_equals_unwrapped(image, executor):
    torch.manual_seed(9)
    a = DynConvAdapter(depth=18, img_size=128, conf=1e-7)
    spread_gates(a.module)
    (ref,) = a.predict([image])
    got = argos.wrap(a, proposer="full", executor=executor)(image)
    assert len(ref) > 0 and len(got) == len(ref)
    torch.testing.assert_close(got.boxes, ref.boxes, atol=1e-3, rtol=0)
    assert torch.equal(got.labels, ref.labels)


def test_gather_scatter_partial_mask_runs_gated_blocks_masked(image):
    """Under the executor's own masks the gated blocks run their (converted) convs densely then
    gated: detections stay on the proposed half, and fewer MACs run than densely."""
    torch.manual_seed(11)
    a = DynConvAdapter(depth=18, img_size=128, conf=1e-7)
    spread_gates(a.module)
    h, w = image.shape[:2]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, : w // 2] = True
    ex = GatherScatterExecutor(dense_above=1.0)
    (dets,) = ex.run(a, [image], [RegionProposals(mask)])
    cx = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
    assert len(dets) > 0 and bool((cx < w // 2 + 1).all())
    assert ex.last_stats["mode"] == "sparse" and ex.last_stats["gflops"][0] < a.flops(ex.last_stats["input_hw"])


def test_save_load_and_backbone_weights(tmp_path, image):
    torch.manual_seed(10)
    a = DynConvAdapter(depth=18, img_size=128, conf=1e-7)
    spread_gates(a.module)
    path = tmp_path / "dyn.pt"
    a.save(path)
    b = DynConvAdapter(weights=path, img_size=128, conf=1e-7)
    assert b.config == a.config
    torch.testing.assert_close(b.predict([image])[0].boxes, a.predict([image])[0].boxes)
    with pytest.raises(ValueError, match="not 'argos.dynconv'"):
        r = ResNetYOLOAdapter(depth=18, img_size=128)
        r.save(tmp_path / "ry.pt")
        DynConvAdapter(weights=tmp_path / "ry.pt")
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    c = DynConvAdapter(depth=18, img_size=64, backbone_weights=tmp_path / "r18.pth")
    sd = c.module.backbone.state_dict()
    assert torch.equal(sd["layer3.1.conv2.weight"], tv.state_dict()["layer3.1.conv2.weight"])
    assert float(sd["layer3.1.gate.bias"]) == c.config.gate_bias  # gates keep their init
