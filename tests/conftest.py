"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _shared_data() -> Path:
    env = os.environ.get("QUICKSTUDY_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$QUICKSTUDY_DATA``); the test skips when it is absent."""
    root = _shared_data()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set QUICKSTUDY_DATA or place ../shared/data)")
    return root


@pytest.fixture(scope="session")
def neu_root(shared_data: Path) -> Path:
    root = shared_data / "neu-det"
    if not (root / "ANNOTATIONS").is_dir():
        pytest.skip(f"NEU-DET not found at {root}")
    return root


@pytest.fixture(scope="session")
def omniglot_root(shared_data: Path) -> Path:
    root = shared_data / "omniglot"
    if not (root / "images_background.zip").exists() and not (root / "images_background").is_dir():
        pytest.skip(f"Omniglot not found at {root}")
    return root


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one thread is fastest, and two test workers on two cores do not fight."""
    import torch  # here, so that the label tests never import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
