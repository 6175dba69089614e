"""In-memory image-class sets: every image decoded once into one ``uint8`` tensor, with integer labels.

Few-shot episodes are drawn from these by index, so sampling never touches the disk.

>>> train = omniglot_classes(Path("data/omniglot"), "trainval")  # doctest: +SKIP
>>> train.images.shape, len(train.classes)  # doctest: +SKIP
(torch.Size([96000, 28, 28]), 4800)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from quickstudy.data.images import IMAGE_SUFFIXES, read_image
from quickstudy.data.omniglot import load_omniglot, vinyals_split
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Sample, Store
from quickstudy.labels.known import NEU_NOVEL, import_neu_det, neu_class_of


@dataclass(frozen=True)
class ImageClassSet:
    """Images ``uint8 [N, H, W]``, labels ``long [N]`` indexing ``classes``, and where it came from.

    Example:
        >>> images = torch.zeros(4, 8, 8, dtype=torch.uint8)
        >>> s = ImageClassSet(images, torch.tensor([0, 0, 1, 1]), ["a", "b"], "toy")
        >>> s.select(["b"]).labels.tolist()
        [0, 0]
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(
                f"images must be uint8 [N, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> list[int]:
        """Images per class, in the order of ``classes``."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def select(self, class_names: Sequence[str]) -> ImageClassSet:
        """The images of ``class_names`` only, relabelled ``0..len(class_names)-1`` in that order."""
        unknown = [name for name in class_names if name not in self.classes]
        if unknown:
            raise QuickstudyError(
                f"{self.source}: no class {unknown[0]!r} (classes: {', '.join(self.classes[:8])})"
            )
        old = torch.tensor([self.classes.index(name) for name in class_names], dtype=torch.long)
        remap = torch.full((len(self.classes),), -1, dtype=torch.long)
        remap[old] = torch.arange(len(old))
        new = remap[self.labels]
        keep = new >= 0
        return ImageClassSet(self.images[keep], new[keep], list(class_names), self.source)

    def to(self, device: str | torch.device) -> ImageClassSet:
        """The same set with its tensors on ``device`` (Omniglot fits easily in GPU memory)."""
        return ImageClassSet(self.images.to(device), self.labels.to(device), self.classes, self.source)


def omniglot_classes(root: Path, split: str, size: int = 28) -> ImageClassSet:
    """The classes of the Vinyals ``split`` (train, val, test, trainval): one per (character, rotation).

    Rotations are applied here, so a class ``Alphabet/characterNN/rot090`` holds the 20 drawings
    of that character turned by 90 degrees counter-clockwise.
    """
    drawings = load_omniglot(root, size=size)
    by_character: dict[tuple[str, str], list[int]] = {}
    for index, key in enumerate(zip(drawings.alphabet, drawings.character, strict=True)):
        by_character.setdefault(key, []).append(index)
    images, labels, classes = [], [], []  # type: list[torch.Tensor], list[torch.Tensor], list[str]
    for alphabet, character, degrees in vinyals_split(root, split):
        indices = by_character.get((alphabet, character))
        if indices is None:
            raise QuickstudyError(f"{root}: split {split!r} names {alphabet}/{character}, not in the zips")
        images.append(torch.rot90(drawings.images[indices], k=degrees // 90, dims=(1, 2)))
        labels.append(torch.full((len(indices),), len(classes), dtype=torch.long))
        classes.append(f"{alphabet}/{character}/rot{degrees:03d}")
    return ImageClassSet(torch.cat(images), torch.cat(labels), classes, f"omniglot:{split}")


def _load_resized(paths: Sequence[Path], size: int) -> torch.Tensor:
    def load(path: Path) -> np.ndarray:
        image = Image.fromarray(read_image(path)).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return torch.from_numpy(np.stack(list(pool.map(load, paths))))


def _from_paths(
    paths: list[Path], names: list[str], size: int, source: str, min_classes: int = 1
) -> ImageClassSet:
    classes = sorted(set(names))
    if len(classes) < min_classes or not paths:
        raise QuickstudyError(
            f"{source}: found {len(classes)} classes with images, need at least {min_classes}"
        )
    labels = torch.tensor([classes.index(name) for name in names], dtype=torch.long)
    return ImageClassSet(_load_resized(paths, size), labels, classes, source)


def folder_classes(root: Path, size: int = 84) -> ImageClassSet:
    """``root/<class>/<image>``: one class per sub-folder, images resized to ``size`` x ``size`` grayscale."""
    root = Path(root)
    if not root.is_dir():
        raise QuickstudyError(f"{root}: not a folder of class folders")
    paths, names = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                names.append(folder.name)
    return _from_paths(paths, names, size, str(root))


def _agreed_class(sample: Sample) -> str | None:
    """The one class every box of the image may be (None when boxes disagree, are unlabelled or absent)."""
    if not sample.boxes or any(len(box.allowed) != 1 for box in sample.boxes):
        return None
    names = {name for box in sample.boxes for name in box.allowed}
    return names.pop() if len(names) == 1 else None


def store_classes(
    store: Store,
    *,
    split: str | None = None,
    size: int = 84,
    class_of: Callable[[Sample], str | None] = _agreed_class,
) -> ImageClassSet:
    """Image-level classes from a label store: ``class_of(sample)`` names each image's class.

    The default keeps images whose boxes all carry the same single class; for NEU-DET (P7) pass
    ``class_of=lambda s: neu_class_of(s.path)``, the image's folder class. Images whose class is
    None are left out. ``split`` keeps only images tagged with it ("train", "test").
    """
    paths, names = [], []
    for sample in store.samples(split=split):
        name = class_of(sample)
        if name is not None:
            paths.append(Path(sample.path))
            names.append(name)
    return _from_paths(paths, names, size, f"label store{f' split {split!r}' if split else ''}")


def neu_classes(root: Path, split: str, size: int = 84) -> ImageClassSet:
    """NEU-DET images of the P1 ``split`` ("train" or "test"), each labelled by its folder class (P7).

    Read through the label model: the dataset is imported into a throw-away label store.
    """
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "neu.qs")
        try:
            import_neu_det(store, root)
            images = store_classes(store, split=split, size=size, class_of=lambda s: neu_class_of(s.path))
        finally:
            store.close()
    return ImageClassSet(images.images, images.labels, images.classes, f"neu-det:{split}")


@dataclass(frozen=True)
class FewShotSets:
    """The image sets of a few-shot protocol: meta-train on ``train``; test episodes take supports
    from ``test_support`` and queries from ``test_query`` (None: disjoint images of ``test_support``).
    ``focus`` names the classes whose query accuracy is the headline (P7: the novel classes).
    """

    train: ImageClassSet
    test_support: ImageClassSet
    test_query: ImageClassSet | None
    focus: list[str]


def fewshot_sets(dataset: str, data_root: Path, size: int, novel: Sequence[str] = ()) -> FewShotSets:
    """``omniglot`` (P6), ``neu`` (P7) or a folder ``root/<class>/*`` (meta-trained without ``novel``).

    - omniglot: meta-train on the Vinyals ``trainval`` classes, test on ``test``.
    - neu: meta-train on the TRAIN images of the BASE classes; test 6-way with supports from
      TRAIN and queries from TEST; ``novel`` defaults to pitted_surface and scratches.
    - a folder: meta-train on its classes other than ``novel``; test on all of them.
    """
    if dataset == "omniglot":
        root = Path(data_root) / "omniglot"
        return FewShotSets(
            omniglot_classes(root, "trainval", size), omniglot_classes(root, "test", size), None, []
        )
    if dataset == "neu":
        root = Path(data_root) / "neu-det"
        novel = list(novel or NEU_NOVEL)
        train_all, test = neu_classes(root, "train", size), neu_classes(root, "test", size)
        base = [name for name in train_all.classes if name not in novel]
        return FewShotSets(train_all.select(base), train_all, test, novel)
    folder = folder_classes(Path(dataset), size)
    base = [name for name in folder.classes if name not in novel]
    return FewShotSets(folder.select(base), folder, None, list(novel))
