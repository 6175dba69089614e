"""Episode sampler invariants: shapes, labels, disjoint support/query, reproducibility, clear errors."""

from __future__ import annotations

import pytest
import torch

from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import Episode, EpisodeSampler
from quickstudy.errors import QuickstudyError


def toy_set(classes: int = 10, per_class: int = 12, uneven: bool = False) -> ImageClassSet:
    """Image i carries its own index in pixels (0, 0) and (0, 1), so images can be told apart."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    if uneven:  # class c keeps per_class - c images
        labels = torch.cat([torch.full((per_class - c,), c) for c in range(classes)])
    n = len(labels)
    images = torch.zeros(n, 4, 4, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(n) // 256
    images[:, 0, 1] = torch.arange(n) % 256
    return ImageClassSet(images, labels, [f"c{i}" for i in range(classes)], "toy")


def image_ids(x: torch.Tensor) -> list[int]:
    pixels = (x[:, 0, 0, :2] * 255).round().long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


@pytest.mark.parametrize("uneven", [False, True])
def test_episode_invariants(uneven: bool) -> None:
    data = toy_set(per_class=14, uneven=uneven)  # uneven: 14 down to 5 images per class
    sampler = EpisodeSampler(data, way=5, shot=2, query=3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        episode = sampler.sample(generator)
        assert episode.support_x.shape == (10, 1, 4, 4) and episode.query_x.shape == (15, 1, 4, 4)
        assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert episode.query_y.tolist() == [c for c in range(5) for _ in range(3)]
        assert len(set(episode.classes.tolist())) == 5
        support, query = image_ids(episode.support_x), image_ids(episode.query_x)
        assert len(set(support + query)) == 25  # no image twice, none in both support and query
        for ids, ys in ((support, episode.support_y), (query, episode.query_y)):
            assert data.labels[ids].tolist() == episode.classes[ys].tolist()


def test_all_classes_and_images_get_drawn() -> None:
    data = toy_set(classes=6, per_class=5)
    sampler = EpisodeSampler(data, way=3, shot=1, query=1)
    generator = torch.Generator().manual_seed(1)
    seen: set[int] = set()
    for _ in range(300):
        seen.update(image_ids(sampler.sample(generator).support_x))
    assert seen == set(range(30))


def same(a: Episode, b: Episode) -> bool:
    return all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))


def test_same_generator_state_same_episode() -> None:
    sampler = EpisodeSampler(toy_set(), way=5, shot=1, query=2)
    assert same(
        sampler.sample(torch.Generator().manual_seed(7)), sampler.sample(torch.Generator().manual_seed(7))
    )
    assert not same(
        sampler.sample(torch.Generator().manual_seed(7)), sampler.sample(torch.Generator().manual_seed(8))
    )


def test_queries_from_a_separate_set() -> None:
    train, test = toy_set(classes=6, per_class=4), toy_set(classes=6, per_class=9)
    test = ImageClassSet(test.images + 100, test.labels, test.classes, "test")  # tell sets apart
    episode = EpisodeSampler(train, way=6, shot=4, query=9, query_set=test).sample(
        torch.Generator().manual_seed(0)
    )
    assert (episode.support_x[:, 0, 0, 0] < 100 / 255).all() and (
        episode.query_x[:, 0, 0, 0] >= 100 / 255
    ).all()
    assert sorted(episode.classes.tolist()) == list(range(6))


def test_select_relabels_and_keeps_only_named_classes() -> None:
    data = toy_set(classes=4, per_class=3).select(["c3", "c1"])
    assert data.classes == ["c3", "c1"] and data.labels.tolist() == [1, 1, 1, 0, 0, 0]
    with pytest.raises(QuickstudyError, match="no class 'zz'"):
        toy_set().select(["zz"])


def test_too_few_classes_or_images_is_a_clear_error() -> None:
    with pytest.raises(QuickstudyError, match="3 classes, fewer than the 5"):
        EpisodeSampler(toy_set(classes=3), way=5, shot=1, query=1)
    with pytest.raises(
        QuickstudyError,
        match=r"class .c7. has 5 images, fewer than the 6 \(support \+ query\).*3 classes short",
    ):
        EpisodeSampler(toy_set(uneven=True), way=2, shot=1, query=5)
    with pytest.raises(QuickstudyError, match="query classes differ"):
        EpisodeSampler(toy_set(), way=2, shot=1, query=1, query_set=toy_set(classes=4))
