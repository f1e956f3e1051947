"""FLOP counting by forward hooks.

Convention: GFLOPs = 2 x multiply-accumulates (MACs) of the ``Conv2d``, ``ConvTranspose2d`` and
``Linear`` layers, biases, normalisation, activations and pooling not counted. This is the
convention behind YOLOv5's and ultralytics' "GFLOPs" figures (thop MACs x 2), up to the small
layers thop also counts.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator, List, Sequence

import torch
from torch import nn

__all__ = ["count_gflops", "counting_ms", "bookkeeping"]

# Wall time spent in count_gflops so far (ms). Counting runs a forward the first time an input
# shape appears; that is bookkeeping, so timings of inference leave it out (see counting_ms).
_COUNTING_MS = [0.0]


def counting_ms() -> float:
    """Total wall time spent in :func:`count_gflops` in this process, ms. Timers of inference
    subtract its change over the timed span (argos's FLOP statistics are not inference work)."""
    return _COUNTING_MS[0]


@contextlib.contextmanager
def bookkeeping() -> Iterator[None]:
    """Time spent inside counts as FLOP counting (:func:`counting_ms`), not inference: for
    counters other than :func:`count_gflops` (e.g. an ONNX graph's shape inference)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _COUNTING_MS[0] += (time.perf_counter() - start) * 1e3


def _macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return output.numel() * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.ConvTranspose2d):
        kh, kw = m.kernel_size  # each input element is scattered to out_channels/groups * kh * kw outputs
        return inputs[0].numel() * (m.out_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return output.numel() * m.in_features
    return 0


def count_gflops(module: nn.Module, input_shape: Sequence[int]) -> float:
    """GFLOPs (2 x MACs) of one forward of ``module`` on zeros of ``input_shape``.

    Args:
        module: runs in eval mode for the count; its training flag is restored afterwards.
        input_shape: e.g. ``(1, 3, H, W)``; the count covers the whole batch.

    Returns:
        float: 2 x MACs / 1e9.
    """
    start = time.perf_counter()
    total: List[int] = [0]

    def hook(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        total[0] += _macs(m, inputs, output)

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    param = next(module.parameters(), None)
    x = torch.zeros(
        tuple(int(s) for s in input_shape),
        device=param.device if param is not None else "cpu",
        dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32,
    )
    was_training = module.training
    try:
        module.eval()
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
        _COUNTING_MS[0] += (time.perf_counter() - start) * 1e3
    return 2.0 * total[0] / 1e9
