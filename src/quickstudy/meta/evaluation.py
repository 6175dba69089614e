"""Few-shot evaluation: mean accuracy over many test episodes with a 95% confidence interval."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from rich.progress import Progress
from torch import nn

from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import Episode, EpisodeSampler
from quickstudy.meta.base import FewShotLearner
from quickstudy.train import step_generator

MAX_NAMED_CLASSES = 100
"""Per-class precision/recall is reported for at most this many classes (not Omniglot's 1692)."""


@dataclass
class FewShotReport:
    """Accuracy over ``episodes`` test episodes (mean and 95% CI half-width, in [0, 1]).

    ``focus_accuracy`` is the accuracy on the queries of ``focus`` classes only (P7: the novel
    classes), with its own CI over episodes; ``per_class`` maps a class name to its precision and
    recall over all queries of all episodes.
    """

    accuracy: float
    ci95: float
    episodes: int
    way: int
    shot: int
    focus: list[str] = field(default_factory=list)
    focus_accuracy: float | None = None
    focus_ci95: float | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "episodes": self.episodes,
            "way": self.way,
            "shot": self.shot,
        }
        if self.focus:
            out |= {"focus": self.focus, "focus_accuracy": self.focus_accuracy, "focus_ci95": self.focus_ci95}
        if self.per_class:
            out["per_class"] = self.per_class
        return out


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval (1.96 standard errors)."""
    values = values.double()
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), 1.96 * float(values.std()) / math.sqrt(len(values))


def embeds_each_image(learner: FewShotLearner) -> bool:
    """Whether the learner embeds each image on its own at test time, the same in every episode.

    True unless ``fit`` adapts the backbone or a batch norm uses the statistics of its batch.
    """
    batch_stats = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
        for m in learner.backbone.modules()
    )
    return not learner.adapts_backbone and not batch_stats


@torch.no_grad()
def embed_images(
    backbone: nn.Module, images: ImageClassSet, device: str | torch.device, batch: int = 512
) -> torch.Tensor:
    """``[N, D]`` embeddings of the images of ``images`` (uint8 in the set, [0, 1] to the backbone)."""
    return torch.cat(
        [
            backbone(images.images[i : i + batch].to(device).unsqueeze(1).float().div_(255.0))
            for i in range(0, len(images), batch)
        ]
    )


@contextlib.contextmanager
def _backbone_replaced(learner: FewShotLearner, stand_in: nn.Module) -> Iterator[None]:
    backbone = learner.backbone
    learner.backbone = stand_in
    try:
        yield
    finally:
        learner.backbone = backbone


def evaluate(
    learner: FewShotLearner,
    sampler: EpisodeSampler,
    *,
    episodes: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    focus: Sequence[str] = (),
    progress: bool = False,
    embed_once: bool | None = None,
    on_episode: Callable[[Episode, torch.Tensor], None] | None = None,
) -> FewShotReport:
    """Adapt to ``episodes`` test episodes with ``learner.fit`` and score the queries.

    Episode ``i`` is drawn from ``step_generator(seed, i)``, so two learners evaluated with the
    same seed see the same episodes.

    When the learner embeds each image independently of the episode (ProtoNet, the memory learner
    and the fine-tuning baseline, batch norm in eval mode) and the episodes together hold more
    images than the sets, every image is embedded once and episodes are scored on the
    embeddings: the same numbers, many times faster. ``embed_once`` forces that choice.
    ``on_episode(episode, scores)`` sees each episode's query scores ``[Q, way]`` (for other metrics).
    """
    classes = sampler.dataset.classes
    named = len(classes) <= MAX_NAMED_CLASSES
    focus_ids = torch.tensor([classes.index(name) for name in focus], dtype=torch.long, device=device)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long, device=device) if named else None
    accuracies, focus_accuracies = [], []
    learner.eval()
    query_set = sampler.query_set or sampler.dataset
    per_episode = sampler.way * (sampler.shot + sampler.query)
    if embed_once is None:
        embed_once = episodes * per_episode > len(sampler.dataset) + (
            len(query_set) if sampler.query_set is not None else 0
        )
    cached = embed_once and embeds_each_image(learner)
    support_features = embed_images(learner.backbone, sampler.dataset, device) if cached else None
    query_features = (
        embed_images(learner.backbone, query_set, device)
        if cached and sampler.query_set is not None
        else support_features
    )

    def inputs(episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        if support_features is None or query_features is None:
            return episode.support_x, episode.query_x
        return support_features[episode.support_index], query_features[episode.query_index]

    with (
        Progress(disable=not progress, transient=True) as bar,
        _backbone_replaced(learner, nn.Identity()) if cached else contextlib.nullcontext(),
    ):
        task = bar.add_task("evaluate", total=episodes)
        for index in range(episodes):
            episode = sampler.sample(step_generator(seed, index)).to(device)
            support_x, query_x = inputs(episode)
            predictor = learner.fit(support_x, episode.support_y)
            with torch.no_grad():
                scores = predictor(query_x)
            if on_episode is not None:
                on_episode(episode, scores)
            predicted = scores.argmax(dim=1)
            correct = (predicted == episode.query_y).float()
            accuracies.append(correct.mean())
            truth, guess = episode.classes[episode.query_y], episode.classes[predicted]
            if len(focus_ids):
                in_focus = torch.isin(truth, focus_ids)
                if in_focus.any():
                    focus_accuracies.append(correct[in_focus].mean())
            if confusion is not None:
                confusion.index_put_((truth, guess), torch.ones_like(truth), accumulate=True)
            bar.advance(task)
    accuracy, ci95 = mean_ci95(torch.stack(accuracies).cpu())
    report = FewShotReport(accuracy, ci95, episodes, sampler.way, sampler.shot)
    if focus_accuracies:
        report.focus = list(focus)
        report.focus_accuracy, report.focus_ci95 = mean_ci95(torch.stack(focus_accuracies).cpu())
    if confusion is not None:
        confusion = confusion.cpu()
        true_positive = confusion.diag().double()
        predicted_as = confusion.sum(0).double()
        actually = confusion.sum(1).double()
        for c, name in enumerate(classes):
            if actually[c] > 0 or predicted_as[c] > 0:
                report.per_class[name] = {
                    "precision": float(true_positive[c] / predicted_as[c]) if predicted_as[c] > 0 else 0.0,
                    "recall": float(true_positive[c] / actually[c]) if actually[c] > 0 else 0.0,
                }
    return report
