"""Omniglot (Lake et al. 2015) from the official zips or extracted folders, decoded once and cached.

>>> drawings = load_omniglot(Path("data/omniglot"), size=28)  # doctest: +SKIP
>>> drawings.images.shape  # doctest: +SKIP
torch.Size([32460, 28, 28])
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from quickstudy.errors import QuickstudyError

_PARTS = ("images_background", "images_evaluation")
_MEMBER = re.compile(r"(images_background|images_evaluation)/([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")


@dataclass(frozen=True)
class OmniglotDrawings:
    """Every Omniglot drawing: ``images`` ``uint8 [N, size, size]`` with ink bright (255) on dark."""

    images: torch.Tensor
    alphabet: list[str]
    character: list[str]
    drawing: torch.Tensor  # the drawer number, 1..20
    background: torch.Tensor  # True for images_background (the 30 alphabets of P8)

    def __len__(self) -> int:
        return len(self.alphabet)


def _cache_dir() -> Path:
    return Path(os.environ.get("QUICKSTUDY_CACHE") or Path.home() / ".cache" / "quickstudy")


def _entries(root: Path) -> Iterator[tuple[str, bytes | Path]]:
    """Yield ``(relative name, png bytes or path)`` from the zips, or from extracted folders."""
    for part in _PARTS:
        folder = root / part
        archive = root / f"{part}.zip"
        if folder.is_dir():
            for path in sorted(folder.glob("*/character*/*.png")):
                yield path.relative_to(root).as_posix(), path
        elif archive.exists():
            try:
                with zipfile.ZipFile(archive) as zf:
                    for name in sorted(zf.namelist()):
                        if name.endswith(".png"):
                            yield name, zf.read(name)
            except zipfile.BadZipFile:
                raise QuickstudyError(f"{archive}: not a readable zip file") from None
        else:
            raise QuickstudyError(
                f"{root}: neither {part}.zip nor {part}/ found (is this the omniglot folder?)"
            )


def _decode(item: tuple[str, bytes | Path], size: int) -> np.ndarray:
    name, payload = item
    try:
        image = Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload).convert("L")
    except OSError as error:
        raise QuickstudyError(f"{name}: not a readable image ({error})") from None
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return 255 - np.asarray(image, dtype=np.uint8)  # strokes are black on white: make ink bright


def load_omniglot(root: Path, size: int = 28) -> OmniglotDrawings:
    """Decode all 32,460 drawings at ``size`` pixels; cached as ``.npz`` after the first call."""
    root = Path(root)
    stamp = "|".join(
        f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
        for p in sorted(root.glob("images_*"))
        if p.name.split(".")[0] in _PARTS
    )
    key = hashlib.sha1(f"{root.resolve()}|{stamp}|{size}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"omniglot-{size}px-{key}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            images, names = saved["images"], [str(n) for n in saved["names"]]
    else:
        items = list(_entries(root))
        if not items:
            raise QuickstudyError(f"{root}: no Omniglot drawings found")
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            images = np.stack(list(pool.map(lambda item: _decode(item, size), items, chunksize=256)))
        names = [name for name, _ in items]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, names=np.array(names))
        os.replace(tmp, cache)
    alphabet, character, drawing, background = [], [], [], []
    for name in names:
        match = _MEMBER.search(name)
        if match is None:
            raise QuickstudyError(f"{root}: unexpected file name in Omniglot: {name}")
        part, alpha, char, _, drawer = match.groups()
        alphabet.append(alpha)
        character.append(char)
        drawing.append(int(drawer))
        background.append(part == "images_background")
    return OmniglotDrawings(
        images=torch.from_numpy(images),
        alphabet=alphabet,
        character=character,
        drawing=torch.tensor(drawing, dtype=torch.long),
        background=torch.tensor(background, dtype=torch.bool),
    )


def vinyals_split(root: Path, name: str) -> list[tuple[str, str, int]]:
    """The classes of ``splits/vinyals/<name>.txt``: ``(alphabet, character, rotation in degrees)``."""
    path = Path(root) / "splits" / "vinyals" / f"{name}.txt"
    if not path.exists():
        raise QuickstudyError(f"{path}: split file not found (names: train, val, test, trainval)")
    classes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split("/")
        if len(parts) != 3 or not parts[2].startswith("rot"):
            raise QuickstudyError(f"{path}:{number}: expected <alphabet>/<character>/rot<deg>, got {line!r}")
        classes.append((parts[0], parts[1], int(parts[2][3:])))
    return classes
