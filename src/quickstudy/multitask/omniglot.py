"""P8 Omniglot multi-task: the 30 alphabets of ``images_background`` are 30 classification tasks.

Task t classifies the characters of alphabet t; drawings ``_01``..``_15`` train, ``_16``..``_20`` test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from quickstudy.data.omniglot import load_omniglot
from quickstudy.errors import QuickstudyError

LAST_TRAIN_DRAWING = 15


@dataclass(frozen=True)
class ClassificationTask:
    """One task: images ``uint8 [N, 1, size, size]`` with labels ``long [N]`` in ``0..n_classes-1``."""

    name: str
    n_classes: int
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    def to(self, device: str | torch.device) -> ClassificationTask:
        return ClassificationTask(
            self.name,
            self.n_classes,
            self.train_images.to(device),
            self.train_labels.to(device),
            self.test_images.to(device),
            self.test_labels.to(device),
        )


def omniglot_mtl_tasks(root: Path, size: int = 28, n_tasks: int | None = None) -> list[ClassificationTask]:
    """The P8 tasks, alphabets in sorted order; ``n_tasks`` keeps the first few (quick runs).

    Example:
        >>> tasks = omniglot_mtl_tasks(Path("data/omniglot"))  # doctest: +SKIP
        >>> len(tasks), tasks[0].name, tasks[0].n_classes  # doctest: +SKIP
        (30, 'Alphabet_of_the_Magi', 20)
    """
    drawings = load_omniglot(root, size=size)
    by_alphabet: dict[str, list[int]] = {}
    for index, (alphabet, background) in enumerate(
        zip(drawings.alphabet, drawings.background.tolist(), strict=True)
    ):
        if background:
            by_alphabet.setdefault(alphabet, []).append(index)
    if not by_alphabet:
        raise QuickstudyError(f"{root}: no images_background drawings found (needed for omniglot-mtl)")
    names = sorted(by_alphabet)
    if n_tasks is not None:
        if not 1 <= n_tasks <= len(names):
            raise QuickstudyError(f"{root}: asked for {n_tasks} tasks, there are {len(names)} alphabets")
        names = names[:n_tasks]
    tasks = []
    for name in names:
        indices = torch.tensor(by_alphabet[name])
        characters = sorted({drawings.character[i] for i in by_alphabet[name]})
        label_of = {c: k for k, c in enumerate(characters)}
        labels = torch.tensor([label_of[drawings.character[i]] for i in by_alphabet[name]])
        train = drawings.drawing[indices] <= LAST_TRAIN_DRAWING
        images = drawings.images[indices].unsqueeze(1)
        tasks.append(
            ClassificationTask(
                name, len(characters), images[train], labels[train], images[~train], labels[~train]
            )
        )
    return tasks
