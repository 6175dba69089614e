"""Multi-task architectures: shapes, what is shared, MMoE gates, FiLM's identity start, Δm."""

from __future__ import annotations

import pytest
import torch

from quickstudy.errors import QuickstudyError
from quickstudy.multitask.architectures import (
    ARCHITECTURES,
    HardSharing,
    MMoE,
    TaskConditioned,
    build_network,
)
from quickstudy.multitask.metrics import delta_m
from quickstudy.multitask.training import MultiTaskConfig, MultiTaskLearner, build_method

N_CLASSES = [5, 3, 7]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gives_each_task_its_own_logits(arch: str) -> None:
    net = build_network(arch, N_CLASSES, width=8)
    images = torch.rand(4, 1, 28, 28)
    for task, n in enumerate(N_CLASSES):
        assert net(images, task).shape == (4, n)


def test_mmoe_gates_sum_to_one_per_image_and_differ_between_tasks() -> None:
    torch.manual_seed(0)
    net = build_network("mmoe", N_CLASSES, width=8)
    assert isinstance(net, MMoE)
    images = torch.rand(6, 1, 28, 28)
    gates = [net.gates_for(images, task) for task in range(3)]
    for g in gates:
        assert g.shape == (6, 4)
        assert torch.allclose(g.sum(dim=1), torch.ones(6))
        assert (g >= 0).all()
    assert not torch.allclose(gates[0], gates[1])


def test_single_task_networks_share_nothing_and_hard_sharing_shares_the_trunk() -> None:
    single = build_network("single", N_CLASSES, width=8)
    assert single.shared_parameters() == []
    images = torch.rand(2, 1, 28, 28)
    single(images, 0).sum().backward()
    trunks = single.trunks  # type: ignore[union-attr]
    assert all(p.grad is None for p in trunks[1].parameters())  # task 0 does not touch task 1's net

    shared = build_network("shared", N_CLASSES, width=8)
    assert isinstance(shared, HardSharing)
    assert {id(p) for p in shared.shared_parameters()} == {id(p) for p in shared.trunk.parameters()}


def test_film_starts_as_the_identity_and_then_conditions_on_the_task() -> None:
    torch.manual_seed(0)
    film = build_network("film", N_CLASSES, width=8)
    assert isinstance(film, TaskConditioned)
    film.eval()
    images = torch.rand(2, 1, 28, 28)
    plain = film.heads[0](film.trunk(images))
    assert torch.allclose(film(images, 0), plain, atol=1e-6)
    with torch.no_grad():
        film.gammas[0][1].mul_(2.0)  # task 1's first block scale only
    assert torch.allclose(film(images, 0), plain, atol=1e-6)
    assert not torch.allclose(film.heads[1](film.trunk(images)), film(images, 1))


def test_concat_conditioning_changes_the_shared_layer_input_per_task() -> None:
    torch.manual_seed(0)
    net = build_network("concat", [4, 4], width=8)
    net.eval()
    net.heads[1].load_state_dict(net.heads[0].state_dict())  # same head: any difference is the embedding
    images = torch.rand(2, 1, 28, 28)
    assert not torch.allclose(net(images, 0), net(images, 1))
    assert isinstance(net, TaskConditioned)
    assert {id(p) for p in net.mixer.parameters()} <= {id(p) for p in net.shared_parameters()}


def test_learner_trains_a_weighting_with_its_network() -> None:
    config = MultiTaskConfig(arch="shared", weighting="uncertainty", n_classes=N_CLASSES, width=8)
    learner = MultiTaskLearner(build_network("shared", N_CLASSES, width=8), build_method(config))
    names = dict(learner.named_parameters())
    assert "method.log_variance" in names
    images = torch.rand(2, 1, 28, 28)
    losses = [learner.network(images, t).logsumexp(dim=1).mean() for t in range(3)]
    learner.backward(losses)
    assert learner.method.log_variance.grad is not None  # type: ignore[union-attr]
    assert learner.last_weights is not None and learner.last_weights.shape == (3,)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"combiner": "pcgrad", "weighting": "gradnorm"}, "by their gradients, as --combiner pcgrad does"),
        ({"arch": "single", "combiner": "mgda"}, "shares no parameters"),
        ({"arch": "tower"}, "choose from"),
        ({"steps": 0}, "must be positive"),
    ],
)
def test_config_rejects_combinations_that_cannot_train(changes: dict[str, object], message: str) -> None:
    config = MultiTaskConfig(**changes)  # type: ignore[arg-type]
    with pytest.raises(QuickstudyError, match=message):
        config.check()


def test_delta_m_is_the_mean_relative_change_in_percent() -> None:
    assert delta_m([0.9, 0.5], [0.8, 0.5]) == pytest.approx(6.25)
    assert delta_m([0.9], [1.0]) == pytest.approx(-10.0)
    assert delta_m([2.0], [1.0], higher_is_better=[False]) == pytest.approx(-100.0)  # an error metric
    with pytest.raises(ValueError, match="one baseline per task"):
        delta_m([0.9], [0.8, 0.7])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_all_tasks_in_one_pass_give_what_each_task_alone_gives_at_inference(arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch, N_CLASSES, width=8)
    net.eval()  # running statistics: each image's output no longer depends on the rest of the batch
    batches = [torch.rand(3, 1, 28, 28) for _ in N_CLASSES]
    together = net.forward_tasks(batches)
    for task, images in enumerate(batches):
        assert torch.allclose(together[task], net(images, task), atol=1e-5)
