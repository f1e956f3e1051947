"""QU-Net checkpoints: config + metrics + weights, binary weights bit-packed (1 bit each).

File layout (little-endian)::

    b"ARGOSQUN"  magic (8 bytes)
    uint16       format version (1)
    uint32       header length in bytes
    header       UTF-8 JSON: config, metrics, meta, tensor table, SHA-256 of the payload
    payload      tensors back to back: binary weights as packed sign bits (bit set = +1, MSB
                 first, as ``np.packbits``), everything else as raw float32 / int64

A binary weight is stored as its signs plus the per-layer scale ``mean|w|``; loading sets the
latent weight to ``sign * scale``, which binarizes to exactly the same values, so the loaded
model's outputs equal the saved model's. The latent magnitudes are not kept: the file is for
inference (and fine-tuning from it), not for resuming an optimizer bit for bit.

No pickle is involved, so loading a file cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from argos.proposers.qunet.model import QUNet, QUNetConfig
from argos.proposers.qunet.quant import BinaryConv2d, binary_scale

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "read_header", "CheckpointInfo",
           "CheckpointError", "shipped_weights", "resolve_weights", "WEIGHTS_DIR", "portable_paths"]

MAGIC = b"ARGOSQUN"
VERSION = 1
SUFFIX = ".qunet"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_PREFIX = struct.Struct("<8sHI")
_DTYPES = {"float32": (torch.float32, np.float32), "int64": (torch.int64, np.int64)}

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A file is not a QU-Net checkpoint, is corrupt, or does not match the model."""


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself.

    Args:
        config: the architecture.
        metrics: figures the model reached (e.g. held-out ``regions_detected``), free-form.
        meta: anything else: training command, data, recommended post-processing
            (``{"postprocess": {"threshold": 0.5, "dilation": ...}}``).
    """

    config: QUNetConfig
    metrics: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)


_ABS_PATH = re.compile(r"(?<![\w.$~:/])/[^\s'\"]+")


def portable_paths(value: Any, roots: Optional[Dict[str, Path]] = None) -> Any:
    """``value`` (str, or nested dicts/lists of them) with every absolute path rewritten so that
    no checkpoint records the training machine's folders: under the assets root as
    ``$ARGOS_ASSETS/<relative>``, under the working directory as a relative path, elsewhere as
    the bare file name."""
    if roots is None:
        from argos.assets import assets_dir

        assets = assets_dir()
        roots = {"$ARGOS_ASSETS": assets.resolve()} if assets is not None else {}
        roots["."] = Path.cwd().resolve()
    if isinstance(value, dict):
        return {k: portable_paths(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_paths(v, roots) for v in value)
    if not isinstance(value, str):
        return value

    def rewrite(match: "re.Match[str]") -> str:
        path = Path(os.path.normpath(match.group(0)))
        for prefix, root in roots.items():
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            return rel.as_posix() if prefix == "." else f"{prefix}/{rel.as_posix()}"
        return path.name

    return _ABS_PATH.sub(rewrite, value)


def _binary_names(model: QUNet) -> set:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, BinaryConv2d) and m.binary}


def save_checkpoint(
    model: QUNet, path: PathLike, metrics: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None
) -> Path:
    """Write ``model`` (a :class:`QUNet`, or a DDP wrapper of one) to ``path``; returns the path.

    ``metrics`` and ``meta`` must be JSON-serializable. Absolute paths in ``meta`` (data
    folders, the training command) are stored portably (:func:`portable_paths`).
    """
    model = getattr(model, "module", model)
    meta = portable_paths(meta) if meta else meta
    if not isinstance(model, QUNet):
        raise TypeError(f"save_checkpoint expects a QUNet, got {type(model).__name__}")
    binary = _binary_names(model)
    table, chunks, offset = [], [], 0
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        entry: Dict[str, Any] = {"name": name, "shape": list(t.shape)}
        if name in binary:
            bits = np.packbits((t >= 0).numpy().reshape(-1))
            data = bits.tobytes()
            entry.update(kind="binary", scale=float(binary_scale(t.float())))
        elif t.is_floating_point():
            data = t.to(torch.float32).numpy().astype("<f4").tobytes()
            entry.update(kind="float32")
        elif t.dtype == torch.int64:
            data = t.numpy().astype("<i8").tobytes()
            entry.update(kind="int64")
        else:
            raise TypeError(f"cannot store state entry {name!r} of dtype {t.dtype}")
        entry.update(offset=offset, nbytes=len(data))
        offset += len(data)
        chunks.append(data)
        table.append(entry)
    payload = b"".join(chunks)
    header = {
        "format": "argos-qunet",
        "config": model.config.to_dict(),
        "metrics": metrics or {},
        "meta": meta or {},
        "tensors": table,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    try:
        head = json.dumps(header, sort_keys=True).encode("utf-8")
    except TypeError as err:
        raise TypeError(f"checkpoint metrics/meta must be JSON-serializable: {err}") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, VERSION, len(head)))
        f.write(head)
        f.write(payload)
    os.replace(tmp, path)  # a crash mid-write never leaves a half-written checkpoint under the real name
    return path


def _read(path: PathLike, with_payload: bool = True) -> Tuple[Dict[str, Any], bytes]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QU-Net checkpoint not found: {path}")
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
            raise CheckpointError(f"{path} is not a QU-Net checkpoint (no {MAGIC.decode()} header)")
        _, version, head_len = _PREFIX.unpack(prefix)
        if version != VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (this argos reads {VERSION})")
        head = f.read(head_len)
        if len(head) != head_len:
            raise CheckpointError(f"{path} is truncated: header cut short")
        try:
            header = json.loads(head.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path} is corrupt: header is not valid JSON ({err})") from err
        if not isinstance(header, dict) or header.get("format") != "argos-qunet":
            raise CheckpointError(f"{path} is corrupt: header does not describe a QU-Net checkpoint")
        payload = f.read() if with_payload else b""
    if with_payload:
        expected = header.get("payload_bytes")
        if len(payload) != expected:
            raise CheckpointError(f"{path} is truncated or padded: payload is {len(payload)} bytes, header says {expected}")
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            raise CheckpointError(f"{path} is corrupt: payload checksum mismatch")
    return header, payload


def _info(header: Dict[str, Any], path: PathLike) -> CheckpointInfo:
    try:
        config = QUNetConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid config in checkpoint ({err})") from err
    return CheckpointInfo(config, dict(header.get("metrics") or {}), dict(header.get("meta") or {}))


def read_header(path: PathLike) -> CheckpointInfo:
    """Config, metrics and meta of a checkpoint, without reading the weights."""
    header, _ = _read(path, with_payload=False)
    return _info(header, path)


def _state_dict(header: Dict[str, Any], payload: bytes, path: PathLike) -> Dict[str, torch.Tensor]:
    state = {}
    for e in header.get("tensors", []):
        try:
            name, shape, kind = e["name"], tuple(int(s) for s in e["shape"]), e["kind"]
            raw = payload[e["offset"]:e["offset"] + e["nbytes"]]
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is corrupt: bad tensor table entry {e!r}") from err
        n = int(np.prod(shape)) if shape else 1
        if kind == "binary":
            bits = np.unpackbits(np.frombuffer(raw, np.uint8))
            if bits.size < n:
                raise CheckpointError(f"{path} is corrupt: {name} has {bits.size} bits for {n} weights")
            signs = torch.from_numpy(bits[:n].astype(np.float32) * 2.0 - 1.0)
            state[name] = (signs * torch.tensor(float(e["scale"]), dtype=torch.float32)).reshape(shape)
        elif kind in _DTYPES:
            tdtype, ndtype = _DTYPES[kind]
            arr = np.frombuffer(raw, dtype=np.dtype(ndtype).newbyteorder("<"))
            if arr.size != n:
                raise CheckpointError(f"{path} is corrupt: {name} has {arr.size} values for shape {shape}")
            state[name] = torch.from_numpy(arr.astype(ndtype).reshape(shape)).to(tdtype)
        else:
            raise CheckpointError(f"{path} is corrupt: unknown tensor kind {kind!r} for {name}")
    return state


def _check_match(model: QUNet, state: Dict[str, torch.Tensor], path: PathLike) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:3]}")
        raise CheckpointError(f"{path} does not match the model: " + "; ".join(parts))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Tuple[QUNet, CheckpointInfo]:
    """Build the model a checkpoint describes and load its weights.

    Returns:
        ``(model in eval mode, CheckpointInfo)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): not a QU-Net checkpoint, truncated, checksum mismatch,
            invalid config, or weights that do not fit the config.
    """
    header, payload = _read(resolve_weights(path))
    info = _info(header, path)
    model = QUNet(info.config)
    state = _state_dict(header, payload, path)
    _check_match(model, state, path)
    model.load_state_dict(state)
    return model.to(map_location).eval(), info


def load_weights(model: QUNet, path: PathLike) -> CheckpointInfo:
    """Load a checkpoint into an existing model; its config must equal the model's.

    Raises:
        CheckpointError: the checkpoint's config differs (the message lists the fields) or the
            file is not a valid checkpoint.
    """
    model = getattr(model, "module", model)
    header, payload = _read(resolve_weights(path))
    info = _info(header, path)
    mine, theirs = model.config.to_dict(), info.config.to_dict()
    mine.pop("preset"), theirs.pop("preset")
    diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} was saved for a different QU-Net config ({shown})")
    state = _state_dict(header, payload, path)
    _check_match(model, state, path)
    model.load_state_dict(state)
    return info


def shipped_weights() -> Dict[str, Path]:
    """Checkpoints that ship with argos: ``{"qunet-coco": Path, ...}``."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name[: -len(SUFFIX)]: p for p in sorted(WEIGHTS_DIR.glob(f"*{SUFFIX}"))}


def resolve_weights(weights: PathLike) -> Path:
    """A shipped checkpoint name (``"qunet-coco"``) or a file path -> the file's path."""
    if isinstance(weights, str) and weights in shipped_weights():
        return shipped_weights()[weights]
    path = Path(weights)
    if not path.is_file():
        names = ", ".join(shipped_weights()) or "none"
        raise FileNotFoundError(f"QU-Net weights not found: {weights} (shipped checkpoints: {names})")
    return path
