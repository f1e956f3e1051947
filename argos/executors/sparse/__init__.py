"""Block-sparse convolution for the ``gather_scatter`` executor (pure PyTorch)."""
from argos.executors.sparse.conv import MaskedDense, SparseConv2d, SparseConvBlock
from argos.executors.sparse.convert import context_of, convert, sparse_layers
from argos.executors.sparse.masks import SparseContext, layer_mask

__all__ = [
    "convert", "context_of", "sparse_layers", "SparseContext", "layer_mask",
    "SparseConv2d", "SparseConvBlock", "MaskedDense",
]  # fmt: skip
