"""QU-Net: a quantized U-Net region proposer (binary weights, DoReFa activations, SE, optional DCT input).

- :mod:`.model`: :class:`QUNet`, :class:`QUNetConfig` and the Table 4.1 presets;
- :mod:`.quant`: binary-weight and DoReFa quantizers;
- :mod:`.dct`: 8x8 block DCT-II and its inverse;
- :mod:`.checkpoint`: bit-packed checkpoints with config and metrics;
- :mod:`.proposer`: ``proposer="qunet"``;
- :mod:`.train`, :mod:`.bench`: ``main(argv)`` entry points for training and proposer benchmarks.
"""
from argos.proposers.qunet.checkpoint import load_checkpoint, save_checkpoint, shipped_weights
from argos.proposers.qunet.model import PRESETS, QUNet, QUNetConfig
from argos.proposers.qunet.proposer import QUNetProposer

__all__ = ["QUNet", "QUNetConfig", "PRESETS", "QUNetProposer", "load_checkpoint", "save_checkpoint", "shipped_weights"]
