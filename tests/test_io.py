import cv2
import numpy as np
import pytest
import torch

from argos.io import as_image_list, load_image


def test_accepts_rgb_tensor_and_path(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert load_image(rgb) is not None and np.array_equal(load_image(rgb), rgb)
    assert np.array_equal(load_image(rgb[:, :, ::-1], channel_order="bgr"), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    f = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert np.array_equal(load_image(f), rgb)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_image(path), rgb)  # decoded to RGB, not BGR
    batch, single = as_image_list([rgb, str(path)])
    assert len(batch) == 2 and not single
    batch, single = as_image_list(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert len(batch) == 2 and batch[0].shape == (8, 8, 3)


@pytest.mark.parametrize(
    "image, err, match",
    [
        (np.zeros((10, 10), np.uint8), ValueError, "grayscale"),
        (np.zeros((10, 10, 1), np.uint8), ValueError, "grayscale"),
        (np.zeros((10, 10, 4), np.uint8), ValueError, "RGBA"),
        (np.zeros((3, 10, 10), np.uint8), ValueError, "channels-first"),
        (np.zeros((10, 10, 3), np.float32), TypeError, "uint8"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        (torch.zeros(10, 10, 3), ValueError, "HWC"),
        (torch.full((3, 4, 4), 2.0), ValueError, r"\[0, 1\]"),
        (torch.zeros(1, 4, 4), ValueError, "1-channel"),
        ([1, 2, 3], TypeError, "expected an RGB image"),
        ([], ValueError, "empty list"),
        (42, TypeError, "int"),
    ],
)
def test_bad_inputs_raise_clearly(image, err, match):
    with pytest.raises(err, match=match):
        as_image_list(image)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="corrupt"):
        load_image(tmp_path / "corrupt.jpg")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="channel_order"):
        load_image(np.zeros((4, 4, 3), np.uint8), channel_order="rbg")
