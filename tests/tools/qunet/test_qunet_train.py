import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from argos.proposers.qunet.checkpoint import load_checkpoint
from argos.proposers.qunet.targets import MaskSample, parse_range
from argos.tools.qunet.train import TrainConfig, augment, main, train

REPO = Path(__file__).resolve().parents[2]


def synthetic_samples(n, size=(48, 64), seed=0):
    """Grey images with one bright box each; the box is the target."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size
        image = np.full((h, w, 3), 100, np.uint8)
        x0, y0 = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
        image[y0:y0 + 16, x0:x0 + 16] = 230
        mask = np.zeros((h, w), bool)
        mask[y0:y0 + 16, x0:x0 + 16] = True
        out.append(MaskSample(image, mask, np.array([[x0, y0, x0 + 16, y0 + 16]], np.float32), f"s{i}"))
    return out


def _cfg(**kw):
    base = dict(preset="all_quantized", width=4, depth=2, input_size=(32, 48), epochs=1, batch_size=2, lr=1e-3,
                device="cpu", log_every=0)
    base.update(kw)
    return TrainConfig(**base)


def test_parse_range():
    assert parse_range("2:5", 10) == [2, 3, 4]
    assert parse_range("-3:", 10) == [7, 8, 9]
    assert parse_range("::4", 10) == [0, 4, 8]
    assert parse_range(None, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        parse_range("a:b", 3)
    with pytest.raises(ValueError):
        parse_range([0, 5], 3)


def test_augment_keeps_image_and_mask_aligned():
    s = synthetic_samples(4, seed=1)
    images = torch.stack([torch.from_numpy(x.image).permute(2, 0, 1) for x in s])
    masks = torch.stack([torch.from_numpy(x.mask) for x in s])
    x, m = augment(images, masks, _cfg(scale_jitter=(0.6, 1.4), color_jitter=0.0), torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 48, 64) and m.shape == (4, 48, 64) and m.dtype == torch.bool
    bright = x.mean(dim=1) > 0.7  # the box is the only bright thing
    inter = (bright & m).sum().item()
    assert inter >= 0.8 * bright.sum().item() and inter >= 0.8 * m.sum().item()


def test_train_writes_a_checkpoint_the_proposer_loads(tmp_path):
    samples = synthetic_samples(6)
    out = tmp_path / "run.qunet"
    res = train(_cfg(out=str(out)), samples, samples[:2], meta={"data": "synthetic"})
    assert res["metrics"]["steps"] == 3 and "val" in res["metrics"]
    model, info = load_checkpoint(out)
    assert info.meta["data"] == "synthetic" and set(info.meta["postprocess"]) == {"threshold", "dilation", "min_area"}
    assert info.metrics["val"]["images"] == 2
    from argos.proposers.qunet.proposer import QUNetProposer

    p = QUNetProposer(weights=str(out))
    assert p.threshold == info.meta["postprocess"]["threshold"]
    (props,) = p.propose([samples[0].image])
    assert props.image_size == (48, 64)


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_qunet_train import synthetic_samples, _cfg
    from argos.tools.qunet.train import train
    rank = int(os.environ["RANK"])
    res = train(_cfg(out={out!r}), synthetic_samples(8), calib_samples=synthetic_samples(2))
    torch.save({{"state": res["model"].state_dict(), "steps": len(res["history"]) and res["metrics"].get("steps"),
                "world": int(os.environ["WORLD_SIZE"])}}, {tmp!r} + f"/rank{{rank}}.pt")
    import torch.distributed as dist
    dist.destroy_process_group()
""")


def test_torchrun_two_cpu_processes_train_in_sync(tmp_path):
    script = tmp_path / "ddp_train.py"
    out = tmp_path / "ddp.qunet"
    script.write_text(_DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out), tmp=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == 2
    # 8 samples, batch 2, 2 ranks: each rank sees its half of the data, 2 steps
    assert r0["steps"] == 2
    # DDP averaged the gradients: both ranks hold the same weights after their steps
    for k, v in r0["state"].items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # BN statistics are per process (only broadcast before each forward)
        assert torch.equal(v, r1["state"][k]), k
    torch.manual_seed(0)
    init = _cfg().model_config()
    from argos.proposers.qunet.model import QUNet

    fresh = QUNet(init).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in r0["state"].items() if k.endswith("conv.weight"))
    model, info = load_checkpoint(out)  # rank 0 wrote it
    assert info.meta["world_size"] == 2


def test_main_on_coco(coco128, tmp_path):
    out = tmp_path / "coco.qunet"
    rc = main([
        "--source", "coco", "--images", str(coco128.images_dir), "--annotations", str(coco128.annotations_path),
        "--train-range", "0:4", "--val-range", "4:6", "--preset", "all_quantized_dct", "--width", "4", "--depth", "2",
        "--input-size", "64", "96", "--epochs", "1", "--batch-size", "2", "--out", str(out), "--device", "cpu",
    ])
    assert rc == 0
    _, info = load_checkpoint(out)
    assert info.config.dct and info.config.input_size == (64, 96)
    assert info.meta["data"]["source"] == "coco" and info.metrics["val"]["images"] == 2
    assert info.meta["train"]["lr"] == 1e-5  # the thesis default


def test_self_supervised_targets_are_the_detectors_boxes(yolov5n, coco128):
    from argos.geometry import boxes_to_mask
    from argos.proposers.qunet.targets import detector_samples

    with_people = [i for i in range(len(coco128)) if (coco128.targets(i)["labels"] == 1).any()][:2]
    images = [(coco128[i].file_name, coco128[i].image) for i in with_people]
    samples = detector_samples(yolov5n, images, min_score=0.4, classes=["person"])
    person = [k for k, v in yolov5n.names.items() if v == "person"][0]
    for (name, image), s in zip(images, samples):
        (d,) = yolov5n.predict([image])
        keep = (d.scores >= 0.4) & (d.labels == person)
        assert s.name == name and np.allclose(s.boxes, d.boxes[keep].numpy())
        assert np.array_equal(s.mask, boxes_to_mask(d.boxes[keep], image.shape[:2]).numpy())
    assert sum(len(s.boxes) for s in samples) > 0
    with pytest.raises(ValueError, match="no class 'unicorn'"):
        detector_samples(yolov5n, images, classes=["unicorn"])
