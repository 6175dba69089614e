"""Episodic meta-training through the shared :class:`quickstudy.train.Trainer`, and learner checkpoints.

A run is described by a :class:`FewShotConfig`; the checkpoint records it, so that a learner can
be rebuilt for evaluation and a run can only be resumed by the same algorithm.

>>> config = FewShotConfig(algo="protonet", shot=1, train_way=60, steps=20_000)  # doctest: +SKIP
>>> learner = build_learner(config)  # doctest: +SKIP
>>> train_learner(learner, config, train_set, out_dir="runs/protonet")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quickstudy.backbones import build_backbone, load_backbone_weights
from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.errors import QuickstudyError
from quickstudy.meta.base import FewShotLearner
from quickstudy.meta.finetune import Finetune
from quickstudy.meta.maml import ANIL, FOMAML, MAML
from quickstudy.meta.memory import MemoryLearner
from quickstudy.meta.protonet import ProtoNet
from quickstudy.train import Trainer, checkpoint_path, distributed, load_checkpoint, step_generator

KIND = "fewshot"
ALGORITHMS = ("protonet", "maml", "fomaml", "anil", "mann", "finetune")
_BATCH_STATS = {"maml", "fomaml", "anil"}  # MAML-family: batch norm always on the batch at hand


@dataclass
class FewShotConfig:
    """Everything that defines a meta-training run and the learner it produces."""

    algo: str
    backbone: str = "conv4"
    backbone_kw: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    image_size: int = 28
    train_way: int = 60
    shot: int = 1
    query: int = 5
    meta_batch: int = 1
    steps: int = 20_000
    lr: float = 1e-3
    lr_halve_every: int = 0  # 0: constant learning rate
    learner_kw: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0  # base classes (the fine-tuning baseline's pretraining classifier)
    dataset: str = ""
    data_root: str = ""  # where `dataset` was read from: evaluation reads it there unless told otherwise
    novel: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise QuickstudyError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGORITHMS)}")


def paper_recipe(algo: str, way: int, shot: int) -> dict[str, Any]:
    """The published training recipe for ``way``-way ``shot``-shot Omniglot.

    ProtoNet (Snell et al. 2017): 60-way training episodes with 5 queries per class, Adam 1e-3
    halved every 2000 episodes. MAML (Finn et al. 2017): train at the test way, K queries per
    class, meta-batch 32 / inner lr 0.4 / 1 step for 5-way, meta-batch 16 / lr 0.1 / 5 steps for
    20-way, Adam 1e-3, 60,000 meta-iterations. The memory learner and the fine-tuning baseline have
    no Omniglot recipe of record; theirs are ours.
    """
    if algo == "protonet":
        return {"train_way": 60, "query": 5, "meta_batch": 1, "steps": 20_000, "lr_halve_every": 2000}
    if algo in _BATCH_STATS:
        inner = (
            {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}
            if way <= 5
            else {"inner_lr": 0.1, "inner_steps": 5, "eval_inner_steps": 5}
        )
        return {
            "train_way": way,
            "query": shot,
            "meta_batch": 32 if way <= 5 else 16,
            "steps": 60_000,
            "learner_kw": inner,
        }
    if algo == "mann":
        return {"train_way": way, "query": 5, "meta_batch": 4, "steps": 20_000, "lr_halve_every": 5000}
    return {"train_way": 60, "query": 4, "meta_batch": 1, "steps": 10_000, "lr_halve_every": 4000}


def build_learner(config: FewShotConfig) -> FewShotLearner:
    """A fresh learner as ``config`` describes it."""
    kw = dict(config.backbone_kw)
    if config.algo in _BATCH_STATS:
        kw["track_running_stats"] = False
    backbone = build_backbone(config.backbone, in_channels=config.in_channels, **kw)
    lk = config.learner_kw
    match config.algo:
        case "protonet":
            return ProtoNet(backbone, **lk)
        case "maml":
            return MAML(backbone, config.train_way, **lk)
        case "fomaml":
            return FOMAML(backbone, config.train_way, **lk)
        case "anil":
            return ANIL(backbone, config.train_way, **lk)
        case "mann":
            return MemoryLearner(backbone, config.train_way, **lk)
        case _:
            return Finetune(backbone, config.num_classes, **lk)


def load_learner(
    checkpoint: str | os.PathLike[str], *, algo: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[FewShotLearner, FewShotConfig]:
    """Rebuild a meta-trained learner from its checkpoint (file or run folder).

    ``algo``, when given, must be the checkpoint's algorithm: a MAML run is not a ProtoNet.
    """
    payload = load_checkpoint(checkpoint, kind=KIND, map_location=map_location)
    file = checkpoint_path(checkpoint)
    try:
        config = FewShotConfig(**payload["config"])
    except (TypeError, KeyError) as error:
        raise QuickstudyError(f"{file}: few-shot checkpoint without a valid config ({error})") from None
    if algo is not None and config.algo != algo:
        raise QuickstudyError(f"{file}: holds a {config.algo!r} learner, not {algo!r}")
    learner = build_learner(config)
    try:
        learner.load_state_dict(payload["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[:2]
        raise QuickstudyError(
            f"{file}: weights do not fit a {config.algo} learner ({' '.join(first)})"
        ) from None
    return learner, config


def train_learner(
    learner: FewShotLearner,
    config: FewShotConfig,
    train_set: ImageClassSet,
    *,
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    amp: bool = False,
    init: str | os.PathLike[str] | None = None,
    log_every: int = 50,
    checkpoint_every: int = 500,
) -> dict[str, float]:
    """Meta-train on episodes of ``train_set``; resumes from ``out_dir/checkpoint.pt`` if present.

    Each step averages ``meta_loss`` over ``config.meta_batch`` episodes; task ``t`` of step ``s``
    is drawn from ``step_generator(seed, s, t)``. Under torchrun each process takes its share of
    the tasks and the Trainer averages gradients, so any number of processes computes the same
    steps as one. ``init`` loads pretrained backbone weights before training starts.
    """
    out_dir = Path(out_dir)
    world, rank = distributed.world_size(), distributed.rank()
    if config.meta_batch % world:
        raise QuickstudyError(f"meta-batch {config.meta_batch} does not split over {world} processes")
    if init is not None:
        load_backbone_weights(learner.backbone, init, backbone_name=config.backbone)
    learner.to(device)
    sampler = EpisodeSampler(train_set.to(device), way=config.train_way, shot=config.shot, query=config.query)
    per_process = config.meta_batch // world
    tasks = range(rank * per_process, (rank + 1) * per_process)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        # Backward task by task: only one task's (second-order) graph is alive at a time.
        losses, accuracies = [], []
        for task in tasks:
            episode = sampler.sample(step_generator(config.seed, step, task))
            loss, logits = learner.meta_loss(episode)
            (loss / len(tasks)).backward()
            losses.append(loss.detach())
            accuracies.append((logits.argmax(dim=1) == episode.query_y).float().mean())
        return {"loss": torch.stack(losses).mean(), "acc": torch.stack(accuracies).mean()}

    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_halve_every, gamma=0.5)
        if config.lr_halve_every
        else None
    )
    trainer = Trainer(
        learner,
        optimizer,
        out_dir=out_dir,
        steps=config.steps,
        kind=KIND,
        config=dataclasses.asdict(config),
        scheduler=scheduler,
        device=device,
        amp=amp,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        # The Trainer counts steps; with a meta-batch, episodes/s is that many times steps/s.
        desc=f"{config.algo} {config.train_way}-way {config.shot}-shot"
        + (f", {config.meta_batch} episodes/step" if config.meta_batch > 1 else ""),
        backward=lambda outputs: None,  # done task by task in step_fn
        resume_may_change=("steps",),  # a run may go on for more steps (its schedule does not depend on them)
    )
    return trainer.fit(step_fn)
