"""``convert``: rewrite a module's convolutions into sparse-aware ones sharing one context."""
from __future__ import annotations

import copy
import sys
from typing import Iterable, List, Optional, Tuple, Type, Union

from torch import nn

from argos.sparse.conv import MaskedDense, SparseConv2d, SparseConvBlock, TileSpec
from argos.sparse.masks import SparseContext

__all__ = ["convert", "context_of", "sparse_layers"]

_SPARSE_TYPES = (SparseConv2d, SparseConvBlock, MaskedDense)


def _ultralytics_conv() -> Optional[type]:
    """ultralytics' ``Conv`` class if ultralytics is loaded (no model can hold it otherwise)."""
    mod = sys.modules.get("ultralytics.nn.modules.conv")
    return getattr(mod, "Conv", None) if mod is not None else None


def _non_spatial_types() -> Tuple[type, ...]:
    """Modules whose convs run on tensors that are not image grids; they stay dense and unmasked."""
    out = []
    mod = sys.modules.get("ultralytics.nn.modules.block")
    if mod is not None and hasattr(mod, "DFL"):
        out.append(mod.DFL)  # a 1x1 conv over (bins, 4 sides, anchors)
    return tuple(out)


def _as_block(m: nn.Module) -> Optional[Tuple[nn.Conv2d, Optional[nn.BatchNorm2d], nn.Module]]:
    """``(conv, bn, act)`` when ``m`` is an ultralytics ``Conv`` block whose forward is
    ``act(bn(conv(x)))`` (``bn`` ``None`` when already folded: an ``nn.Identity`` left by
    :func:`~argos.adapters.yolov5.fold_batchnorm`, or ``act(conv(x))`` after ultralytics'
    ``fuse()``)."""
    conv_cls = _ultralytics_conv()
    if conv_cls is None or not isinstance(m, conv_cls) or type(m).forward is not conv_cls.forward:
        return None
    conv, bn, act = getattr(m, "conv", None), getattr(m, "bn", None), getattr(m, "act", None)
    if type(conv) is not nn.Conv2d or not isinstance(act, nn.Module):
        return None
    own_forward = m.__dict__.get("forward")
    if own_forward is None:
        if type(bn) is nn.Identity:  # BatchNorm already folded into conv (fold_batchnorm)
            return conv, None, act
        return (conv, bn, act) if type(bn) is nn.BatchNorm2d else None
    # ultralytics' fuse() drops bn and sets the instance's forward to forward_fuse.
    fused = getattr(own_forward, "__func__", None) is conv_cls.forward_fuse and bn is None
    return (conv, None, act) if fused else None


def _is_plain_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` (or subclass) that computes exactly what ``nn.Conv2d`` does."""
    t = type(m)
    return (
        isinstance(m, nn.Conv2d)
        and t.forward is nn.Conv2d.forward
        and t._conv_forward is nn.Conv2d._conv_forward
        and "forward" not in m.__dict__
        and m.padding_mode == "zeros"
    )


def _copy_attributes(src: nn.Module, dst: nn.Module) -> None:
    """Plain attributes a parent's forward may read off its children (ultralytics' ``f``, ``i``,
    ``type``, ``np`` routing fields)."""
    for k, v in vars(src).items():
        if not k.startswith("_") and k != "training" and k not in ("conv", "bn", "act", "forward"):
            if not hasattr(dst, k):
                setattr(dst, k, v)


def convert(
    module: nn.Module,
    inplace: bool = False,
    *,
    tile: TileSpec = None,
    context: Optional[SparseContext] = None,
    exclude: Iterable[Union[str, Type[nn.Module]]] = (),
    unsupported: str = "dense",
) -> nn.Module:
    """Rewrite every ``nn.Conv2d`` of ``module`` into a sparse-aware layer.

    - ultralytics ``Conv`` blocks (``act(bn(conv(x)))``) become :class:`SparseConvBlock`, with the
      BatchNorm folded into the conv on the sparse path; the block's output is masked.
    - other ``nn.Conv2d`` become :class:`SparseConv2d`; the conv's output is masked and what
      follows (a separate BatchNorm, activations, adds, concat, pooling, upsampling, heads)
      runs densely as before.
    - convs the sparse path cannot compute (a subclass with its own ``forward``, a non-zero
      ``padding_mode``) become :class:`MaskedDense` (dense conv times the mask: same semantics,
      no saving) with ``unsupported="dense"``, or raise ``TypeError`` with ``"error"``.
    - ``ConvTranspose2d``, ``Linear`` and other layers are left as they are; so are ultralytics'
      ``DFL`` and anything in ``exclude``, whose convs run on non-image tensors.

    All rewritten layers share one :class:`SparseContext`; get it with :func:`context_of` and run
    ``with ctx.activate(mask): module(x)``. Outside ``activate`` (or with an all-active mask) the
    module computes exactly what the original does. For inference (eval mode) only.

    Args:
        module: the network.
        inplace: rewrite ``module`` itself (its children are replaced) instead of a deep copy.
            Either way, use the returned module (a bare ``Conv2d`` root is replaced).
        tile: ``None``: each kxk layer picks, per frame, the cheapest of tiles of 2..16 cells,
            per-position im2col or dense-then-mask under a cost model of its shape and mask
            (``sparse/conv.py``). Or force one: a tile size in output cells (int or
            ``(th, tw)``), a callable ``(h, w, kernel, stride) -> (th, tw)``, ``"im2col"`` or
            ``"dense"``. 1x1 unpadded convs always gather active positions.
        context: share an existing context (e.g. to set ``halo``); a new one otherwise.
        exclude: submodule names (as in ``named_modules``) or types to leave untouched.
        unsupported: ``"dense"`` (masked dense fallback) or ``"error"``.

    Returns:
        The converted module.
    """
    if unsupported not in ("dense", "error"):
        raise ValueError(f"unsupported must be 'dense' or 'error', got {unsupported!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(module).__name__}")
    if any(isinstance(m, _SPARSE_TYPES) for m in module.modules()):
        raise ValueError("module is already converted (it holds sparse layers); convert the original")
    exclude = tuple(exclude)
    names = {e for e in exclude if isinstance(e, str)}
    types = tuple(e for e in exclude if isinstance(e, type)) + _non_spatial_types()
    bad = [e for e in exclude if not isinstance(e, (str, type))]
    if bad:
        raise TypeError(f"exclude holds module names (str) or types, got {bad!r}")
    ctx = context if context is not None else SparseContext()
    if not inplace:
        module = copy.deepcopy(module)
    refused: List[str] = []

    def rewrite(m: nn.Module, name: str) -> nn.Module:
        if name in names or (types and isinstance(m, types)):
            return m
        block = _as_block(m)
        if block is not None:
            new = SparseConvBlock(*block, context=ctx, tile=tile)
            new.train(m.training)
            _copy_attributes(m, new)
            return new
        if _is_plain_conv(m):
            return SparseConv2d.from_conv(m, ctx, tile)  # type: ignore[arg-type]
        if isinstance(m, nn.Conv2d):
            if unsupported == "error":
                refused.append(f"{name or '<root>'} ({type(m).__name__})")
                return m
            return MaskedDense(m, ctx)
        for child_name, child in list(m.named_children()):
            new = rewrite(child, f"{name}.{child_name}" if name else child_name)
            if new is not child:
                setattr(m, child_name, new)
        return m

    module = rewrite(module, "")
    if refused:
        raise TypeError(
            "no sparse path for these convs (own forward or non-zero padding_mode): " + ", ".join(refused)
            + "; pass unsupported='dense' for a masked dense fallback or exclude them"
        )
    return module


def sparse_layers(module: nn.Module) -> List[nn.Module]:
    """The sparse layers of a converted module, in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, _SPARSE_TYPES)]


def context_of(module: nn.Module) -> SparseContext:
    """The :class:`SparseContext` shared by the sparse layers of a converted module."""
    layers = sparse_layers(module)
    if not layers:
        raise ValueError(f"{type(module).__name__} holds no sparse layers; run convert() first")
    return layers[0].context
