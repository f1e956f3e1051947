"""QU-Net: a U-Net with binary weights, per-block DoReFa activations and squeeze-and-excitation.

Layout (``depth=4``)::

    stem -> down1 -> down2 -> down3 -> down4      encoder (max-pool, then two convs)
                                         |
    head <- up4 <- up3 <- up2 <- up1 <---+        decoder (bilinear x2, concat skip, two convs)

Every 3x3 conv of a quantized block is ``act -> BinaryConv2d -> BN -> x SE(act)``: the input is
quantized with DoReFa (``act_bits`` of the block), the weight is ``sign(w) * mean|w|``, and a
squeeze-and-excitation branch computed on the conv's input rescales its output channels.
Full-precision blocks are plain ``ReLU -> Conv -> BN``. The head (1x1 conv to the class logits)
is always full precision.

The configurations of the thesis's Table 4.1 are presets of :class:`QUNetConfig`
(:data:`PRESETS`), not separate classes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from argos.proposers.qunet.dct import BLOCK, block_dct
from argos.proposers.qunet.quant import FULL_PRECISION, ActQuant, BinaryConv2d

__all__ = ["QUNetConfig", "QUNet", "PRESETS", "block_names", "flop_breakdown"]

#: Table 4.1 configurations, in the thesis's order.
PRESETS = ("full_precision", "middle_quantized", "middle_up_quantized", "all_quantized", "all_quantized_dct")

_FP = FULL_PRECISION


def block_names(depth: int) -> Tuple[str, ...]:
    """Names of the blocks that ``act_bits``/``binary`` index: stem, down1..down{d}, up1..up{d}."""
    return ("stem",) + tuple(f"down{i}" for i in range(1, depth + 1)) + tuple(f"up{i}" for i in range(1, depth + 1))


def _thesis_bits(depth: int) -> Tuple[int, ...]:
    """8 bits in the stem and the first half of the encoder, 1 bit in the second half, 4 in the decoder."""
    first = (depth + 1) // 2
    enc = tuple(8 if i < first else 1 for i in range(depth))
    return (8,) + enc + (4,) * depth


@dataclass(frozen=True)
class QUNetConfig:
    """Architecture of a QU-Net (everything a checkpoint must match).

    Args:
        width: channels of the stem; encoder block ``k`` has ``width * 2^k`` (the deepest repeats
            the one before it), the decoder mirrors them.
        depth: number of down-sampling blocks.
        act_bits: per block (order of :func:`block_names`), the DoReFa bit-width of the conv
            inputs; 32 means full precision (ReLU, no quantizer).
        binary: per block, whether the conv weights are binary.
        se: squeeze-and-excitation on every quantized conv (binary weights or < 32-bit inputs).
        se_reduction: hidden width of the SE branch is ``max(4, in_channels // se_reduction)``.
        dct: feed the 8x8 block DCT-II of the image (64 coefficients per channel): the network
            runs at 1/8 of the input resolution and so do its logits.
        input_size: ``(height, width)`` the image is resized to; multiples of ``8 * 2^depth`` avoid
            uneven pooling (other sizes work, the decoder resizes to its skip connection).
        in_channels, num_classes: image channels (RGB) and logit channels (background, object).
        preset: the preset this config came from, informational.
    """

    width: int = 8
    depth: int = 4
    act_bits: Tuple[int, ...] = field(default_factory=lambda: _thesis_bits(4))
    binary: Tuple[bool, ...] = field(default_factory=lambda: (True,) * 9)
    se: bool = True
    se_reduction: int = 4
    dct: bool = False
    input_size: Tuple[int, int] = (240, 320)
    in_channels: int = 3
    num_classes: int = 2
    preset: Optional[str] = None

    def __post_init__(self) -> None:
        # Accept lists (from JSON) but store tuples so configs compare and hash.
        object.__setattr__(self, "act_bits", tuple(int(b) for b in self.act_bits))
        object.__setattr__(self, "binary", tuple(bool(b) for b in self.binary))
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        for name in ("width", "depth", "se_reduction", "in_channels", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"QUNetConfig.{name} must be a positive int, got {v!r}")
        if self.num_classes < 2:
            raise ValueError(f"QUNetConfig.num_classes must be >= 2 (background + objects), got {self.num_classes}")
        n = 2 * self.depth + 1
        if len(self.act_bits) != n or len(self.binary) != n:
            raise ValueError(
                f"act_bits and binary need one entry per block ({n} for depth {self.depth}: "
                f"{', '.join(block_names(self.depth))}), got {len(self.act_bits)} and {len(self.binary)}"
            )
        bad = [b for b in self.act_bits if not 1 <= b <= _FP]
        if bad:
            raise ValueError(f"act_bits must be in 1..{_FP} (32 = full precision), got {bad}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (height, width) > 0, got {self.input_size}")
        if self.dct and any(s % BLOCK for s in self.input_size):
            raise ValueError(f"dct=True needs an input_size that is a multiple of {BLOCK}, got {self.input_size}")
        grid = min(self.input_size) // (BLOCK if self.dct else 1)
        if grid < 2**self.depth:
            raise ValueError(
                f"input_size {self.input_size} is too small for depth {self.depth}"
                f"{' with DCT input (1/8 resolution)' if self.dct else ''}: the shorter side must be at least "
                f"{2**self.depth * (BLOCK if self.dct else 1)} pixels"
            )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "QUNetConfig":
        """A Table 4.1 configuration (see :data:`PRESETS`), with field overrides.

        - ``full_precision``: float weights and activations everywhere.
        - ``middle_quantized``: the two deepest encoder blocks binary with 1-bit activations.
        - ``middle_up_quantized``: plus the decoder, binary with 4-bit activations.
        - ``all_quantized``: plus the stem and first encoder blocks, binary with 8-bit activations.
        - ``all_quantized_dct``: ``all_quantized`` on the 8x8 block DCT-II of the image.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown QU-Net preset {name!r}; valid presets: {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in fields(cls)} - {"preset"}
        if unknown:
            raise ValueError(f"unknown QUNetConfig field(s) {sorted(unknown)}")
        depth = int(overrides.get("depth", 4))
        names = block_names(depth)
        thesis = dict(zip(names, _thesis_bits(depth)))
        first = (depth + 1) // 2
        middle = {f"down{i}" for i in range(first + 1, depth + 1)}
        up = {f"up{i}" for i in range(1, depth + 1)}
        quantized = {
            "full_precision": set(),
            "middle_quantized": middle,
            "middle_up_quantized": middle | up,
            "all_quantized": set(names),
            "all_quantized_dct": set(names),
        }[name]
        base = dict(
            depth=depth,
            act_bits=tuple(thesis[b] if b in quantized else _FP for b in names),
            binary=tuple(b in quantized for b in names),
            dct=name == "all_quantized_dct",
            preset=name,
        )
        base.update(overrides)
        return cls(**base)

    def block_bits(self) -> Dict[str, Tuple[int, int]]:
        """``{block: (weight_bits, act_bits)}``, e.g. ``{"stem": (1, 8), ...}``."""
        return {n: (1 if b else _FP, a) for n, b, a in zip(block_names(self.depth), self.binary, self.act_bits)}

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (lists for tuples)."""
        d = asdict(self)
        for k in ("act_bits", "binary", "input_size"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "QUNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        if not isinstance(d, dict):
            raise TypeError(f"QUNetConfig.from_dict expects a dict, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown QUNetConfig field(s) {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "QUNetConfig":
        return replace(self, **changes)


class SqueezeExcite(nn.Module):
    """Channel gates Tensor[B, out, 1, 1] in (0, 1) from the global mean of an input Tensor[B, in, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(4, in_channels // reduction)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return s[:, :, None, None]


class QConv(nn.Module):
    """``act -> 3x3 conv (binary or float) -> BN``, output scaled by SE of the conv's input.

    Args:
        act_bits: DoReFa bits of the input; 32 means ReLU (or identity when ``raw_input``).
        raw_input: the input is the network input (image in [0, 1] or normalized DCT), not a
            previous layer's pre-activation, so a full-precision conv takes it as is.
    """

    def __init__(
        self, in_channels: int, out_channels: int, act_bits: int, binary: bool, se: bool, se_reduction: int,
        raw_input: bool = False,
    ) -> None:
        super().__init__()
        quantized = binary or act_bits < _FP
        self.act = nn.Identity() if raw_input and act_bits >= _FP else ActQuant(act_bits)
        self.conv = BinaryConv2d(in_channels, out_channels, 3, padding=1, bias=False, binary=binary)
        self.conv.act_bits = int(act_bits)  # read by flop_breakdown
        self.bn = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(in_channels, out_channels, se_reduction) if se and quantized else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(x)
        y = self.bn(self.conv(a))
        if self.se is not None:
            y = y * self.se(a)
        return y


class Block(nn.Sequential):
    """Two :class:`QConv` with the same bit-widths (the U-Net's double conv)."""

    def __init__(self, in_channels: int, out_channels: int, act_bits: int, binary: bool, se: bool, se_reduction: int,
                 raw_input: bool = False) -> None:
        super().__init__(
            QConv(in_channels, out_channels, act_bits, binary, se, se_reduction, raw_input=raw_input),
            QConv(out_channels, out_channels, act_bits, binary, se, se_reduction),
        )


class QUNet(nn.Module):
    """The QU-Net proposer network.

    Args:
        config: a :class:`QUNetConfig` (default: ``all_quantized`` at width 8), or a preset name.

    Input: Tensor[B, 3, H, W] float RGB in [0, 1]. Output: logits Tensor[B, num_classes, H', W'],
    with ``(H', W') = (H, W)``, or ``(H/8, W/8)`` for DCT input.
    """

    def __init__(self, config: Optional[QUNetConfig] = None) -> None:
        super().__init__()
        if config is None:
            config = QUNetConfig.from_preset("all_quantized")
        elif isinstance(config, str):
            config = QUNetConfig.from_preset(config)
        if not isinstance(config, QUNetConfig):
            raise TypeError(f"config must be a QUNetConfig or a preset name, got {type(config).__name__}")
        self.config = c = config
        bits = dict(zip(block_names(c.depth), zip(c.act_bits, c.binary)))

        in_ch = c.in_channels * (BLOCK * BLOCK if c.dct else 1)
        # DCT coefficients are signed and spread over ~[-8, 8]; a learned per-channel affine maps
        # them into the [0, 1] the stem's quantizer keeps (init: +-3 sigma -> [0, 1]).
        self.input_norm = nn.BatchNorm2d(in_ch) if c.dct else None
        if self.input_norm is not None and c.act_bits[0] < _FP:
            nn.init.constant_(self.input_norm.weight, 1.0 / 6.0)
            nn.init.constant_(self.input_norm.bias, 0.5)

        enc = [c.width * 2 ** min(k, c.depth - 1) for k in range(c.depth + 1)]
        self.stem = Block(in_ch, enc[0], *bits["stem"], c.se, c.se_reduction, raw_input=True)
        self.downs = nn.ModuleList(
            Block(enc[k - 1], enc[k], *bits[f"down{k}"], c.se, c.se_reduction) for k in range(1, c.depth + 1)
        )
        ups: List[nn.Module] = []
        ch = enc[c.depth]
        for i in range(1, c.depth + 1):
            skip = enc[c.depth - i]
            out = enc[c.depth - i - 1] if c.depth - i - 1 >= 0 else c.width
            ups.append(Block(ch + skip, out, *bits[f"up{i}"], c.se, c.se_reduction))
            ch = out
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(ch, c.num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def output_stride(self) -> int:
        """Input pixels per logit pixel: 1, or 8 with DCT input."""
        return BLOCK if self.config.dct else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"QUNet expects Tensor[B, {self.config.in_channels}, H, W], got {tuple(x.shape)}")
        if self.config.dct:
            x = self.input_norm(block_dct(x))
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([skip, y], dim=1))
        # The last decoder output is a BN pre-activation; the full-precision head sees its ReLU.
        return self.head(F.relu(y))

    def extra_repr(self) -> str:
        c = self.config
        return f"preset={c.preset}, width={c.width}, depth={c.depth}, dct={c.dct}, se={c.se}"


def flop_breakdown(model: QUNet, input_hw: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """MACs of one forward, split by ``(weight_bits, act_bits)``.

    Convention: a MAC with both operands at most 8 bits counts as ``2 * w_bits * a_bits / 64``
    FLOP-equivalents (64 binary operations per FLOP, a k-bit x 1-bit product is k binary
    operations: the Bi-Real Net / ReActNet convention); any MAC with a float operand counts 2 FLOPs.
    The fixed 8x8 DCT and the SE branches are float. BN, pooling and quantizers are not counted.

    Returns:
        ``{"macs": {"w1a8": ..., "fp": ...}, "gflops_equiv": float, "gflops_dense": float}``
        where ``gflops_dense`` counts every MAC as 2 FLOPs.
    """
    h, w = input_hw if input_hw is not None else model.config.input_size
    macs: Dict[str, int] = {}
    equiv = [0.0]

    def add(n: int, wb: int, ab: int) -> None:
        low = wb <= 8 and ab <= 8
        key = f"w{wb}a{ab}" if low else "fp"
        macs[key] = macs.get(key, 0) + int(n)
        equiv[0] += n * (2.0 * wb * ab / 64.0 if low else 2.0)

    def hook(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            n = output.numel() * (m.in_channels // m.groups) * kh * kw
            wb = m.weight_bits if isinstance(m, BinaryConv2d) else _FP
            add(n, wb, getattr(m, "act_bits", _FP))
        elif isinstance(m, nn.Linear):
            add(output.numel() * m.in_features, _FP, _FP)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, model.config.in_channels, h, w, device=param.device))
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    if model.config.dct:
        add(model.config.in_channels * h * w * BLOCK * BLOCK, _FP, _FP)  # one 64-tap dot product per coefficient
    total = sum(macs.values())
    return {"macs": macs, "gflops_equiv": equiv[0] / 1e9, "gflops_dense": 2.0 * total / 1e9}
