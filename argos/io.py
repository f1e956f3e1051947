"""Image input validation: everything argos accepts becomes HWC uint8 RGB numpy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np
import torch

__all__ = ["load_image", "as_image_list"]

_EXPECTED = "an RGB image: np.ndarray (H, W, 3) uint8, a CHW torch.Tensor, or a path to an image file"


def read_image(path: os.PathLike | str) -> np.ndarray:
    """Decode an image file -> np.ndarray[H, W, 3] uint8 RGB."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image file (corrupt or unsupported format): {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_hwc(image: np.ndarray, channel_order: str) -> np.ndarray:
    if image.size == 0:
        raise ValueError(f"empty image of shape {image.shape}; expected {_EXPECTED}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(
            f"got a grayscale image of shape {image.shape}; argos expects 3-channel RGB. "
            "Convert it first, e.g. cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)"
        )
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W, 3), got shape {image.shape}")
    if image.shape[2] == 4:
        raise ValueError(
            f"got a 4-channel (RGBA/BGRA) image of shape {image.shape}; drop or composite the alpha channel "
            "first, e.g. cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)"
        )
    if image.shape[2] != 3:
        if image.shape[0] == 3:
            raise ValueError(f"got shape {image.shape}, which looks channels-first; numpy images must be HWC")
        raise ValueError(f"expected 3 channels in the last axis, got shape {image.shape}")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            hint = "(img // 257).astype(np.uint8) for a 16-bit image"
        elif np.issubdtype(image.dtype, np.floating):
            hint = "(img * 255).round().astype(np.uint8) for floats in [0, 1]"
        else:
            hint = "img.astype(np.uint8) once its values are in 0-255"
        raise TypeError(f"expected a uint8 image (0-255), got dtype {image.dtype}; convert with {hint}")
    if channel_order == "bgr":
        image = image[:, :, ::-1]
    elif channel_order != "rgb":
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return np.ascontiguousarray(image)


def _tensor_to_hwc(t: torch.Tensor) -> np.ndarray:
    if t.ndim != 3:
        raise ValueError(f"expected a CHW tensor (3, H, W), got shape {tuple(t.shape)}")
    if t.shape[0] != 3:
        if t.shape[0] in (1, 4):
            raise ValueError(f"got a {t.shape[0]}-channel tensor of shape {tuple(t.shape)}; argos expects RGB (3, H, W)")
        if t.shape[-1] == 3:
            raise ValueError(f"tensor of shape {tuple(t.shape)} looks HWC; pass a numpy array or permute(2, 0, 1)")
        raise ValueError(f"expected a CHW tensor (3, H, W), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"empty image tensor of shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        return t.permute(1, 2, 0).contiguous().numpy()
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"image tensor of shape {tuple(t.shape)} holds {bad} NaN or infinite value(s)")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image tensors must hold values in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
        return (t * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    raise TypeError(f"expected a uint8 or float tensor, got dtype {t.dtype}")


def load_image(image: Any, channel_order: str = "rgb") -> np.ndarray:
    """One image in any accepted form -> np.ndarray[H, W, 3] uint8 RGB.

    Args:
        image: HWC uint8 numpy array, CHW tensor (uint8, or float in [0, 1]), or a file path.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy arrays (OpenCV frames are BGR).
            Files are decoded to RGB and tensors are assumed RGB.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        return _tensor_to_hwc(image)
    if isinstance(image, np.ndarray):
        return _check_hwc(image, channel_order)
    raise TypeError(f"expected {_EXPECTED}, got {type(image).__name__}")


def as_image_list(images: Any, channel_order: str = "rgb") -> Tuple[List[np.ndarray], bool]:
    """Normalize input -> (list of HWC uint8 RGB arrays, whether a single image was given).

    A list/tuple is a batch; a 4-D tensor (B, 3, H, W) is a batch as well.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("got an empty list of images")
        return [load_image(im, channel_order) for im in images], False
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError("got an empty batch of images")
        return [load_image(im) for im in images], False
    return [load_image(images, channel_order)], True
