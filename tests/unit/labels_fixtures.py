"""Tiny datasets written on the fly for the label-model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from quickstudy.labels import ImportedBox, ImportedImage, Store


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def small_store(tmp_path: Path, n_images: int = 6) -> Store:
    """A store with classes a, b, c; images hold 2 boxes each (one of them without class on odd images)."""
    images = []
    names = ["a", "b", "c"]
    for i in range(n_images):
        path = write_image(tmp_path / "img" / f"im{i}.png", seed=i)
        boxes = [
            ImportedBox((1.0, 1.0, 10.0, 12.0), names[i % 3]),
            ImportedBox((5.0, 4.0, 30.0, 25.0), None if i % 2 else names[(i + 1) % 3]),
        ]
        images.append(ImportedImage(path, 40, 30, boxes, split="train" if i < n_images - 2 else "test"))
    store = Store.open(tmp_path / "labels.qs")
    store.import_images(images, source="fixture")
    return store


def snapshot(store: Store) -> tuple[object, ...]:
    """Everything that defines the store's labelled state (not the journal)."""
    return (
        store.classes(),
        store.taxonomy_version(),
        [(s.image_id, s.split, [(b.box_id, b.xyxy, b.allowed) for b in s.boxes]) for s in store.samples()],
        store.boxes(),
    )
