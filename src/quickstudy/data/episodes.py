"""N-way K-shot episodes drawn by index from in-memory image-class sets.

An episode is a pure function of the generator it is drawn with, so a run seeded per step
(:func:`quickstudy.train.step_generator`) sees the same episodes after a resume.

>>> sampler = EpisodeSampler(train, way=5, shot=1, query=15)  # doctest: +SKIP
>>> episode = sampler.sample(torch.Generator().manual_seed(0))  # doctest: +SKIP
>>> episode.support_x.shape, episode.query_x.shape  # doctest: +SKIP
(torch.Size([5, 1, 28, 28]), torch.Size([75, 1, 28, 28]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quickstudy.data.classification import ImageClassSet
from quickstudy.errors import QuickstudyError


@dataclass(frozen=True)
class Episode:
    """One few-shot task. Labels are ``0..way-1`` in episode order; ``classes`` maps them back to the set.

    Images are float ``[B, 1, H, W]`` in ``[0, 1]``; support and query come class by class.
    ``support_index`` / ``query_index`` say which images of the sampled sets they are (evaluation
    uses them to look up embeddings computed once per image).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor

    @property
    def way(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> Episode:
        return Episode(
            self.support_x.to(device, non_blocking=True),
            self.support_y.to(device, non_blocking=True),
            self.query_x.to(device, non_blocking=True),
            self.query_y.to(device, non_blocking=True),
            self.classes.to(device, non_blocking=True),
            self.support_index.to(device, non_blocking=True),
            self.query_index.to(device, non_blocking=True),
        )


def _members(dataset: ImageClassSet) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, max count]`` image indices per class (padded with 0) and ``[C]`` counts."""
    labels = dataset.labels.cpu()
    counts = torch.bincount(labels, minlength=len(dataset.classes))
    order = torch.argsort(labels, stable=True)
    members = torch.zeros(len(dataset.classes), int(counts.max()), dtype=torch.long)
    starts = torch.cumsum(counts, 0) - counts
    for c, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
        members[c, :count] = order[start : start + count]
    return members, counts


def _draw(
    members: torch.Tensor, counts: torch.Tensor, chosen: torch.Tensor, n: int, g: torch.Generator
) -> torch.Tensor:
    """``[way, n]`` distinct image indices per chosen class, uniformly without replacement."""
    keys = torch.rand(len(chosen), members.shape[1], generator=g)
    keys[torch.arange(members.shape[1]) >= counts[chosen, None]] = 2.0  # padding sorts last
    return members[chosen[:, None], keys.argsort(dim=1)[:, :n]]


class EpisodeSampler:
    """Draws ``way``-way ``shot``-shot episodes with ``query`` queries per class from ``dataset``.

    With ``query_set`` (same class names), queries come from it instead (P7: supports from TRAIN,
    queries from TEST); otherwise support and query are disjoint images of ``dataset``. Every class
    must hold enough images; too few classes or images is a :class:`QuickstudyError`.

    Example:
        >>> images = torch.zeros(60, 8, 8, dtype=torch.uint8)
        >>> toy = ImageClassSet(images, torch.arange(60) % 6, list("abcdef"), "toy")
        >>> episode = EpisodeSampler(toy, way=3, shot=2, query=4).sample(torch.Generator().manual_seed(0))
        >>> episode.support_x.shape, episode.query_y.tolist()[:5]
        (torch.Size([6, 1, 8, 8]), [0, 0, 0, 0, 1])
    """

    def __init__(
        self,
        dataset: ImageClassSet,
        *,
        way: int,
        shot: int,
        query: int,
        query_set: ImageClassSet | None = None,
    ) -> None:
        if way < 1 or shot < 1 or query < 0:
            raise QuickstudyError(f"way and shot must be >= 1 and query >= 0 (got {way}, {shot}, {query})")
        if len(dataset.classes) < way:
            raise QuickstudyError(
                f"{dataset.source}: {len(dataset.classes)} classes, fewer than the {way} an episode needs"
            )
        if query_set is not None and query_set.classes != dataset.classes:
            raise QuickstudyError(f"{query_set.source}: query classes differ from those of {dataset.source}")
        self.dataset, self.query_set = dataset, query_set
        self.way, self.shot, self.query = way, shot, query
        self._members, self._counts = _members(dataset)
        needs = shot if query_set is not None else shot + query
        self._check(dataset, self._counts, needs, "support" if query_set is not None else "support + query")
        if query_set is not None:
            self._query_members, self._query_counts = _members(query_set)
            self._check(query_set, self._query_counts, query, "query")

    @staticmethod
    def _check(dataset: ImageClassSet, counts: torch.Tensor, needs: int, role: str) -> None:
        short = (counts < needs).nonzero().flatten().tolist()
        if short:
            c = short[0]
            raise QuickstudyError(
                f"{dataset.source}: class {dataset.classes[c]!r} has {int(counts[c])} images, "
                f"fewer than the {needs} ({role}) an episode needs"
                + (f" ({len(short)} classes short)" if len(short) > 1 else "")
            )

    def _images(self, dataset: ImageClassSet, indices: torch.Tensor) -> torch.Tensor:
        flat = indices.flatten().to(dataset.images.device)
        return dataset.images[flat].unsqueeze(1).float().div_(255.0)

    def sample(self, generator: torch.Generator) -> Episode:
        """One episode; the same generator state gives the same episode."""
        chosen = torch.randperm(len(self.dataset.classes), generator=generator)[: self.way]
        labels = torch.arange(self.way)
        if self.query_set is None:
            drawn = _draw(self._members, self._counts, chosen, self.shot + self.query, generator)
            support, query = drawn[:, : self.shot], drawn[:, self.shot :]
            query_images = self._images(self.dataset, query)
        else:
            support = _draw(self._members, self._counts, chosen, self.shot, generator)
            query = _draw(self._query_members, self._query_counts, chosen, self.query, generator)
            query_images = self._images(self.query_set, query)
        device = self.dataset.images.device
        return Episode(
            support_x=self._images(self.dataset, support),
            support_y=labels.repeat_interleave(self.shot).to(device),
            query_x=query_images,
            query_y=labels.repeat_interleave(self.query).to(device),
            classes=chosen.to(device),
            support_index=support.flatten().to(device),
            query_index=query.flatten().to(device),
        )
