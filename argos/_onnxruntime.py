"""One way to open an ONNX Runtime CPU session, for the QU-Net proposer and exported detectors."""
from __future__ import annotations

import os
from typing import Optional, Union

__all__ = ["cpu_session"]


def cpu_session(model: Union[str, os.PathLike, bytes], threads: int, missing: Optional[str] = None):
    """An onnxruntime CPU session on ``model`` (a file, or its bytes) with ``threads`` intra-op
    threads, one inter-op thread and no spinning workers: by default they spin after each run,
    which next to PyTorch's own thread pool steals the cores both need.

    Args:
        missing: the ``ImportError`` message when onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(missing or "onnxruntime is needed: pip install onnxruntime (or argos-cv[export])") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
