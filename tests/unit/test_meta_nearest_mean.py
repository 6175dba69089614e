"""Test-time views and nearest-mean scoring of a fixed embedding (P7-u's scoring, in the library)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quickstudy.backbones import build_backbone
from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.errors import QuickstudyError
from quickstudy.meta import build_learner, evaluate, nearest_mean_learner
from quickstudy.meta.nearest_mean import ViewAveraged, augmented_views, with_test_time_views
from quickstudy.meta.training import FewShotConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_classes(n_classes: int = 6, per_class: int = 8, size: int = 16) -> ImageClassSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    patterns = torch.rand(n_classes, size, size, generator=g) * 200
    images = (patterns[labels] + torch.rand(len(labels), size, size, generator=g) * 55).byte()
    return ImageClassSet(images, labels, [f"c{i}" for i in range(n_classes)], "toy")


def test_eight_views_are_the_eight_symmetries_of_the_square() -> None:
    image = torch.arange(9.0).view(1, 1, 3, 3)
    views = {tuple(v.flatten().tolist()) for v in augmented_views(image, 8)}
    symmetries = {
        tuple(torch.rot90(x, k, dims=(2, 3)).flatten().tolist())
        for x in (image, image.flip(3))
        for k in range(4)
    }
    assert views == symmetries and len(views) == 8
    assert [len(augmented_views(image, n)) for n in (1, 2, 4)] == [1, 2, 4]
    with pytest.raises(ValueError, match="3 is not one of"):
        augmented_views(image, 3)


def test_eight_views_make_the_embedding_blind_to_turns_and_mirrors() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", width=8).eval()
    images = torch.rand(3, 1, 16, 16)
    turned = torch.rot90(images, 1, dims=(2, 3)).flip(3)
    with torch.no_grad():
        averaged = ViewAveraged(backbone, 8)
        assert torch.allclose(averaged(images), averaged(turned), atol=1e-5)
        single = ViewAveraged(backbone, 1)
        assert not torch.allclose(single(images), single(turned), atol=1e-3)


def test_nearest_mean_scores_queries_by_the_nearest_centred_normalised_class_mean() -> None:
    torch.manual_seed(0)
    base, test = toy_classes().select(["c0", "c1", "c2"]), toy_classes().select(["c3", "c4", "c5"])
    backbone = build_backbone("conv4", width=8).eval()
    learner = nearest_mean_learner(backbone, base, views=2)
    episode = EpisodeSampler(test, way=3, shot=2, query=3).sample(torch.Generator().manual_seed(1))
    scores = learner.fit(episode.support_x, episode.support_y)(episode.query_x)

    def by_hand(x: torch.Tensor) -> torch.Tensor:  # SimpleShot's CL2N over the image and its mirror
        with torch.no_grad():
            return torch.stack([backbone(x), backbone(x.flip(3))]).mean(0)

    centre = by_hand(base.images.unsqueeze(1).float() / 255).mean(0)
    support = F.normalize(by_hand(episode.support_x) - centre, dim=1)
    query = F.normalize(by_hand(episode.query_x) - centre, dim=1)
    means = torch.stack([support[episode.support_y == c].mean(0) for c in range(3)])
    assert torch.allclose(scores, -(torch.cdist(query, means) ** 2), atol=1e-5)
    report = evaluate(learner, EpisodeSampler(test, way=3, shot=1, query=3), episodes=20)
    assert report.accuracy > 0.9  # chance is 1/3: the toy classes are far apart even for a random network


def test_test_time_views_refuse_a_learner_that_adapts_its_backbone() -> None:
    maml = build_learner(FewShotConfig(algo="maml", backbone_kw={"width": 4}, train_way=2))
    with pytest.raises(
        QuickstudyError, match="--tta averages each image's embedding; maml's depends on the episode"
    ):
        with_test_time_views(maml, 4)
    assert with_test_time_views(maml, 1) is maml
    protonet = build_learner(FewShotConfig(algo="protonet", backbone_kw={"width": 4}))
    assert isinstance(with_test_time_views(protonet, 4).backbone, ViewAveraged)
