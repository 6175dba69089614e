"""Pretraining a backbone on unlabelled images, and loading the result for a learner or the detector.

The checkpoint (kind ``"pretrain"``) is the :class:`~quickstudy.train.Trainer`'s, plus top-level
``backbone`` (the encoder's state dict), ``backbone_name``, ``backbone_kwargs``, ``arch`` (the
detector's ``--arch`` whose network ``backbone_kwargs`` describe, else None), ``image_size`` (the
side, in pixels, images are resized to before they reach the backbone), ``method`` and ``input``
(how pixels are scaled). :func:`quickstudy.backbones.load_backbone_weights` reads it, and so does
``train_detector(init=...)`` for ``backbone_name == "detector"``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quickstudy.backbones import build_backbone, load_backbone_weights
from quickstudy.data.augment import AugmentConfig, TextureAugment
from quickstudy.errors import QuickstudyError
from quickstudy.pretrain.methods import METHODS
from quickstudy.train import Trainer, checkpoint_path, load_checkpoint, save_checkpoint, step_generator

KIND = "pretrain"
INPUT_SCALING = "grayscale, values / 255 in [0, 1], [B, 1, image_size, image_size]"


@dataclass(frozen=True)
class PretrainedBackbone:
    """A backbone with its pretrained weights loaded, and how it was made.

    Example:
        >>> pretrained = load_pretrained("runs/simclr-conv4")  # doctest: +SKIP
        >>> side = pretrained.image_size  # doctest: +SKIP
        >>> pretrained.backbone(torch.rand(2, 1, side, side)).shape  # doctest: +SKIP
        torch.Size([2, 64])
    """

    backbone: nn.Module
    backbone_name: str
    backbone_kwargs: dict[str, Any]
    image_size: int
    method: str
    steps: int
    arch: str | None
    file: Path


def pretrain(
    images: torch.Tensor,
    *,
    out_dir: str | os.PathLike[str],
    backbone: str = "conv4",
    backbone_kwargs: dict[str, Any] | None = None,
    arch: str | None = None,
    method: str = "simclr",
    image_size: int = 64,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    augment: AugmentConfig | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    seed: int = 0,
    log_every: int = 50,
    checkpoint_every: int = 500,
) -> dict[str, float]:
    """Train ``backbone`` with ``method`` on ``images`` (``uint8 [N, H, W]``, no labels); write ``out_dir``.

    Each step draws ``batch_size`` distinct images, makes two random views of each at
    ``image_size`` pixels and takes one AdamW step (linear warm-up, then cosine decay). Images may
    be stored larger than ``image_size`` (e.g. twice): crops then keep detail instead of upsampling.
    ``arch`` only names the preset ``backbone_kwargs`` came from (the detector's ``--arch``), for
    the record. Resumes from ``out_dir/checkpoint.pt``. Returns the metrics of the last log window plus
    ``seconds``, the training time of the whole run (over resumes).

    Example:
        >>> pretrain(torch.randint(0, 255, (64, 32, 32), dtype=torch.uint8), out_dir="runs/x", steps=5,
        ...          image_size=32, batch_size=16)  # doctest: +SKIP
    """
    if method not in METHODS:
        raise QuickstudyError(f"unknown pretraining method {method!r}; known: {', '.join(sorted(METHODS))}")
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {tuple(images.shape)}")
    if len(images) < 2:
        raise QuickstudyError(f"pretraining needs at least 2 images, got {len(images)}")
    backbone_kwargs = dict(backbone_kwargs or {})
    device = torch.device(device)
    torch.manual_seed(seed)
    encoder = build_backbone(backbone, in_channels=1, **backbone_kwargs)
    model = METHODS[method](encoder).to(device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    warmup = max(1, steps // 20)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    batch_size = min(batch_size, len(images))
    pixels = images.to(device).unsqueeze(1)
    views = TextureAugment(augment, out_size=image_size)
    config = {
        "backbone_name": backbone,
        "backbone_kwargs": backbone_kwargs,
        "arch": arch,
        "method": method,
        "image_size": image_size,
        "stored_size": int(images.shape[-1]),
        "images": len(images),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "augment": (augment or AugmentConfig()).__dict__,
    }
    trainer = Trainer(
        model,
        optimizer,
        out_dir=out_dir,
        steps=steps,
        kind=KIND,
        config=config,
        scheduler=scheduler,
        device=device,
        amp=amp,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        desc=f"pretrain {method} {backbone}",
        # Training time survives a resume: each checkpoint holds the seconds spent up to it.
        extra_state=lambda: {"seconds": earlier_seconds + time.perf_counter() - started},
    )
    earlier_seconds = float(trainer.resumed_extra_state.get("seconds", 0.0))

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        generator = step_generator(seed, step)
        chosen = torch.randperm(len(pixels), generator=generator)[:batch_size].to(device)
        batch = pixels[chosen].float().div_(255)
        model.before_step(step, steps)
        return model(views(batch, generator), views(batch, generator))

    started = time.perf_counter()
    metrics = trainer.fit(step_fn)
    seconds = earlier_seconds + time.perf_counter() - started
    # The final checkpoint also carries the backbone alone, so that --init DIR needs no method code.
    payload = trainer.state(steps)
    payload.update(
        backbone={k: v.detach().cpu() for k, v in model.backbone.state_dict().items()},
        backbone_name=backbone,
        backbone_kwargs=backbone_kwargs,
        arch=arch,
        image_size=image_size,
        method=method,
        input=INPUT_SCALING,
        seconds=seconds,
    )
    save_checkpoint(trainer.checkpoint_file, payload)
    return {**metrics, "seconds": seconds}


def load_pretrained(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> PretrainedBackbone:
    """The backbone of a pretraining run (its folder or ``checkpoint.pt``), rebuilt and loaded.

    Raises :class:`QuickstudyError` naming the file when it is not a finished pretraining checkpoint.
    """
    payload = load_checkpoint(path, kind=KIND)
    if "backbone" not in payload:
        raise QuickstudyError(f"{Path(path)}: pretraining run did not finish (no final backbone); rerun it")
    name, kwargs = payload["backbone_name"], dict(payload.get("backbone_kwargs", {}))
    backbone = build_backbone(name, in_channels=1, **kwargs)
    load_backbone_weights(backbone, payload["backbone"], backbone_name=name)
    return PretrainedBackbone(
        backbone=backbone.to(device),
        backbone_name=name,
        backbone_kwargs=kwargs,
        image_size=int(payload["image_size"]),
        method=str(payload["method"]),
        steps=int(payload["step"]),
        arch=payload.get("arch"),
        file=checkpoint_path(path),
    )
