"""Train a QU-Net: ``train(TrainConfig, train_samples, val_samples)`` or ``main(argv)``.

Loss (:mod:`~argos.tools.qunet.loss`): class-weighted cross-entropy (weights from the inverse
pixel frequency of the training targets) plus ``dice_weight`` times the soft Dice loss averaged
over classes. Data: :mod:`~argos.tools.qunet.data`. Optimizer: RMSProp
(the thesis: lr 1e-5, weight decay 1e-8, momentum 0.9, 320x320, 50 epochs).

Runs unchanged under ``torchrun``: with ``WORLD_SIZE > 1`` it joins the process group (gloo on
CPU, NCCL on CUDA), shards the data with a ``DistributedSampler`` and wraps the model in DDP;
rank 0 evaluates and writes the checkpoint. BatchNorm statistics are per process (DDP
broadcasts rank 0's buffers each step), not synchronized.

Example (the shipped ``qunet-coco``)::

    python -m argos.tools.qunet.train --source coco \\
        --images ../shared/data/coco128/images/train2017 \\
        --annotations ../shared/data/coco128/annotations/instances_train2017.json \\
        --train-range 0:100 --val-range 100:128 --out qunet-coco.qunet

On Cityscapes ``gtFine`` instance masks (``--annotations`` defaults to ``ROOT/gtFine/train``)::

    python -m argos.tools.qunet.train --source cityscapes --images ROOT/leftImg8bit/train \
        --classes person rider car --train-range 0:2800 --val-range 2800: --out qunet-cityscapes.qunet

On several processes or GPUs (same arguments)::

    torchrun --nproc_per_node 2 -m argos.tools.qunet.train --source coco ...

The exact commands behind the shipped checkpoints are in ``weights/README.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler

from argos.proposers.qunet.checkpoint import load_weights, save_checkpoint
from argos.proposers.qunet.model import PRESETS, QUNet, QUNetConfig
from argos.proposers.qunet.targets import MaskSample
from argos.tools.qunet.data import DataConfig, MaskDataset, load_data
from argos.tools.qunet.loss import class_weights, downsample_target, qunet_loss

__all__ = ["TrainConfig", "DataConfig", "MaskDataset", "qunet_loss", "class_weights", "augment", "train",
           "recalibrate_batchnorm", "calibrate_postprocess", "evaluate_samples", "load_data", "main"]


@dataclass
class TrainConfig:
    """Model, optimization and augmentation of one training run.

    Args:
        preset, width, depth: the model (:meth:`QUNetConfig.from_preset`).
        input_size: ``(height, width)`` the images are resized to; also the proposer's input size.
        epochs, batch_size: per process; the global batch under torchrun is ``world * batch_size``.
        lr, weight_decay, momentum, alpha: RMSProp.
        schedule: ``"constant"`` (the thesis) or ``"cosine"`` (lr decays to 0 over the run; binary
            weights stop flipping at the end, which steadies the final model).
        dice_weight: scale of the Dice term next to the weighted cross-entropy.
        hflip: random horizontal flips.
        scale_jitter: ``(min, max)`` zoom: below 1 crops a random window (zoom in), above 1
            shrinks the image onto a grey canvas (zoom out).
        color_jitter: brightness/contrast jitter amplitude (0 disables).
        seed: data order and augmentation; each rank offsets it.
        out: checkpoint path (written by rank 0 at the end and every ``save_every`` epochs).
        init: start from this checkpoint (same config).
        recall_goal: ``calibrate_postprocess`` picks the cheapest threshold/dilation whose
            regions detected on the calibration samples reach this.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (the local rank's GPU when there is one).
    """

    preset: str = "all_quantized_dct"
    width: int = 8
    depth: int = 4
    input_size: Tuple[int, int] = (320, 320)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 1e-8
    momentum: float = 0.9
    alpha: float = 0.99
    schedule: str = "constant"
    dice_weight: float = 1.0
    hflip: bool = True
    scale_jitter: Tuple[float, float] = (0.7, 1.3)
    color_jitter: float = 0.2
    seed: int = 0
    out: Optional[str] = None
    save_every: int = 0
    init: Optional[str] = None
    recall_goal: float = 0.97
    log_every: int = 10
    device: str = "auto"

    def model_config(self) -> QUNetConfig:
        return QUNetConfig.from_preset(self.preset, width=self.width, depth=self.depth, input_size=tuple(self.input_size))


def augment(images: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    """Random zoom (crop or shrink onto grey), horizontal flip and brightness/contrast.

    Args:
        images (Tensor[B, 3, H, W] uint8), masks (Tensor[B, H, W] bool).

    Returns:
        ``(Tensor[B, 3, H, W] float in [0, 1], Tensor[B, H, W] bool)``, same size.
    """
    b, _, h, w = images.shape
    x = images.float() / 255.0
    m = masks.float()[:, None]
    lo, hi = cfg.scale_jitter
    out_x, out_m = torch.empty_like(x), torch.empty_like(m)
    for i in range(b):
        s = lo + (hi - lo) * float(torch.rand((), generator=gen))
        if s <= 1.0:
            ch, cw = max(1, round(h * s)), max(1, round(w * s))
            y0 = int(torch.randint(0, h - ch + 1, (), generator=gen))
            x0 = int(torch.randint(0, w - cw + 1, (), generator=gen))
            out_x[i] = F.interpolate(x[i:i + 1, :, y0:y0 + ch, x0:x0 + cw], size=(h, w), mode="bilinear",
                                     align_corners=False)[0]
            out_m[i] = F.interpolate(m[i:i + 1, :, y0:y0 + ch, x0:x0 + cw], size=(h, w), mode="nearest")[0]
        else:
            nh, nw = max(1, round(h / s)), max(1, round(w / s))
            y0 = int(torch.randint(0, h - nh + 1, (), generator=gen))
            x0 = int(torch.randint(0, w - nw + 1, (), generator=gen))
            out_x[i].fill_(114 / 255.0)
            out_m[i].zero_()
            out_x[i, :, y0:y0 + nh, x0:x0 + nw] = F.interpolate(x[i:i + 1], size=(nh, nw), mode="area")[0]
            # Any covered pixel stays foreground when shrinking (area > 0), so small objects survive.
            out_m[i, :, y0:y0 + nh, x0:x0 + nw] = (F.interpolate(m[i:i + 1], size=(nh, nw), mode="area")[0] > 0).float()
    if cfg.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        out_x[flip] = out_x[flip].flip(-1)
        out_m[flip] = out_m[flip].flip(-1)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        contrast = 1 + j * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
        bright = j * 0.5 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
        mean = out_x.mean(dim=(1, 2, 3), keepdim=True)
        out_x = ((out_x - mean) * contrast + mean + bright).clamp(0, 1)
    return out_x, out_m[:, 0] > 0.5


def _dist_env() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(spec)


@torch.no_grad()
def recalibrate_batchnorm(model: QUNet, images: torch.Tensor, batch_size: int = 16) -> None:
    """Recompute BatchNorm running statistics on un-augmented images (Tensor[N, 3, H, W] uint8).

    Binary weights flip sign abruptly during training, so the exponential running averages lag
    the final weights; with 1-bit activations that lag flips whole feature maps at eval time.
    A cumulative average over the training images after the last step removes the mismatch.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for i in range(0, images.shape[0], batch_size):
        model(images[i:i + batch_size].to(device).float() / 255.0)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)


def calibrate_postprocess(
    model: QUNet, samples: Sequence[MaskSample], goal: float = 0.97,
    thresholds: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    dilations: Sequence[Any] = (0, 4, 8, 12, 16, 24, 32, "adaptive"),
) -> Dict[str, Any]:
    """Cheapest post-processing (mean area processed) whose regions detected reaches ``goal``.

    Runs the network once per sample, then tries every threshold x dilation. Falls back to the
    setting with the highest regions detected when none reaches the goal.

    Returns:
        ``{"threshold", "dilation", "min_area", "regions_detected", "area_processed"}``.
    """
    from argos.metrics.regions import RegionStats
    from argos.proposers.qunet.proposer import QUNetProposer

    prop = QUNetProposer(model=model)
    probs = [prop.probabilities([s.image])[0] for s in samples]  # the network runs once per sample
    best, fallback = None, None
    for t in thresholds:
        for d in dilations:
            p = QUNetProposer(model=model, threshold=t, dilation=d, min_area=0)
            stats = RegionStats()
            for s, pr in zip(samples, probs):
                stats.update(p.finalize_probability(pr, s.image.shape[:2]).mask, s.boxes)
            r = stats.summary()
            cand = {"threshold": t, "dilation": d, "min_area": 0, "regions_detected": r["regions_detected"],
                    "area_processed": r["area_processed"]}
            if r["regions_detected"] >= goal and (best is None or cand["area_processed"] < best["area_processed"]):
                best = cand
            key = (cand["regions_detected"], -cand["area_processed"])
            if fallback is None or key > (fallback["regions_detected"], -fallback["area_processed"]):
                fallback = cand
    return best if best is not None else fallback


def evaluate_samples(model: QUNet, samples: Sequence[MaskSample], postprocess: Dict[str, Any]) -> Dict[str, float]:
    """Regions detected and area processed of a model with given post-processing on samples."""
    from argos.metrics.regions import RegionStats
    from argos.proposers.qunet.proposer import QUNetProposer

    p = QUNetProposer(model=model, threshold=postprocess["threshold"], dilation=postprocess["dilation"],
                      min_area=postprocess.get("min_area", 0))
    stats = RegionStats()
    for s in samples:
        (props,) = p.propose([s.image])
        stats.update(props.mask, s.boxes)
    return stats.summary()


def train(
    cfg: TrainConfig,
    train_samples: Sequence[MaskSample],
    val_samples: Sequence[MaskSample] = (),
    calib_samples: Optional[Sequence[MaskSample]] = None,
    meta: Optional[Dict[str, Any]] = None,
    max_steps: Optional[int] = None,
) -> Dict[str, Any]:
    """Train a QU-Net on in-memory samples; under torchrun, every rank passes the same samples.

    Args:
        cfg: the run.
        train_samples: targets (every rank gets its shard through a ``DistributedSampler``).
        val_samples: held out; scored by rank 0 at the end with the calibrated post-processing.
        calib_samples: where the post-processing is chosen (default: ``train_samples``).
        meta: stored in the checkpoint (e.g. the data and command used).
        max_steps: stop after this many optimizer steps (tests, smoke runs).

    Returns:
        ``{"model": QUNet (unwrapped), "postprocess": ..., "metrics": ..., "history": [...],
        "checkpoint": path or None}``; ``metrics`` is empty on ranks other than 0.
    """
    world, rank, local_rank = _dist_env()
    distributed = world > 1
    device = _device(cfg.device, local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)

    model = QUNet(cfg.model_config())
    if cfg.init:
        load_weights(model, cfg.init)
    model.to(device)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    data = MaskDataset(train_samples, tuple(cfg.input_size))
    stride = model.output_stride
    weights = class_weights(downsample_target(data.masks, stride), model.config.num_classes)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed) if distributed else None
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=False,
                        generator=torch.Generator().manual_seed(cfg.seed) if sampler is None else None)
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=cfg.alpha, weight_decay=cfg.weight_decay,
                              momentum=cfg.momentum)
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
    total_steps = cfg.epochs * len(loader) if max_steps is None else min(max_steps, cfg.epochs * len(loader))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
             if cfg.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    meta = dict(meta or {})
    meta.update(train=_jsonable(asdict(cfg)), class_weights=weights.tolist(), world_size=world)

    history: List[Dict[str, float]] = []
    step, t0 = 0, time.time()
    done = False
    for epoch in range(cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        losses = []
        for images, masks in loader:
            x, m = augment(images, masks, cfg, gen)
            target = downsample_target(m, stride).to(device)
            logits = net(x.to(device))
            loss = qunet_loss(logits, target, weights, cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if rank == 0 and cfg.log_every and step % cfg.log_every == 0:
                print(f"epoch {epoch + 1}/{cfg.epochs} step {step} loss {np.mean(losses[-cfg.log_every:]):.4f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
            if max_steps is not None and step >= max_steps:
                done = True
                break
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "seconds": time.time() - t0})
        if rank == 0 and cfg.out and cfg.save_every and (epoch + 1) % cfg.save_every == 0 and not done:
            save_checkpoint(model, cfg.out, metrics={"epoch": epoch + 1, "loss": history[-1]["loss"]},
                            meta={**meta, "history": history})
        if done:
            break

    if rank == 0:
        recalibrate_batchnorm(model, data.images, cfg.batch_size)
    model.eval()
    result: Dict[str, Any] = {"model": model, "history": history, "metrics": {}, "postprocess": None,
                              "checkpoint": None}
    if rank == 0:
        model_cpu = model.to("cpu")
        calib = list(calib_samples) if calib_samples is not None else list(train_samples)
        post = calibrate_postprocess(model_cpu, calib, goal=cfg.recall_goal)
        metrics: Dict[str, Any] = {"steps": step, "epochs": len(history), "train_seconds": time.time() - t0,
                                   "final_loss": history[-1]["loss"] if history else None,
                                   "calibration": post}
        if val_samples:
            metrics["val"] = evaluate_samples(model_cpu, val_samples, post)
        meta["postprocess"] = {k: post[k] for k in ("threshold", "dilation", "min_area")}
        meta["history"] = history
        result.update(metrics=metrics, postprocess=meta["postprocess"])
        if cfg.out:
            result["checkpoint"] = str(save_checkpoint(model_cpu, cfg.out, metrics=metrics, meta=meta))
        model.to(device)
    if distributed:
        dist.barrier()
    return result


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="argos train qunet", description="Train a QU-Net region proposer.")
    t, d = TrainConfig(), DataConfig()
    g = p.add_argument_group("data")
    g.add_argument("--source", choices=("coco", "cityscapes", "teacher", "detector"), default=d.source)
    g.add_argument("--images", help="COCO images folder, Cityscapes ROOT/leftImg8bit/SPLIT, or unlabeled images "
                                    "for --source detector")
    g.add_argument("--annotations", help="COCO instances JSON, or Cityscapes ROOT/gtFine/SPLIT (default: next to "
                                         "--images)")
    g.add_argument("--classes", nargs="+", default=None, help="class names that count as objects (default: all)")
    g.add_argument("--mask-source", choices=("masks", "boxes"), default=d.mask_source)
    g.add_argument("--video", help="video for --source teacher/detector")
    g.add_argument("--boxes-json", help="per-frame teacher boxes for --source teacher")
    g.add_argument("--boxes-scale", type=float, default=d.boxes_scale, help="teacher box coords x this = video pixels")
    g.add_argument("--min-score", type=float, default=d.min_score)
    g.add_argument("--detector", default=d.detector, help="adapter for --source detector")
    g.add_argument("--detector-weights", default=None)
    g.add_argument("--train-range", default=None, help="images/frames to train on, 'start:stop[:step]'")
    g.add_argument("--val-range", default=None, help="held-out images/frames, scored at the end")
    g.add_argument("--calib-range", default=None, help="where post-processing is chosen (default: the train range)")
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=PRESETS, default=t.preset)
    g.add_argument("--width", type=int, default=t.width)
    g.add_argument("--depth", type=int, default=t.depth)
    g.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=list(t.input_size))
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=t.epochs)
    g.add_argument("--batch-size", type=int, default=t.batch_size)
    g.add_argument("--lr", type=float, default=t.lr)
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--momentum", type=float, default=t.momentum)
    g.add_argument("--schedule", choices=("constant", "cosine"), default=t.schedule)
    g.add_argument("--dice-weight", type=float, default=t.dice_weight)
    g.add_argument("--no-hflip", action="store_true")
    g.add_argument("--scale-jitter", type=float, nargs=2, default=list(t.scale_jitter))
    g.add_argument("--color-jitter", type=float, default=t.color_jitter)
    g.add_argument("--recall-goal", type=float, default=t.recall_goal)
    g.add_argument("--seed", type=int, default=t.seed)
    g.add_argument("--max-steps", type=int, default=None)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, help="checkpoint to write (.qunet)")
    g.add_argument("--save-every", type=int, default=0, help="also write the checkpoint every N epochs")
    g.add_argument("--init", default=None, help="start from this checkpoint")
    g.add_argument("--device", default=t.device)
    g.add_argument("--threads", type=int, default=None, help="torch threads per process")
    g.add_argument("--log-every", type=int, default=t.log_every)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """``argos train qunet`` entry point; prints the metrics and writes ``--out``."""
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(
        preset=a.preset, width=a.width, depth=a.depth, input_size=tuple(a.input_size), epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay, momentum=a.momentum,
        schedule=a.schedule, dice_weight=a.dice_weight, hflip=not a.no_hflip, scale_jitter=tuple(a.scale_jitter),
        color_jitter=a.color_jitter, seed=a.seed, out=a.out, save_every=a.save_every, init=a.init,
        recall_goal=a.recall_goal, log_every=a.log_every, device=a.device,
    )
    d = DataConfig(
        source=a.source, images=a.images, annotations=a.annotations, classes=a.classes, mask_source=a.mask_source,
        video=a.video, boxes_json=a.boxes_json, boxes_scale=a.boxes_scale, min_score=a.min_score,
        detector=a.detector, detector_weights=a.detector_weights, train_range=a.train_range,
        val_range=a.val_range, calib_range=a.calib_range,
    )
    t0 = time.time()
    train_s, val_s, calib_s = load_data(d)
    world, rank, _ = _dist_env()
    if rank == 0:
        print(f"data: {len(train_s)} train, {len(val_s)} val samples ({time.time() - t0:.0f}s)", flush=True)
    meta = {"data": asdict(d), "command": "argos train qunet " + " ".join(sys.argv[1:] if argv is None else argv)}
    result = train(cfg, train_s, val_s, calib_s, meta=meta, max_steps=a.max_steps)
    if rank == 0:
        print(json.dumps(result["metrics"], indent=2, default=str))
        if result["checkpoint"]:
            print(f"wrote {result['checkpoint']}")
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
