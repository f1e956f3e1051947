"""``proposer="qunet"``: a trained QU-Net marks where objects may be."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from argos.proposers.base import Proposer
from argos.geometry import Dilation, boxes_to_mask, dilate_boxes
from argos.proposers.qunet.checkpoint import CheckpointInfo, load_checkpoint
from argos.proposers.qunet.model import QUNet, QUNetConfig, flop_breakdown
from argos.structures import RegionProposals

__all__ = ["QUNetProposer", "DEFAULT_WEIGHTS", "BACKENDS"]

BACKENDS = ("torch", "onnxruntime")

#: What ``proposer="qunet"`` loads when no weights are given.
DEFAULT_WEIGHTS = "qunet-coco"

# Used when neither the caller nor the checkpoint says otherwise.
_FALLBACK_POSTPROCESS = {"threshold": 0.5, "dilation": "adaptive", "min_area": 0}


class QUNetProposer(Proposer):
    """Foreground mask from a QU-Net: resize -> logits -> threshold -> upscale -> components -> dilation.

    By default it loads the shipped ``qunet-coco`` checkpoint (``all_quantized_dct``, width 8,
    trained on 100 COCO images, all classes) with the post-processing stored in it. Use
    ``weights="qunet-street"`` for fixed street cameras.

    Args:
        weights: shipped checkpoint name (``"qunet-coco"``, ``"qunet-street"``) or a ``.qunet`` file.
        preset: with ``weights=None``, build an untrained model of this Table 4.1 preset (cost
            measurements only: its proposals are noise). With ``weights``, the checkpoint must
            be of this preset.
        model: a :class:`QUNet` to use as is (e.g. straight from training).
        threshold: foreground probability above which a logit pixel is active.
        dilation, min_area, mask_mode: see :class:`Proposer`; ``None`` takes the checkpoint's
            recommendation (chosen on its training split), else ``"adaptive"`` and 0.
        device: where the network runs.
        backend: ``"torch"`` runs the model in PyTorch; ``"onnxruntime"`` exports it to ONNX
            once (on the first frame) and runs it in onnxruntime on the CPU, about 2.5x faster
            for this small network (PyTorch's per-op overhead dominates it). Both compute the
            same model; the exported graph sums in another order, so a logit sitting on a
            rounding boundary of a 1-bit activation can differ (measured: 0.05% of grid cells,
            see RESULTS.md). The session is built from the weights at first use: create a new
            proposer after changing them. Needs ``pip install onnxruntime onnx`` (``argos[export]``).

    The network sees the image resized (aspect not kept) to the model's ``input_size``; its
    logits are 1/8 of that with DCT input. :meth:`gflops` uses the FLOP-equivalent convention of
    :func:`~argos.proposers.qunet.model.flop_breakdown`: binary/low-bit MACs count
    ``2 * w_bits * a_bits / 64`` FLOPs each, float MACs 2; ``flops_detail`` has the split.
    """

    def __init__(
        self,
        weights: Union[str, os.PathLike, None] = None,
        preset: Optional[str] = None,
        model: Optional[QUNet] = None,
        threshold: Optional[float] = None,
        dilation: Optional[Dilation] = None,
        min_area: Optional[int] = None,
        mask_mode: str = "boxes",
        device: Union[str, torch.device] = "cpu",
        backend: str = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "onnxruntime" and torch.device(device).type != "cpu":
            raise ValueError(f"backend='onnxruntime' runs on the CPU; got device={device!r}")
        self.backend = backend
        self._session: Any = None
        self.info: Optional[CheckpointInfo] = None
        if model is not None:
            if weights is not None or preset is not None:
                raise ValueError("give model, or weights/preset, not both")
            if not isinstance(model, QUNet):
                raise TypeError(f"model must be a QUNet, got {type(model).__name__}")
        elif weights is None and preset is not None:
            model = QUNet(QUNetConfig.from_preset(preset))
        else:
            model, self.info = load_checkpoint(DEFAULT_WEIGHTS if weights is None else weights)
            if preset is not None and model.config.preset != preset:
                raise ValueError(f"checkpoint {weights} is preset {model.config.preset!r}, not {preset!r}")
        self.weights = weights
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        rec = dict(_FALLBACK_POSTPROCESS)
        if self.info is not None:
            rec.update(self.info.meta.get("postprocess", {}))
        self.threshold = float(rec["threshold"] if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        super().__init__(
            dilation=rec["dilation"] if dilation is None else dilation,
            min_area=rec["min_area"] if min_area is None else min_area,
            mask_mode=mask_mode,
        )
        self._gflops: Optional[float] = None
        self.flops_detail: Dict[str, Any] = {}
        #: stage times of the last propose_mask call (ms); components and dilation come after.
        self.last_timing: Dict[str, float] = {}

    @property
    def config(self) -> QUNetConfig:
        return self.model.config

    @property
    def input_size(self) -> Tuple[int, int]:
        return self.model.config.input_size

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """HWC uint8 RGB images -> Tensor[B, 3, H, W] float in [0, 1] at the model's input size."""
        h, w = self.input_size
        out = []
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"QU-Net expects HxWx3 uint8 RGB images, got {image.shape} {image.dtype}")
            shrink = image.shape[0] * image.shape[1] > h * w
            # INTER_AREA when shrinking: it averages like the DCT's DC term instead of aliasing.
            small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            out.append(torch.from_numpy(small))
        return torch.stack(out).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)

    @torch.inference_mode()
    def probabilities(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Foreground probability at logit resolution, Tensor[B, h', w'] (1 - P(background))."""
        logits = self.logits(self.preprocess(images))
        return 1.0 - torch.softmax(logits.float(), dim=1)[:, 0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] at ``input_size`` -> logits Tensor[B, classes, h', w'] on the backend."""
        if self.backend == "torch":
            with torch.inference_mode():
                return self.model(x)
        from argos.proposers.qunet.onnx_graph import INPUT_NAME, OUTPUT_NAME

        session = self._session if self._session is not None else self._build_session()
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0])

    def _build_session(self) -> Any:
        """Export the model to ONNX (in a temporary folder) and open an onnxruntime session on it."""
        import tempfile

        from argos.proposers.qunet.onnx_graph import export_onnx, ort_session

        with tempfile.TemporaryDirectory() as tmp:
            graph = export_onnx(self.model, os.path.join(tmp, "qunet.onnx")).read_bytes()
        self._session = ort_session(graph)
        return self._session

    def mask_from_probability(self, prob: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """Threshold Tensor[h', w'] probabilities and up-scale (nearest) to Tensor[H, W] bool.

        Output pixel ``(y, x)`` takes cell ``(y * h' // H, x * w' // W)``.
        """
        small = (prob > self.threshold).cpu().numpy()
        rows, cols = _nearest_index(image_size[0], small.shape[0]), _nearest_index(image_size[1], small.shape[1])
        return torch.from_numpy(np.ascontiguousarray(small[rows][:, cols]))

    def _run(self, image: np.ndarray) -> torch.Tensor:
        t0 = time.perf_counter()
        x = self.preprocess([image])
        t1 = time.perf_counter()
        logits = self.logits(x)
        with torch.inference_mode():
            prob = 1.0 - torch.softmax(logits.float(), dim=1)[0, 0]
        self.last_timing = {"preprocess_ms": (t1 - t0) * 1e3, "network_ms": (time.perf_counter() - t1) * 1e3}
        return prob

    def propose_mask(self, image: np.ndarray, target: Any = None) -> torch.Tensor:
        prob = self._run(image)
        t0 = time.perf_counter()
        mask = self.mask_from_probability(prob, image.shape[:2])
        self.last_timing["postprocess_ms"] = (time.perf_counter() - t0) * 1e3
        return mask

    def propose(self, images: Sequence[np.ndarray], targets: Optional[Sequence[Any]] = None) -> List[RegionProposals]:
        """Like :meth:`Proposer.propose`, with components found on the logit grid (see :meth:`finalize_probability`)."""
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        out = []
        for image in images:
            t0 = time.perf_counter()
            prob = self._run(image)
            t1 = time.perf_counter()
            props = self.finalize_probability(prob, image.shape[:2])
            t2 = time.perf_counter()
            self.last_timing["postprocess_ms"] = (t2 - t1) * 1e3
            props.time_ms = (t2 - t0) * 1e3
            out.append(props)
        return out

    def finalize_probability(self, prob: torch.Tensor, image_size: Tuple[int, int]) -> RegionProposals:
        """Probabilities Tensor[h', w'] -> proposals at ``image_size``.

        Equal to ``finalize(mask_from_probability(prob, image_size))``, but the connected components
        are labelled on the small grid and their boxes mapped to image pixels exactly (nearest
        up-scaling keeps 8-connectivity), which costs far less than labelling the full image.
        """
        h, w = image_size
        gh, gw = prob.shape
        if self.mask_mode != "boxes" or h < gh or w < gw:
            return self.finalize(self.mask_from_probability(prob, image_size))  # general path
        small = (prob > self.threshold).cpu().numpy().astype(np.uint8)
        rows, cols = _nearest_index(h, gh), _nearest_index(w, gw)
        if small.any():
            n, labels, stats, _ = cv2.connectedComponentsWithStats(small, connectivity=8)
            # Pixels each cell expands to; a component's area in image pixels is the sum over its cells.
            cell_px = np.outer(np.bincount(rows, minlength=gh), np.bincount(cols, minlength=gw)).astype(np.float64)
            area = np.bincount(labels.ravel(), weights=cell_px.ravel(), minlength=n)[1:]
            x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
            x2, y2 = x + stats[1:, cv2.CC_STAT_WIDTH], y + stats[1:, cv2.CC_STAT_HEIGHT]
            boxes = np.stack([np.searchsorted(cols, x), np.searchsorted(rows, y),
                              np.searchsorted(cols, x2), np.searchsorted(rows, y2)], axis=1)
            boxes = torch.as_tensor(boxes[area >= max(self.min_area, 1)], dtype=torch.float32).reshape(-1, 4)
        else:
            boxes = torch.zeros(0, 4)
        if self.dilation != 0 and len(boxes):
            boxes = dilate_boxes(boxes, self.dilation, (h, w))
        return RegionProposals(boxes_to_mask(boxes, (h, w)), boxes, 0.0, None, self.gflops((h, w)))

    def gflops(self, image_size=None) -> float:
        """FLOP-equivalent GFLOPs of one forward (independent of the image size: it is resized)."""
        if self._gflops is None:
            self.flops_detail = flop_breakdown(self.model)
            self._gflops = float(self.flops_detail["gflops_equiv"])
        return self._gflops

    def __repr__(self) -> str:
        c = self.config
        return (f"QUNetProposer(weights={self.weights!r}, preset={c.preset}, width={c.width}, input_size={c.input_size}, "
                f"threshold={self.threshold}, dilation={self.dilation!r}, min_area={self.min_area}, "
                f"backend={self.backend!r})")



def _nearest_index(out_len: int, in_len: int) -> np.ndarray:
    """Source index of each output position for nearest up-scaling: ``i * in_len // out_len``."""
    return (np.arange(out_len, dtype=np.int64) * in_len) // out_len
