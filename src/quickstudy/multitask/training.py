"""Training and evaluating any architecture x weighting x combiner through :class:`quickstudy.train.Trainer`.

The checkpoint (kind ``"multitask"``) holds a :class:`MultiTaskLearner`: the network *and* its
weighting, so learnable weights and loss histories resume with the run. ``results.json`` beside it
holds the per-task test accuracy, the mean and the time per step.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quickstudy.errors import QuickstudyError
from quickstudy.multitask.architectures import ARCHITECTURES, MultiTaskNetwork, build_network
from quickstudy.multitask.combiners import COMBINERS, WeightedCombiner, get_combiner
from quickstudy.multitask.omniglot import ClassificationTask
from quickstudy.multitask.weighting import WEIGHTINGS, LossWeighting, Weighting, get_weighting
from quickstudy.train import Trainer, distributed, load_checkpoint, step_generator

KIND = "multitask"
RESULTS_NAME = "results.json"


@dataclass
class MultiTaskConfig:
    """What a multi-task run trains; saved in the checkpoint so ``eval`` can rebuild the network."""

    arch: str = "shared"
    weighting: str = "equal"
    combiner: str = "none"
    steps: int = 1000
    batch_size: int = 16  # images per task per step
    lr: float = 1e-3
    width: int = 64
    seed: int = 0
    image_size: int = 28
    task_names: list[str] = field(default_factory=list)
    n_classes: list[int] = field(default_factory=list)
    benchmark: str = "omniglot-mtl"
    data_root: str = ""  # where the benchmark's data was read from: evaluation reads it there too

    @property
    def method(self) -> str:
        """The weighting, the combiner, or both: ``"uncertainty"``, ``"pcgrad"``, ``"uncertainty + pcgrad"``."""
        if self.combiner == "none":
            return self.weighting
        return self.combiner if self.weighting == "equal" else f"{self.weighting} + {self.combiner}"

    def check(self) -> None:
        """Raise :class:`QuickstudyError` for a combination that cannot train."""
        choices = {
            "arch": ARCHITECTURES,
            "weighting": tuple(WEIGHTINGS),
            "combiner": ("none", *COMBINERS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise QuickstudyError(f"--{name} {getattr(self, name)!r}: choose from {', '.join(allowed)}")
        if self.weighting == "fixed":
            raise QuickstudyError("--weighting fixed needs per-task weights; use the Python API")
        if self.combiner != "none" and not issubclass(WEIGHTINGS[self.weighting], LossWeighting):
            raise QuickstudyError(
                f"--weighting {self.weighting} weights tasks by their gradients, as --combiner "
                f"{self.combiner} does: use one of them"
            )
        if self.arch == "single" and (self.weighting != "equal" or self.combiner != "none"):
            raise QuickstudyError(
                "--arch single shares no parameters: weighting and combiners have nothing to act on"
            )
        for name in ("steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise QuickstudyError(
                    f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )


def build_method(config: MultiTaskConfig) -> Weighting:
    """The weighting, the combiner, or both (the combiner on the weighting's scaled losses), that
    ``config`` names."""
    n = len(config.n_classes)
    if config.combiner == "none":
        return get_weighting(config.weighting, n)
    combiner = get_combiner(config.combiner, n)
    if config.weighting == "equal":  # the combiner alone: the same gradients, and its own checkpoint keys
        return combiner
    weighting = get_weighting(config.weighting, n)
    assert isinstance(weighting, LossWeighting)  # config.check() refused the others
    return WeightedCombiner(weighting, combiner)


class MultiTaskLearner(nn.Module):
    """A multi-task network with the weighting that trains it (one module, so one checkpoint).

    Example:
        >>> from quickstudy.multitask.architectures import build_network
        >>> learner = MultiTaskLearner(build_network("shared", [5, 3], width=8), get_weighting("dwa", 2))
        >>> sorted(dict(learner.named_children()))
        ['method', 'network']
    """

    def __init__(self, network: MultiTaskNetwork, method: Weighting) -> None:
        super().__init__()
        self.network = network
        self.method = method
        self.last_weights: Tensor | None = None

    def backward(self, losses: Sequence[Tensor]) -> None:
        self.last_weights = self.method.backward(losses, self.network.shared_parameters())


def _as_input(images: Tensor) -> Tensor:
    return images.float() / 255.0


@torch.no_grad()
def evaluate_tasks(
    network: MultiTaskNetwork,
    tasks: Sequence[ClassificationTask],
    batch_size: int = 1000,
    split: str = "test",
) -> list[float]:
    """Accuracy of each task on its ``split`` (``"test"``: drawings 16-20 in P8; ``"train"``: 1-15,
    to see overfitting), batch-norm in inference mode."""
    if split not in ("test", "train"):
        raise ValueError(f"unknown split {split!r}; choose test or train")
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    accuracies = []
    for t, task in enumerate(tasks):
        all_images = task.test_images if split == "test" else task.train_images
        all_labels = task.test_labels if split == "test" else task.train_labels
        correct = 0
        for start in range(0, len(all_labels), batch_size):
            images = _as_input(all_images[start : start + batch_size].to(device))
            labels = all_labels[start : start + batch_size].to(device)
            correct += int((network(images, t).argmax(dim=1) == labels).sum())
        accuracies.append(correct / len(all_labels))
    network.train(was_training)
    return accuracies


def train_multitask(
    tasks: Sequence[ClassificationTask],
    config: MultiTaskConfig,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    amp: bool = False,
    checkpoint_every: int = 500,
    log_every: int = 50,
    method: Weighting | None = None,
) -> dict[str, Any]:
    """Train ``config`` on ``tasks`` into ``out_dir`` (resuming if a checkpoint is there); evaluate;
    write and return the results (per-task test and train accuracy, their means, seconds per step,
    weights).

    ``amp`` runs the forward passes under bfloat16 autocast on CUDA. ``method`` replaces the weighting
    ``config`` names (e.g. another library's implementation, to compare against); ``config.weighting``
    and ``config.combiner`` then only label the run.
    """
    config.task_names = [task.name for task in tasks]
    config.n_classes = [task.n_classes for task in tasks]
    config.check()
    distributed.init_from_env(device)
    torch.manual_seed(config.seed)
    network = build_network(config.arch, config.n_classes, width=config.width, image_size=config.image_size)
    learner = MultiTaskLearner(network, method or build_method(config)).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr)
    on_device = [task.to(device) for task in tasks]
    # The per-task losses go to the weighting, not into the logged outputs (30 columns of noise).
    task_losses: list[Tensor] = []
    timer: dict[str, float] = {}

    def step_fn(step: int) -> dict[str, Tensor]:
        if step == trainer.start_step + 1:  # time per step leaves out the first (warm-up) step
            _synchronize(device)
            timer["started"] = time.perf_counter()
        generator = step_generator(config.seed, step, distributed.rank())
        task_losses.clear()
        correct = torch.zeros((), device=device)
        picks = [
            torch.randint(len(task.train_labels), (config.batch_size,), generator=generator).to(device)
            for task in on_device
        ]
        batches = [_as_input(task.train_images[pick]) for task, pick in zip(on_device, picks, strict=True)]
        for task, pick, logits in zip(on_device, picks, network.forward_tasks(batches), strict=True):
            labels = task.train_labels[pick]
            task_losses.append(F.cross_entropy(logits.float(), labels))
            correct = correct + (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": torch.stack(task_losses).sum().detach(), "acc": correct / len(on_device)}

    trainer = Trainer(
        learner,
        optimizer,
        out_dir=out_dir,
        steps=config.steps,
        kind=KIND,
        config=asdict(config),
        device=device,
        amp=amp,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        desc=f"{config.arch}/{config.method}",
        backward=lambda outputs: learner.backward(task_losses),
        resume_may_change=("steps",),  # a run may go on for more steps (constant learning rate)
    )
    steps_run = config.steps - trainer.start_step
    trainer.fit(step_fn)
    _synchronize(device)
    timed_steps = steps_run - 1
    seconds_per_step = (time.perf_counter() - timer["started"]) / timed_steps if timed_steps > 0 else None
    accuracies = evaluate_tasks(network, on_device)
    train_accuracies = evaluate_tasks(network, on_device, split="train")
    results = {
        "config": asdict(config),
        "method": type(learner.method).__name__,
        "accuracy": dict(zip(config.task_names, accuracies, strict=True)),
        "mean_accuracy": sum(accuracies) / len(accuracies),
        "train_accuracy": dict(zip(config.task_names, train_accuracies, strict=True)),
        "mean_train_accuracy": sum(train_accuracies) / len(train_accuracies),
        "steps_run": steps_run,
        "seconds_per_step": seconds_per_step,
        "final_weights": learner.last_weights.tolist() if learner.last_weights is not None else None,
    }
    if distributed.is_main():
        (Path(out_dir) / RESULTS_NAME).write_text(json.dumps(results, indent=2))
    return results


def _synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load_multitask(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[MultiTaskNetwork, MultiTaskConfig]:
    """The trained network of a run folder and its config; :class:`QuickstudyError` if unreadable."""
    path = Path(run_dir) / "checkpoint.pt"
    payload = load_checkpoint(path, kind=KIND, map_location=device)
    try:
        config = MultiTaskConfig(**payload["config"])
    except TypeError as error:
        raise QuickstudyError(f"{path}: config does not describe a multi-task run ({error})") from None
    network = build_network(config.arch, config.n_classes, width=config.width, image_size=config.image_size)
    learner = MultiTaskLearner(network, build_method(config))
    try:
        learner.load_state_dict(payload["model"])
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise QuickstudyError(
            f"{path}: weights do not fit the network its config describes ({first_line})"
        ) from None
    return network.to(device), config
