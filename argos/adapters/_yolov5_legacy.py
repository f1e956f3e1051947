"""Original YOLOv5 checkpoints without the ``yolov5`` package.

Original checkpoints pickle whole ``models.yolo.Model``/``DetectionModel`` objects of the YOLOv5
repository. They are unpickled here with a restricted unpickler that turns every ``models.*`` and
``utils.*`` class into an inert stand-in ``nn.Module``; the network is then rebuilt from the
checkpoint's own ``yaml`` dict with ultralytics' ``Conv``/``C3`` blocks (same parameter names) and
the small anchor-based :class:`Detect` head below, and the state dict is loaded strictly.

The restricted unpickler is a guard, not a sandbox: load only checkpoints you trust.
"""
from __future__ import annotations

import importlib
import math
import os
import pickle
import pickletools
import types
import zipfile
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from torch import nn

__all__ = [
    "UnsafeCheckpointError",
    "checkpoint_kind",
    "restricted_load",
    "Detect",
    "SPPF",
    "LegacyYOLOv5",
    "load_legacy_yolov5",
]


class UnsafeCheckpointError(ValueError):
    """A checkpoint references a Python global the restricted loader does not allow."""


# --------------------------------------------------------------------------------------------
# What a checkpoint may reference
# --------------------------------------------------------------------------------------------

# Prefixes of the YOLOv5 repository's own modules, replaced by stand-ins.
_STANDIN_PREFIXES = ("models.", "utils.")

_SAFE_GLOBALS: Set[Tuple[str, str]] = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "device"),
    # numpy arrays and scalars (e.g. in training metadata); protocol 2 pickles bytes via _codecs
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    # training metadata (``opt``) of YOLOv5/ultralytics checkpoints
    ("pathlib", "Path"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("argparse", "Namespace"),
    ("types", "SimpleNamespace"),
}
_SAFE_BUILTINS = {
    "set", "frozenset", "dict", "list", "tuple", "slice", "range",
    "int", "float", "complex", "bool", "str", "bytes", "bytearray",
}  # fmt: skip


def _is_safe_global(module: str, name: str) -> bool:
    """True when ``module.name`` is plain data or a torch/numpy reconstruction helper."""
    if module in ("builtins", "__builtin__"):
        return name in _SAFE_BUILTINS
    if (module, name) in _SAFE_GLOBALS:
        return True
    if module == "torch":
        obj = getattr(torch, name, None)
        # dtypes (``torch.float16``) and legacy storage classes (``torch.HalfStorage``)
        return isinstance(obj, torch.dtype) or (name.endswith("Storage") and isinstance(obj, type))
    if module.startswith("torch.nn.modules."):
        # Module classes are rebuilt with __new__ + __setstate__: no constructor code runs.
        obj = _import_attr(module, name)
        return isinstance(obj, type) and issubclass(obj, nn.Module)
    return False


def _is_safe_ultralytics_global(module: str, name: str) -> bool:
    """ultralytics classes a checkpoint may hold: its nn.Modules and its namespace type."""
    if not (module == "ultralytics" or module.startswith("ultralytics.")):
        return False
    obj = _import_attr(module, name)
    if not isinstance(obj, type):
        return False  # functions could be called through REDUCE
    if module.startswith("ultralytics.nn."):
        return issubclass(obj, nn.Module)
    return (module, name) == ("ultralytics.utils", "IterableSimpleNamespace")


def _import_attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


# --------------------------------------------------------------------------------------------
# Stand-ins and the restricted unpickler
# --------------------------------------------------------------------------------------------


class _StandIn(nn.Module):
    """Inert placeholder for a class of the YOLOv5 repository; holds only its pickled state."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{type(self).__module__}.{type(self).__name__} is a stand-in for unpickling; it cannot run"
        )


_STANDINS: Dict[Tuple[str, str], type] = {}


def _standin(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STANDINS:
        # Same name as the original class, so module trees can be compared by type name.
        _STANDINS[key] = type(name, (_StandIn,), {"__module__": module, "__qualname__": name})
    return _STANDINS[key]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves ``models.*``/``utils.*`` to stand-ins; refuses anything not on the allowlist."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_STANDIN_PREFIXES):
            return _standin(module, name)
        if _is_safe_global(module, name):
            if module == "__builtin__":
                module = "builtins"
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"checkpoint references {module}.{name}, which the restricted YOLOv5 loader does not "
            "allow (only torch tensors/modules, containers and the YOLOv5 repository's classes); "
            "refusing to load it"
        )


def _restricted_pickle_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# What ``torch.load(..., pickle_module=...)`` needs: ``Unpickler``, ``load`` and ``__name__``.
restricted_pickle = types.ModuleType("argos_restricted_pickle")
restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_pickle_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def restricted_load(path: "os.PathLike[str] | str") -> Any:
    """``torch.load`` a YOLOv5 checkpoint through the restricted unpickler, on CPU.

    Raises:
        UnsafeCheckpointError: the pickle references a global outside the allowlist.
        ValueError: the file is not a readable torch checkpoint.
    """
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except UnsafeCheckpointError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------------------------
# Telling original YOLOv5 checkpoints from ultralytics ones without unpickling
# --------------------------------------------------------------------------------------------

_STRING_OPS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
    "STRING", "BINSTRING", "SHORT_BINSTRING",
}  # fmt: skip


def _pickle_globals(data: bytes) -> Set[Tuple[str, str]]:
    """Every ``(module, name)`` a pickle imports, read from its opcodes without running it.

    ``STACK_GLOBAL`` takes its two operands from the stack; they are accepted only when the two
    previous pushes were literal (or memoized) strings, so nothing can be smuggled past the scan.
    """
    pushed: List[Optional[str]] = []  # history of pushed values: the string, or None
    memo: Dict[int, Optional[str]] = {}
    found: Set[Tuple[str, str]] = set()
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add((module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            if len(pushed) < 2 or pushed[-1] is None or pushed[-2] is None:
                raise UnsafeCheckpointError("checkpoint imports a global whose name is computed at load time")
            found.add((pushed[-2], pushed[-1]))  # type: ignore[arg-type]
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else arg.decode("latin1"))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(arg)))
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise UnsafeCheckpointError("checkpoint uses the copyreg extension registry")
        else:
            pushed.append(None)
    return found


def checkpoint_kind(path: "os.PathLike[str] | str") -> str:
    """``"yolov5"`` (original repository) or ``"ultralytics"``, from the pickle's imports.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: it imports a global outside the allowlist.
        ValueError: not a torch zip checkpoint of either kind.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.lower().endswith(".onnx"):
        raise ValueError(f"{path}: an ONNX export, not a torch checkpoint: use the 'onnx' adapter "
                         "(argos.wrap(path) or --weights with the default --detector; backend='openvino' for OpenVINO)")
    if path.lower().endswith((".engine", ".tflite", ".xml")):
        raise ValueError(f"{path}: an exported model ({os.path.splitext(path)[1]}); only ONNX exports run "
                         "(the 'onnx' adapter): pass the .onnx file, or the PyTorch .pt checkpoint it was exported from")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if any(n.endswith("/constants.pkl") for n in names):
                raise ValueError(f"{path}: TorchScript archives are not supported; pass the .pt checkpoint")
            if len(pkl) != 1:
                raise ValueError(f"{path}: not a torch checkpoint (no data.pkl in the archive)")
            data = zf.read(pkl[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ValueError(
            f"{path}: not a readable torch checkpoint (expected the zip format of torch>=1.6; {e})"
        ) from e
    try:
        found = _pickle_globals(data)
    except (ValueError, IndexError, EOFError) as e:
        if isinstance(e, UnsafeCheckpointError):
            raise
        raise ValueError(f"{path}: corrupt pickle in checkpoint ({e})") from e

    yolov5 = any(m.startswith(_STANDIN_PREFIXES) for m, _ in found)
    ultra = any(m == "ultralytics" or m.startswith("ultralytics.") for m, _ in found)
    if yolov5 == ultra:
        raise ValueError(
            f"{path}: not a YOLOv5 or ultralytics detection checkpoint "
            f"(it references {'both' if yolov5 else 'neither'} models.* / ultralytics.* classes)"
        )
    kind = "yolov5" if yolov5 else "ultralytics"
    for module, name in sorted(found):
        if module.startswith(_STANDIN_PREFIXES) and kind == "yolov5":
            continue
        if _is_safe_global(module, name) or (kind == "ultralytics" and _is_safe_ultralytics_global(module, name)):
            continue
        raise UnsafeCheckpointError(
            f"{path}: checkpoint references {module}.{name}, which is not on the allowlist of the "
            f"{kind} loader; refusing to load it. If you trust the file, load it yourself and pass "
            "the model with model=..."
        )
    return kind


# --------------------------------------------------------------------------------------------
# The network, rebuilt from the checkpoint's yaml dict
# --------------------------------------------------------------------------------------------


class SPPF(nn.Module):
    """YOLOv5's SPPF: unlike ultralytics' (``cv1`` without activation), ``cv1`` here has SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        from ultralytics.nn.modules import Conv

        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Detect(nn.Module):
    """Anchor-based YOLOv5 head (release 6.x semantics).

    Per level ``i`` and anchor, with ``s = sigmoid(conv output)``:
    ``xy = (2 s_xy - 0.5 + grid) * stride_i``, ``wh = (2 s_wh)^2 * anchors_i * stride_i``.
    The ``anchors`` buffer (Tensor[nl, na, 2]) is in stride units, as in the state dict.

    Returns (eval): Tensor[B, N, 5 + nc] of ``cx, cy, w, h`` (input pixels), objectness and class
    probabilities, ``N = na * sum(h_i * w_i)``. In training mode, the per-level raw maps
    Tensor[B, na, h_i, w_i, 5 + nc].
    """

    def __init__(self, nc: int, anchors: List[List[float]], ch: List[int]) -> None:
        """``anchors``: per level ``[w0, h0, w1, h1, ...]`` in pixels; :meth:`set_stride` converts."""
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        # Not in YOLOv5's state dict: the model's stride is stored on the model.
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self._grids: Dict[Tuple[int, int, int, torch.dtype, torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}

    def set_stride(self, stride: torch.Tensor) -> None:
        """Set Tensor[nl] strides and turn the pixel anchors into stride units (as YOLOv5 does)."""
        stride = torch.as_tensor(stride, dtype=torch.float32, device=self.anchors.device)
        self.anchors /= stride.view(-1, 1, 1)
        self.stride.copy_(stride)
        self._grids = {}

    def _grid(self, i: int, ny: int, nx: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (i, ny, nx, like.dtype, like.device)
        if key not in self._grids:
            y, x = torch.arange(ny, device=like.device), torch.arange(nx, device=like.device)
            yv, xv = torch.meshgrid(y, x, indexing="ij")
            shape = (1, self.na, ny, nx, 2)
            grid = (torch.stack((xv, yv), 2).expand(shape) - 0.5).to(like.dtype)
            anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(shape).to(like.dtype)
            self._grids[key] = (grid, anchor_grid)
        return self._grids[key]

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        self._grids = {}  # device/dtype moves invalidate the cached grids
        return super()._apply(fn, recurse)

    def forward(self, xs: List[torch.Tensor]) -> Any:
        maps, z = [], []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            maps.append(x)
            if self.training:
                continue
            grid, anchor_grid = self._grid(i, ny, nx, x)
            xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * self.stride[i]
            wh = (wh * 2) ** 2 * anchor_grid
            z.append(torch.cat((xy, wh, conf), 4).view(bs, -1, self.no))
        return maps if self.training else torch.cat(z, 1)


class LegacyYOLOv5(nn.Module):
    """A YOLOv5 detection network rebuilt from its yaml dict.

    Attributes:
        model (nn.Sequential): the layers; each has ``.i`` (index) and ``.f`` (input indices).
        save (list[int]): layers whose outputs later layers read.
        names (dict[int, str]), stride (Tensor[nl], measured), yaml (dict).

    Built with random init; :func:`load_legacy_yolov5` loads a checkpoint's weights into it.
    """

    def __init__(self, cfg: Dict[str, Any], names: Optional[Dict[int, str]] = None) -> None:
        super().__init__()
        self.yaml = cfg
        self.model, self.save = parse_model(cfg, ch=int(cfg.get("ch", 3)))
        self.nc = int(cfg["nc"])
        self.names = names if names is not None else {i: f"class{i}" for i in range(self.nc)}
        head = self.model[-1]
        if not isinstance(head, Detect):
            raise ValueError(f"the last layer must be Detect, got {type(head).__name__}")
        stride = self._measure_stride(head)
        head.set_stride(stride)
        self.register_buffer("stride", stride, persistent=False)

    @torch.no_grad()
    def _measure_stride(self, head: "Detect", size: int = 256) -> torch.Tensor:
        """Tensor[nl] input pixels per cell of each Detect input, from one forward (as YOLOv5)."""
        shapes: List[int] = []
        handle = head.register_forward_pre_hook(lambda m, args: shapes.extend(x.shape[-2] for x in args[0]))
        was_training = self.training
        try:
            self.eval()  # eval: BatchNorm running statistics stay untouched
            self.forward(torch.zeros(1, int(self.yaml.get("ch", 3)), size, size))
        finally:
            handle.remove()
            self.train(was_training)
        return torch.tensor([size / s for s in shapes], dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> Any:
        """Tensor[B, 3, H, W] in [0, 1], H and W multiples of the max stride -> see :class:`Detect`."""
        y: List[Optional[torch.Tensor]] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


def _make_divisible(x: float, divisor: int) -> int:
    return int(math.ceil(x / divisor) * divisor)


def parse_model(cfg: Dict[str, Any], ch: int = 3) -> Tuple[nn.Sequential, List[int]]:
    """YOLOv5's ``parse_model``: yaml dict -> (layers, indices of saved outputs)."""
    from ultralytics.nn.modules import C3, Bottleneck, Concat, Conv, Focus

    act = cfg.get("activation")
    if act not in (None, "nn.SiLU()"):
        raise ValueError(f"activation {act!r} in the checkpoint's yaml is not supported (only SiLU)")
    anchors, nc = cfg["anchors"], int(cfg["nc"])
    gd, gw = float(cfg["depth_multiple"]), float(cfg["width_multiple"])
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
    no = na * (nc + 5)
    convs = {"Conv": Conv, "Bottleneck": Bottleneck, "SPPF": SPPF, "Focus": Focus, "C3": C3}
    symbols = {"nc": nc, "anchors": anchors, "None": None}

    layers, save, chs = [], [], [ch]
    for i, (f, n, name, args) in enumerate(cfg["backbone"] + cfg["head"]):
        args = [symbols.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        c_in = chs[f] if isinstance(f, int) else None
        if name in convs:
            c2 = args[0] if args[0] == no else _make_divisible(args[0] * gw, 8)
            args = [c_in, c2, *args[1:]]
            if name == "C3":
                args.insert(2, n)  # depth goes into C3, not into repeats
                n = 1
            block = convs[name]
        elif name == "nn.Upsample":
            c2, block = c_in, nn.Upsample
        elif name == "Concat":
            c2, block = sum(chs[j] for j in f), Concat
        elif name == "Detect":
            args.append([chs[j] for j in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
            c2, block = None, Detect
        else:
            raise ValueError(
                f"layer {i}: module {name!r} is not supported by the YOLOv5 rebuilder "
                f"(supported: {', '.join([*convs, 'nn.Upsample', 'Concat', 'Detect'])})"
            )
        m = nn.Sequential(*(block(*args) for _ in range(n))) if n > 1 else block(*args)
        m.i, m.f, m.type = i, f, name
        save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        layers.append(m)
        if i == 0:
            chs = []
        chs.append(c2)
    seq = nn.Sequential(*layers)
    for mod in seq.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps, mod.momentum = 1e-3, 0.03  # YOLOv5's initialize_weights, what it trained with
    return seq, sorted(save)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_COMPARED_ATTRS = ("add", "d", "nc", "no", "nl", "na")


def _check_same_structure(rebuilt: nn.Module, pickled: nn.Module) -> None:
    """The rebuilt tree must match the pickled one: names, types and layer hyper-parameters."""
    a = dict(rebuilt.named_modules(remove_duplicate=False))
    b = dict(pickled.named_modules(remove_duplicate=False))
    a.pop(""), b.pop("")
    if a.keys() != b.keys():
        diff = sorted(set(a) ^ set(b))
        raise ValueError(f"rebuilt YOLOv5 module tree differs from the checkpoint's at {diff[:5]}")
    for name, m in a.items():
        p = b[name]
        if type(m).__name__ != type(p).__name__:
            raise ValueError(f"module {name}: rebuilt {type(m).__name__}, checkpoint has {type(p).__name__}")
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Upsample)) and m.extra_repr() != p.extra_repr():
            raise ValueError(f"module {name}: rebuilt ({m.extra_repr()}) != checkpoint ({p.extra_repr()})")
        for attr in _COMPARED_ATTRS:
            if attr in vars(m) and attr in vars(p) and vars(m)[attr] != vars(p)[attr]:
                raise ValueError(f"module {name}.{attr}: rebuilt {vars(m)[attr]!r}, checkpoint {vars(p)[attr]!r}")


def load_legacy_yolov5(path: "os.PathLike[str] | str") -> LegacyYOLOv5:
    """Original YOLOv5 ``.pt`` -> float32 :class:`LegacyYOLOv5` in eval mode, on CPU.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, ValueError (not a usable YOLOv5 checkpoint).
    """
    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = restricted_load(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    pickled = ckpt.get("ema") or ckpt.get("model")  # YOLOv5's attempt_load prefers the EMA weights
    if not isinstance(pickled, _StandIn):
        raise ValueError(f"{path}: checkpoint has no YOLOv5 model under 'model' or 'ema'")
    cfg = getattr(pickled, "yaml", None)
    if not isinstance(cfg, dict) or not {"backbone", "head", "nc", "anchors"} <= cfg.keys():
        raise ValueError(f"{path}: the pickled model carries no usable 'yaml' architecture dict")
    names = getattr(pickled, "names", None)
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
    if not isinstance(names, dict) or len(names) != int(cfg["nc"]):
        raise ValueError(f"{path}: class names do not match nc={cfg['nc']}")
    stride = getattr(pickled, "stride", None)
    if not isinstance(stride, torch.Tensor):
        raise ValueError(f"{path}: the pickled model carries no stride tensor")

    model = LegacyYOLOv5(cfg, {int(k): str(v) for k, v in names.items()})
    if not torch.equal(model.stride, stride.float()):
        raise ValueError(f"{path}: rebuilt strides {model.stride.tolist()} != checkpoint's {stride.tolist()}")
    _check_same_structure(model, pickled)
    state = {k: v.float() if v.is_floating_point() else v for k, v in pickled.state_dict().items()}
    expected = model.state_dict()
    if state.keys() != expected.keys():
        missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
        raise ValueError(f"{path}: state dict keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k in state if state[k].shape != expected[k].shape]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {bad[:5]}, e.g. {bad[0]}: {tuple(state[bad[0]].shape)} "
                         f"vs rebuilt {tuple(expected[bad[0]].shape)}")
    model.load_state_dict(state, strict=True)
    return model.float().eval()

