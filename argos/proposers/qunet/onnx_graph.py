"""The QU-Net proposer network as an ONNX graph, and an onnxruntime session to run it.

The exported graph maps the proposer's network input to its logits:

- input ``image``: Tensor[B, 3, H, W] float32 RGB in [0, 1], already resized to the model's
  ``input_size`` (what :meth:`QUNetProposer.preprocess` returns: ``cv2.resize`` then ``/255``);
- output ``logits``: Tensor[B, num_classes, H', W'], ``(H', W') = (H, W) / output_stride``.

The 8x8 block DCT of DCT presets is **inside** the graph (a constant stride-8 convolution), so a
runtime only has to resize and scale the image. Binary weights are stored as their effective
float values ``sign(w) * mean|w|`` and the DoReFa quantizers become ``Clip -> Mul -> Round -> Div``
(ONNX ``Round`` rounds half to even, like ``torch.round``). Threshold, dilation and the other
post-processing settings of the checkpoint are written to the model's ``metadata_props``.

The command-line tool (``argos export qunet``) and the torch-vs-onnxruntime check live in
:mod:`argos.tools.qunet.export`.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from argos.proposers.qunet.checkpoint import CheckpointInfo, load_checkpoint
from argos.proposers.qunet.dct import BLOCK, dct_basis
from argos.proposers.qunet.model import QUNet
from argos.proposers.qunet.quant import BinaryConv2d

__all__ = ["ExportableQUNet", "export_onnx", "ort_session", "INPUT_NAME", "OUTPUT_NAME"]

PathLike = Union[str, os.PathLike]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class _BlockDCTInput(nn.Module):
    """``input_norm(block_dct(x))`` with the DCT kernel as a constant of fixed shape.

    :func:`~argos.proposers.qunet.dct.block_dct` builds its kernel from ``x.shape`` at run time,
    which the TorchScript exporter traces as a kernel of unknown shape and refuses.
    """

    def __init__(self, in_channels: int, input_norm: nn.Module) -> None:
        super().__init__()
        self.register_buffer("kernel", dct_basis(BLOCK).repeat(in_channels, 1, 1, 1))
        self.groups = in_channels
        self.input_norm = input_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_norm(F.conv2d(x, self.kernel, stride=BLOCK, groups=self.groups))


class ExportableQUNet(nn.Module):
    """A frozen eval-mode QU-Net in export form: same outputs, plain ops only.

    - Each binary conv becomes a plain conv holding its effective weight ``sign(w) * mean|w|``
      (what it uses at inference), so the graph has one constant per weight instead of the
      per-forward binarization with its float64 mean.
    - No parameter requires grad, so the DoReFa quantizers take their inference branch
      (``clamp``, ``round(a * n) / n``: no straight-through arithmetic).
    - DCT presets: the block DCT and ``input_norm`` run in :class:`_BlockDCTInput`, and the
      network behind it is the same QU-Net seen as a plain one with ``3 * 64`` input channels.

    Input Tensor[B, 3, H, W] float in [0, 1]; output the logits of ``model``. ``model`` is not touched.
    """

    def __init__(self, model: QUNet) -> None:
        super().__init__()
        model = getattr(model, "module", model)
        if not isinstance(model, QUNet):
            raise TypeError(f"expected a QUNet, got {type(model).__name__}")
        net = copy.deepcopy(model).cpu().float().eval()
        net.requires_grad_(False)
        for m in net.modules():
            if isinstance(m, BinaryConv2d) and m.binary:
                with torch.no_grad():
                    m.weight.copy_(m.effective_weight())
                m.binary = False
                m._cache = None
        c = model.config
        self.config = c
        self.dct: Optional[_BlockDCTInput] = None
        if c.dct:
            self.dct = _BlockDCTInput(c.in_channels, net.input_norm)
            net.input_norm = None
            # The stem already takes in_channels * 64 inputs; only forward's DCT switch changes.
            net.config = c.replace(dct=False, in_channels=c.in_channels * BLOCK * BLOCK)
        self.net = net
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.dct(x) if self.dct is not None else x)


def _load(weights_or_model: Union[QUNet, PathLike]) -> tuple:
    if isinstance(weights_or_model, nn.Module):
        return getattr(weights_or_model, "module", weights_or_model), None
    if isinstance(weights_or_model, (str, os.PathLike)):
        return load_checkpoint(weights_or_model)
    raise TypeError(f"weights_or_model must be a QUNet, a shipped checkpoint name or a path, "
                    f"got {type(weights_or_model).__name__}")


def _metadata(model: "ExportableQUNet", info: Optional[CheckpointInfo]) -> Dict[str, str]:
    c = model.config
    meta = {
        "argos.format": "qunet-logits",
        "argos.config": json.dumps(c.to_dict(), sort_keys=True),
        "argos.input": "RGB float32 in [0, 1], resized (aspect not kept) to input_size (height, width)",
        "argos.input_size": json.dumps(list(c.input_size)),
        "argos.output_stride": str(BLOCK if c.dct else 1),
        "argos.foreground": "1 - softmax(logits, dim=1)[:, 0]",
    }
    if info is not None and info.meta.get("postprocess"):
        meta["argos.postprocess"] = json.dumps(info.meta["postprocess"], sort_keys=True)
    return meta


def export_onnx(weights_or_model: Union[QUNet, PathLike], out_path: PathLike, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Export a QU-Net to ONNX (TorchScript exporter); returns ``out_path``.

    Args:
        weights_or_model: a :class:`QUNet`, a shipped checkpoint name (``"qunet-coco"``) or a
            ``.qunet`` file.
        out_path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset (>= 11: ``Round`` and ``Resize`` as used here).
        dynamic_batch: leave the batch dimension symbolic; height and width stay fixed at the
            model's ``input_size`` (the pooling/upsampling sizes are baked in).

    Graph: ``image`` Tensor[B, 3, H, W] float32 in [0, 1] at ``input_size`` -> ``logits``
    Tensor[B, num_classes, H', W']; the block DCT (DCT presets) is part of the graph.
    """
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 11:
        raise ValueError(f"opset must be an int >= 11, got {opset!r}")
    model, info = _load(weights_or_model)
    net = ExportableQUNet(model)
    h, w = net.config.input_size
    dummy = torch.zeros(1, net.config.in_channels, h, w)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        # The shape checks in forward and block_dct are constants at the fixed input size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(net, (dummy,), str(out_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    try:
        import onnx
    except ImportError:  # the metadata is a convenience; the graph is already written
        return out_path
    proto = onnx.load(str(out_path))
    for k, v in _metadata(net, info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(out_path))
    return out_path


def ort_session(onnx: Union[PathLike, bytes]):
    """An onnxruntime CPU session on an exported model (a file, or its bytes), with PyTorch's
    thread count and no spinning workers: by default they spin after each run, which next to
    PyTorch's own thread pool (a detector runs right after) steals the cores both need."""
    from argos._onnxruntime import cpu_session

    return cpu_session(onnx, torch.get_num_threads(), missing="running QU-Net in onnxruntime needs it: pip install "
                                                             "onnxruntime onnx (or argos[export])")
