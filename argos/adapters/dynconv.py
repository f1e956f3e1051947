"""Dynamic Convolutions (Verelst & Tuytelaars, CVPR 2020) on a ResNet-YOLO.

Each residual block of the backbone gets a spatial gate: a 1x1 conv on the block input (with
the block's stride) gives one logit per output position. The residual branch runs only where
the gate is on: ``out = relu(identity + mask * branch(x))``.

- Training: the mask is a Gumbel-sigmoid sample of the logit, hard 0/1 in the forward pass with
  the soft sample's gradient (straight-through); the branch runs densely and is multiplied by it.
- Inference: ``mask = logit > 0``; the branch's convs run through argos' gather-scatter layers
  (:class:`~argos.sparse.SparseConvBlock`, BatchNorm folded), so only the active
  positions are computed.

The branch's first conv feeds a 3x3 conv, so it must also run on the 3x3 neighbours of the
active outputs: its mask is the block mask dilated by a 3x3 max pool, after a nearest-neighbour
upsampling to the first conv's resolution when that is finer (bottleneck blocks with stride 2,
where this covers one input row/column more than the 3x3 stride-2 window needs). The cost model
counts exactly what runs: the first conv's MACs per position times the dilated mask's active
positions, the other convs' MACs times the block mask's.

Budget loss (paper, sec. 3.3): ``(F - budget)^2`` with ``F`` the executed share of the gated
branches' MACs over the network, plus per-block bound terms ``max(0, f_b - upper)^2 +
max(0, lower - f_b)^2`` averaged over blocks. As in the paper the bounds start at the budget
(``[budget, budget]``: no block may collapse to all-on or all-off early) and are relaxed to
``[0, 1]`` with a cosine-squared schedule over ``anneal_steps``; this follows the authors' code
(its ``progress = cos(p * pi / 2)^2``, lower ``= progress * budget``, upper ``= 1 - progress *
(1 - budget)``).

Gate noise annealing (an option, not in the paper). The sampled gate fires with probability
``sigmoid(logit)``, the inference gate iff ``logit > 0``: the budget loss only constrains the
former, so both agree only once the logits are far from 0 (the paper's long training polarises
them). After a short run they are not: logits near ``logit(0.25) = -1.1`` meet the budget in
training and switch almost nothing on at inference. The temperature cannot help (the hard sample
``sigmoid((logit + g) / T) > 0.5`` is ``logit + g > 0`` for any ``T``), so the noise itself is
scaled: ``logit + s * g > 0`` with ``s`` going from 1 to 0 over ``noise_steps``
(:func:`gate_noise_scale`, linear or cosine). From then on training runs the inference gates
(straight-through: forward ``logit > 0``, backward the gradient of ``sigmoid(logit / T)``), and
the budget loss acts on what inference executes.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from argos.adapters.resnet_yolo import ResNetYOLO, ResNetYOLOAdapter, ResNetYOLOConfig
from argos.adapters.yolo_loss import YOLOLoss
from argos.sparse import SparseContext, SparseConvBlock

__all__ = [
    "DynConvConfig",
    "DynConvYOLO",
    "GatedResidualBlock",
    "BlockCost",
    "DynConvLoss",
    "DynConvAdapter",
    "gumbel_gate",
    "gate_noise_scale",
    "NOISE_SCHEDULES",
    "budget_loss",
    "flops_fraction",
]


@dataclass(frozen=True)
class DynConvConfig(ResNetYOLOConfig):
    """:class:`ResNetYOLOConfig` plus the gates.

    Attributes:
        budget: target share of the gated branches' MACs to execute (the paper's theta).
        temperature: Gumbel-sigmoid temperature in training.
        gate_bias: initial gate logit bias; positive starts with most positions on.
    """

    depth: int = 101
    budget: float = 0.25
    temperature: float = 1.0
    gate_bias: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def gumbel_gate(logits: torch.Tensor, temperature: float = 1.0, noise: float = 1.0) -> torch.Tensor:
    """Hard 0/1 sample of ``sigmoid(logits)`` with a straight-through gradient.

    The difference of two Gumbel variables is logistic, so ``logit + g1 - g2 > 0`` samples the
    Bernoulli(``sigmoid(logit)``) gate; the gradient is that of ``sigmoid((logit + g1 - g2) / T)``.
    ``noise`` scales ``g1 - g2``: at 0 the gate is the inference gate ``logit > 0``, with the
    gradient of ``sigmoid(logit / T)``.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if noise > 0:
        u1, u2 = torch.rand_like(logits), torch.rand_like(logits)
        eps = 1e-8
        g = torch.log(torch.log(u2 + eps) / torch.log(u1 + eps) + eps)  # = g1 - g2, g = -log(-log u)
        logits = logits + noise * g
    soft = torch.sigmoid(logits / temperature)
    hard = (soft > 0.5).to(logits.dtype)
    return hard + (soft - soft.detach())  # exactly hard in value


#: Shapes of :func:`gate_noise_scale`'s decay.
NOISE_SCHEDULES = ("constant", "linear", "cosine")


def gate_noise_scale(step: int, steps: Optional[int], schedule: str = "cosine") -> float:
    """Scale of the gates' Gumbel noise at training ``step``: 1 at step 0, 0 from ``steps`` on.

    Args:
        steps: length of the decay; ``None`` (or ``schedule="constant"``): always 1 (the paper).
        schedule: ``"linear"`` (``1 - p``), ``"cosine"`` (``(1 + cos(pi p)) / 2``, slow at both
            ends) or ``"constant"``, with ``p = step / steps``.
    """
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(f"schedule must be one of {NOISE_SCHEDULES}, got {schedule!r}")
    if steps is None or schedule == "constant":
        return 1.0
    if steps < 1:
        raise ValueError(f"steps must be >= 1 or None, got {steps}")
    p = min(max(step / steps, 0.0), 1.0)
    if p >= 1.0:
        return 0.0  # exactly deterministic, whatever the rounding of cos(pi)
    return 1.0 - p if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class BlockCost:
    """MACs of one gated block's branch in one forward.

    Attributes:
        executed (Tensor[B]): MACs run per image (differentiable in training).
        total (float): MACs of the dense branch, per image.
    """

    executed: torch.Tensor
    total: float

    @property
    def fraction(self) -> torch.Tensor:
        """Tensor[B]: executed share."""
        return self.executed / self.total


def flops_fraction(costs: Sequence[BlockCost]) -> torch.Tensor:
    """Tensor[B]: executed share of all gated branches' MACs, per image."""
    if not costs:
        raise ValueError("no block costs: was the forward run on a DynConv network?")
    return sum(c.executed for c in costs) / sum(c.total for c in costs)  # type: ignore[return-value]


def _conv_macs(conv: nn.Conv2d) -> int:
    """MACs per output position."""
    kh, kw = conv.kernel_size
    return conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


class GatedResidualBlock(nn.Module):
    """A torchvision ``BasicBlock``/``Bottleneck`` with a spatial gate on its residual branch.

    Takes over the block's layers under their own names (``conv1``, ``bn1``, ...,
    ``downsample``), so the state dict is torchvision's plus ``gate.weight``/``gate.bias``.

    Args:
        block: the torchvision block.
        temperature: Gumbel-sigmoid temperature (training).
        gate_bias: initial bias of the gate logit.

    Attributes:
        sparse (bool): at inference, run the branch through gather-scatter layers (else dense
            then masked; same result).
        noise (float): scale of the Gumbel noise in training (:func:`gumbel_gate`); 1 by default,
            set by :meth:`DynConvYOLO.set_gate_noise`. Not saved: a training-schedule value.
        last_mask (Tensor[B, h, w] bool): the gate of the last forward.
    """

    def __init__(self, block: nn.Module, temperature: float = 1.0, gate_bias: float = 2.0) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock, Bottleneck

        if isinstance(block, Bottleneck):
            names: Tuple[str, ...] = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
        elif isinstance(block, BasicBlock):
            names = ("conv1", "bn1", "conv2", "bn2")
        else:
            raise TypeError(f"expected a torchvision BasicBlock or Bottleneck, got {type(block).__name__}")
        self.bottleneck = isinstance(block, Bottleneck)
        for n in names:
            setattr(self, n, getattr(block, n))
        self.relu = block.relu
        self.downsample = block.downsample
        self.stride = int(block.stride)
        self.gate = nn.Conv2d(block.conv1.in_channels, 1, 1, stride=self.stride)
        nn.init.normal_(self.gate.weight, std=0.01)
        nn.init.constant_(self.gate.bias, gate_bias)
        self.temperature = float(temperature)
        self.noise = 1.0
        self.sparse = True
        self.last_mask: Optional[torch.Tensor] = None
        self._cost: Optional[BlockCost] = None

    def _layers(self) -> List[Tuple[nn.Module, nn.Module, Optional[nn.Module]]]:
        """The branch as (conv, bn, activation) steps."""
        if self.bottleneck:
            return [(self.conv1, self.bn1, self.relu), (self.conv2, self.bn2, self.relu), (self.conv3, self.bn3, None)]
        return [(self.conv1, self.bn1, self.relu), (self.conv2, self.bn2, None)]

    def dense_branch(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, act in self._layers():
            x = bn(conv(x))
            if act is not None:
                x = act(x)
        return x

    def first_mask(self, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 1, h, w] block mask -> the first conv's mask at its output resolution."""
        hw = tuple(x.shape[-2:]) if self.bottleneck else tuple(mask.shape[-2:])
        m = mask if tuple(mask.shape[-2:]) == hw else F.interpolate(mask, size=hw, mode="nearest")
        return F.max_pool2d(m, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        logits = self.gate(x)
        if self.training:
            mask = gumbel_gate(logits, self.temperature, self.noise)
        else:
            mask = (logits > 0).to(x.dtype)
        first = self.first_mask(mask, x)
        self._record(mask, first)
        branch = None
        if not self.training and self.sparse:
            branch = self._sparse_branch(x, mask[:, 0] > 0, first[:, 0] > 0)
        if branch is None:
            branch = self.dense_branch(x) * mask
        return self.relu(identity + branch)

    def _record(self, mask: torch.Tensor, first: torch.Tensor) -> None:
        layers = self._layers()
        first_macs = _conv_macs(layers[0][0])
        rest_macs = sum(_conv_macs(c) for c, _, _ in layers[1:])
        executed = first_macs * first.sum((1, 2, 3)) + rest_macs * mask.sum((1, 2, 3))
        total = first_macs * first.shape[-2] * first.shape[-1] + rest_macs * mask.shape[-2] * mask.shape[-1]
        self._cost = BlockCost(executed if self.training else executed.detach(), float(total))
        self.last_mask = mask.detach()[:, 0] > 0

    def pop_cost(self) -> BlockCost:
        """The last forward's cost, cleared so that no autograd graph stays on the module."""
        cost, self._cost = self._cost, None
        if cost is None:
            raise RuntimeError("pop_cost() before a forward")
        return cost

    def _sparse_branch(
        self, x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor
    ) -> Optional[torch.Tensor]:
        """The branch on the active positions only (zeros elsewhere), or None when the convs are
        not plain ``Conv2d`` + ``BatchNorm2d`` (e.g. already rewritten by the ``gather_scatter``
        executor, whose own masks then apply)."""
        plan = self._sparse_layers()
        if plan is None:
            return None
        first_ctx, rest_ctx, layers = plan
        with first_ctx.activate(first):
            y = layers[0](x)
        with rest_ctx.activate(mask):
            for layer in layers[1:]:
                y = layer(y)
        return y

    def _sparse_layers(self) -> Optional[Tuple[SparseContext, SparseContext, List[SparseConvBlock]]]:
        steps = self._layers()
        plain = (type(c) is nn.Conv2d and c.padding_mode == "zeros" and type(b) is nn.BatchNorm2d for c, b, _ in steps)
        if not all(plain):
            return None
        cached = self.__dict__.get("_sparse_cache")
        if cached is not None and all(layer.conv is c and layer.bn is b for layer, (c, b, _) in zip(cached[2], steps)):
            return cached
        # Kept out of the module tree (a plain attribute): they share this block's conv and BN
        # modules, and must be invisible to state_dict(), modules() and convert().
        first_ctx, rest_ctx = SparseContext(), SparseContext()
        layers = []
        for k, (conv, bn, act) in enumerate(steps):
            layer = SparseConvBlock(conv, bn, act, first_ctx if k == 0 else rest_ctx)
            layer.training = False  # not .eval(): that would recurse into the shared BN
            layers.append(layer)
        cached = (first_ctx, rest_ctx, layers)
        self.__dict__["_sparse_cache"] = cached
        return cached


class DynConvYOLO(ResNetYOLO):
    """:class:`ResNetYOLO` whose backbone residual blocks are :class:`GatedResidualBlock`.

    Eval mode returns the decoded predictions (as ResNet-YOLO) and keeps ``last_costs``
    (detached :class:`BlockCost` per gated block). Training mode returns ``(maps, costs)``:
    the head's raw maps and the differentiable costs, for :class:`DynConvLoss`.
    """

    def __init__(self, config: DynConvConfig) -> None:
        super().__init__(config)
        for layer in (self.backbone.layer1, self.backbone.layer2, self.backbone.layer3, self.backbone.layer4):
            for i, block in enumerate(layer):
                layer[i] = GatedResidualBlock(block, config.temperature, config.gate_bias)
        self.last_costs: List[BlockCost] = []

    def gated_blocks(self) -> List[GatedResidualBlock]:
        return [m for m in self.modules() if isinstance(m, GatedResidualBlock)]

    def set_gate_noise(self, scale: float) -> None:
        """Scale of the gates' Gumbel noise in training forwards (0: the inference gates)."""
        if scale < 0:
            raise ValueError(f"gate noise scale must be >= 0, got {scale}")
        for b in self.gated_blocks():
            b.noise = float(scale)

    def gate_parameters(self) -> List[nn.Parameter]:
        """The gates' weights and biases (e.g. for their own optimiser group)."""
        return [p for b in self.gated_blocks() for p in b.gate.parameters()]

    def forward(self, x: torch.Tensor):
        out = super().forward(x)
        costs = [b.pop_cost() for b in self.gated_blocks()]
        if self.training:
            self.last_costs = [BlockCost(c.executed.detach(), c.total) for c in costs]
            return out, costs
        self.last_costs = costs
        return out

    @contextlib.contextmanager
    def dense_branches(self) -> Iterator[None]:
        """Run every branch densely (then masked) inside the ``with`` block."""
        blocks = self.gated_blocks()
        saved = [b.sparse for b in blocks]
        try:
            for b in blocks:
                b.sparse = False
            yield
        finally:
            for b, s in zip(blocks, saved):
                b.sparse = s


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def budget_loss(
    costs: Sequence[BlockCost], budget: float, step: int, anneal_steps: int
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """DynConv's sparsity loss: network term plus annealed per-block bounds (module docstring).

    Args:
        costs: one :class:`BlockCost` per gated block (training forward).
        budget: target executed share of the gated MACs.
        step: training step; bounds are ``[budget, budget]`` at 0 and ``[0, 1]`` from ``anneal_steps`` on.

    Returns:
        (scalar loss, ``{"fraction", "network", "blocks", "lower", "upper"}`` floats).
    """
    fraction = flops_fraction(costs).mean()
    network = (fraction - budget) ** 2
    p = min(max(step / anneal_steps, 0.0), 1.0) if anneal_steps > 0 else 1.0
    progress = math.cos(p * math.pi / 2) ** 2 if p < 1.0 else 0.0  # cos(pi/2) is not exactly 0
    lower, upper = progress * budget, 1.0 - progress * (1.0 - budget)
    per_block = torch.stack([c.fraction.mean() for c in costs])
    blocks = (F.relu(per_block - upper) ** 2 + F.relu(lower - per_block) ** 2).mean()
    stats = {"fraction": fraction.item(), "network": network.item(), "blocks": blocks.item(),
             "lower": lower, "upper": upper}  # fmt: skip
    return network + blocks, stats


class DynConvLoss:
    """Task loss (YOLOv5-style, :class:`~argos.adapters.yolo_loss.YOLOLoss`) + weighted budget loss.

    Also holds the training schedule of the gates' noise (module docstring), which
    :meth:`DynConvAdapter.train_step` applies before each forward (:meth:`noise_scale`).

    Args:
        net: the network (its head's anchors/strides, its config's budget).
        budget_weight: weight of :func:`budget_loss` (the paper's 10).
        anneal_steps: steps over which the per-block bounds relax (the paper: a third of training).
        budget: override of ``net.config.budget``.
        noise_steps: steps over which the Gumbel noise decays to 0 (:func:`gate_noise_scale`);
            after them training runs the inference gates. ``None``: constant noise (the paper).
        noise_schedule: one of :data:`NOISE_SCHEDULES`.
    """

    def __init__(
        self,
        net: DynConvYOLO,
        budget_weight: float = 10.0,
        anneal_steps: int = 1000,
        budget: Optional[float] = None,
        noise_steps: Optional[int] = None,
        noise_schedule: str = "cosine",
    ) -> None:
        self.budget = float(net.config.budget if budget is None else budget)
        self.budget_weight = float(budget_weight)
        self.anneal_steps = int(anneal_steps)
        self.noise_steps = None if noise_steps is None else int(noise_steps)
        self.noise_schedule = noise_schedule
        gate_noise_scale(0, self.noise_steps, noise_schedule)  # validates both
        self.task = YOLOLoss(net.head.anchors, net.head.stride.tolist(), net.head.nc)

    def noise_scale(self, step: int) -> float:
        """Gumbel noise scale of the gates at training ``step``."""
        return gate_noise_scale(step, self.noise_steps, self.noise_schedule)

    def __call__(
        self,
        outputs: Tuple[List[torch.Tensor], List[BlockCost]],
        targets: Optional[Sequence[Mapping[str, torch.Tensor]]],
        step: int,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """``outputs``: a training forward's ``(maps, costs)``; ``targets``: see :class:`YOLOLoss`,
        or None for the budget loss alone. Returns (scalar, stats)."""
        maps, costs = outputs
        budget, stats = budget_loss(costs, self.budget, step, self.anneal_steps)
        loss = self.budget_weight * budget
        stats["budget_loss"] = budget.item()
        if targets is not None:
            task, parts = self.task(maps, targets)
            loss = loss + task
            stats.update(task_loss=task.item(), **parts)
        stats["loss"] = loss.item()
        return loss, stats


# --------------------------------------------------------------------------------------------
# Adapter
# --------------------------------------------------------------------------------------------


class DynConvAdapter(ResNetYOLOAdapter):
    """Adapter for :class:`DynConvYOLO`; arguments as :class:`ResNetYOLOAdapter`, with a
    :class:`DynConvConfig` (default depth 101, budget 0.25).

    :meth:`flops` is the dense cost (every gate on, gate convs included): an upper bound.
    What ran is in ``last_flops_fraction`` (executed share of the gated branches' MACs, mean
    over the last batch), ``last_flops_fractions`` (per image) and ``last_gflops`` (per image:
    the dense cost minus the MACs the gates skipped, x2).
    """

    checkpoint_format = "argos.dynconv"
    config_class = DynConvConfig
    # Per-instance state, set on first use.
    _criterion: Optional[DynConvLoss] = None
    _steps: int = 0
    _last_hw: Optional[Tuple[int, int]] = None

    def _build(self, config: ResNetYOLOConfig) -> nn.Module:
        return DynConvYOLO(config)  # type: ignore[arg-type]

    def _backbone_extra_modules(self) -> Tuple[str, ...]:
        return ("gate",)

    @property
    def sparse(self) -> bool:
        """Gated branches run gather-scatter at inference (else dense then masked)."""
        return all(b.sparse for b in self._net.gated_blocks())

    @sparse.setter
    def sparse(self, value: bool) -> None:
        for b in self._net.gated_blocks():
            b.sparse = bool(value)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = super().forward(batch)
        self._last_hw = (int(batch.shape[-2]), int(batch.shape[-1]))
        return out

    @property
    def last_flops_fractions(self) -> List[float]:
        costs = self._net.last_costs
        return flops_fraction(costs).tolist() if costs else []

    @property
    def last_flops_fraction(self) -> Optional[float]:
        """Executed share of the gated branches' MACs in the last forward (batch mean); None before one."""
        f = self.last_flops_fractions
        return sum(f) / len(f) if f else None

    @property
    def last_gflops(self) -> List[float]:
        costs, hw = self._net.last_costs, self._last_hw
        if not costs or hw is None:
            return []
        skipped = sum(c.total - c.executed for c in costs)
        return (self.flops(hw) - 2 * skipped / 1e9).tolist()

    def flops(self, input_hw: Tuple[int, int]) -> float:
        """Dense GFLOPs (2 x MACs) at input ``(h, w)``: every branch executed, gates included."""
        last = self._net.last_costs  # the counting forward must not replace them
        try:
            with self._net.dense_branches():
                return super().flops(input_hw)
        finally:
            self._net.last_costs = last

    def train_step(
        self,
        images: torch.Tensor,
        targets: Optional[Sequence[Mapping[str, torch.Tensor]]],
        optimizer: torch.optim.Optimizer,
        step: Optional[int] = None,
        criterion: Optional[DynConvLoss] = None,
    ) -> Dict[str, float]:
        """One optimisation step of task + budget loss; the network is back in eval mode after.

        Args:
            images: Tensor[B, 3, H, W] in [0, 1] (e.g. from :meth:`preprocess`), H, W multiples of 32.
            targets: per image ``{"boxes": xyxy network-input pixels, "labels": 0..nc-1}``, or None
                for the budget loss alone.
            step: for the bounds' and the gate noise's schedules; default: this adapter's count
                of train steps.
            criterion: default ``DynConvLoss(self.module)`` (constant noise), kept between calls.

        Returns:
            The loss terms, the executed FLOPs fraction (``"fraction"``, of the gates as sampled
            in this step) and the gate noise scale (``"noise"``; at 0 the fraction is that of
            the inference gates, with training-mode BatchNorm).
        """
        if criterion is None:
            if self._criterion is None:
                self._criterion = DynConvLoss(self._net)
            criterion = self._criterion
        step = self._steps if step is None else int(step)
        net = self._net
        noise = criterion.noise_scale(step)
        net.set_gate_noise(noise)
        net.train()
        try:
            outputs = net(images.to(self.device))
            loss, stats = criterion(outputs, targets, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finally:
            net.eval()
        self._steps += 1
        stats["noise"] = noise
        return stats
