"""Training batches decoded ahead by ``torch.utils.data.DataLoader`` workers.

A training step's batch is fixed by its step number alone (:class:`StepIndices`: the epoch's
shuffle, then this rank's slice of it), so the loader can decode the views of steps to come in
worker processes while the network trains on the current one. Workers only decode: the
augmentation and the RoIs are drawn in the training process, on the device, from the step's
generator (:meth:`quickstudy.detect.data.DetectionSet.batch`), so a batch is the same with any
number of workers, and with none it is decoded in the training process exactly as without a loader.

>>> loader = StepLoader(data.images, StepIndices(len(data), 100, 8, seed=0), 0, 2400, workers=2)  # doctest: +SKIP
>>> indices, views = loader.get(0)  # doctest: +SKIP
>>> images, targets = data.batch(indices, step_generator(0, 0), decoded=views)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from quickstudy.detect.data import DecodedImages
from quickstudy.train import distributed, step_generator

# Steps each worker decodes ahead of the training process (the DataLoader's prefetch_factor): at
# batch 8 of 512-px colour tiles a step's views are 6 MB, so the queue stays small.
PREFETCH_STEPS = 2


class StepIndices:
    """The indices into the training set of step ``step``'s batch: epoch ``step // per_epoch`` shuffles
    the ``n`` views with :func:`~quickstudy.train.step_generator` ``(seed, epoch)``, and each of the
    ``world`` ranks takes its own ``batch_size`` slice. A pure function of the step (resumed runs and
    worker processes see the same batches); picklable, for the workers.

    With ``holds_box`` (bool ``[n]``, given for tiles), the epoch's order alternates views that hold a
    box with views that do not, each group shuffled, the longer one's rest at the end: an epoch
    counts frames, not tiles, and most tiles of a large frame are background, so a plain shuffle
    would show the localizer a few boxes per epoch among many empty crops."""

    def __init__(
        self,
        n: int,
        per_epoch: int,
        batch_size: int,
        seed: int,
        world: int = 1,
        rank: int = 0,
        holds_box: torch.Tensor | None = None,
    ) -> None:
        self.n, self.per_epoch, self.batch_size, self.seed = n, per_epoch, batch_size, seed
        self.world, self.rank = world, rank
        self.holds_box = holds_box
        self._epoch: tuple[int, torch.Tensor] | None = None  # the last epoch's shuffle

    @classmethod
    def for_this_rank(
        cls, n: int, per_epoch: int, batch_size: int, seed: int, holds_box: torch.Tensor | None = None
    ) -> StepIndices:
        return cls(n, per_epoch, batch_size, seed, distributed.world_size(), distributed.rank(), holds_box)

    def _order(self, epoch: int) -> torch.Tensor:
        generator = step_generator(self.seed, epoch)
        if self.holds_box is None:
            return torch.randperm(self.n, generator=generator)
        boxed, empty = torch.nonzero(self.holds_box).flatten(), torch.nonzero(~self.holds_box).flatten()
        boxed = boxed[torch.randperm(len(boxed), generator=generator)]
        empty = empty[torch.randperm(len(empty), generator=generator)]
        pairs = min(len(boxed), len(empty))
        alternating = torch.stack([boxed[:pairs], empty[:pairs]], dim=1).flatten()
        return torch.cat([alternating, boxed[pairs:], empty[pairs:]])

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._order(epoch))
        start = (i * self.world + self.rank) * self.batch_size
        return self._epoch[1][start : start + self.batch_size]


class _StepViews(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Item ``step``: the step's indices and its views, ``uint8 [B, C, S, S]``."""

    def __init__(self, images: DecodedImages, indices: StepIndices) -> None:
        self.images, self.indices = images, indices

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.indices(step)
        return indices, self.images[indices]


class StepLoader:
    """The indices and decoded views of steps ``start .. stop - 1``, in order, decoded by ``workers``
    DataLoader processes (0: in this process, into ``images``' own cache, when each step asks).

    The decode cache stays bounded in total: each worker decodes into its own cache of 1 / ``workers``
    of ``images``' budget (the training process's cache is not filled meanwhile), and the workers end
    with :meth:`close`, before anything else decodes into ``images``. The steps are one
    pass of one DataLoader over the whole run, so its workers are started once, not once per epoch
    (what ``persistent_workers`` would otherwise be for). ``pin`` puts batches in pinned memory, for
    fast copies to a CUDA device."""

    def __init__(
        self,
        images: DecodedImages,
        indices: StepIndices,
        start: int,
        stop: int,
        workers: int = 0,
        pin: bool = False,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be at least 0, got {workers}")
        # each worker a 1/workers share of the budget, so that together they hold no more than one cache
        budget = images.capacity * images.channels * images.size**2
        decoded = (
            images
            if workers == 0
            else DecodedImages(images.views, images.channels, images.size, budget // workers)
        )
        self._loader = DataLoader(
            _StepViews(decoded, indices),
            batch_size=None,  # an item is already a step's batch
            sampler=range(start, stop),
            num_workers=workers,
            prefetch_factor=PREFETCH_STEPS if workers else None,
            pin_memory=pin,
        )
        self._steps: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = iter(self._loader)
        self._next = start

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s indices and views; steps are asked for in order."""
        if self._steps is None or step != self._next:
            raise RuntimeError(f"step {step} asked of a loader at step {self._next}")
        self._next += 1
        return next(self._steps)

    def close(self) -> None:
        """End the workers (and free their caches): dropping the DataLoader's iterator shuts them down."""
        self._steps = None
