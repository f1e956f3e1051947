"""Block-sparse convolution (pure PyTorch, optional Triton): used by the ``gather_scatter`` executor and the DynConv adapter."""
from argos.sparse.conv import MaskedDense, SparseConv2d, SparseConvBlock
from argos.sparse.convert import context_of, convert, sparse_layers
from argos.sparse.masks import SparseContext, layer_mask

__all__ = [
    "convert", "context_of", "sparse_layers", "SparseContext", "layer_mask",
    "SparseConv2d", "SparseConvBlock", "MaskedDense",
]  # fmt: skip
