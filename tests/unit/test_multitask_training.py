"""Every architecture x weighting x combiner trains through the shared Trainer, resumes, and evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quickstudy.cli import main
from quickstudy.errors import QuickstudyError
from quickstudy.multitask.omniglot import ClassificationTask
from quickstudy.multitask.training import MultiTaskConfig, evaluate_tasks, load_multitask, train_multitask


def synthetic_tasks(n_classes: list[int], per_class: int = 4) -> list[ClassificationTask]:
    generator = torch.Generator().manual_seed(0)
    tasks = []
    for t, n in enumerate(n_classes):
        labels = torch.arange(n).repeat_interleave(per_class)
        images = torch.randint(0, 256, (len(labels), 1, 28, 28), dtype=torch.uint8, generator=generator)
        tasks.append(ClassificationTask(f"task{t}", n, images, labels, images[:n], labels[:n]))
    return tasks


METHODS = [
    ("single", "equal", "none"),
    ("shared", "equal", "none"),
    ("concat", "equal", "none"),
    ("film", "equal", "none"),
    ("mmoe", "equal", "none"),
    ("shared", "uncertainty", "none"),
    ("shared", "gradnorm", "none"),
    ("shared", "dwa", "none"),
    ("shared", "equal", "pcgrad"),
    ("mmoe", "equal", "cagrad"),
    ("film", "equal", "mgda"),
    ("shared", "uncertainty", "pcgrad"),
    ("shared", "dwa", "mgda"),
]


@pytest.mark.parametrize(("arch", "weighting", "combiner"), METHODS)
def test_every_method_trains_and_writes_results(
    arch: str, weighting: str, combiner: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    config = MultiTaskConfig(
        arch=arch, weighting=weighting, combiner=combiner, steps=2, batch_size=4, width=4
    )
    results = train_multitask(synthetic_tasks([3, 2, 4]), config, tmp_path, log_every=1)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["accuracy"] == results["accuracy"]
    assert set(results["accuracy"]) == {"task0", "task1", "task2"}
    assert all(0.0 <= a <= 1.0 for a in results["accuracy"].values())
    assert len(results["final_weights"]) == 3


def test_a_resumed_run_restores_the_weighting_state_and_runs_only_the_remaining_steps(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tasks = synthetic_tasks([3, 2])
    config = MultiTaskConfig(arch="shared", weighting="uncertainty", steps=2, batch_size=4, width=4, lr=0.1)
    train_multitask(tasks, config, tmp_path)
    first = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]["method.log_variance"]
    assert not torch.equal(first, torch.zeros(2))  # the log-variances were trained and saved
    config.steps = 3
    assert train_multitask(tasks, config, tmp_path)["steps_run"] == 1
    network, loaded = load_multitask(tmp_path)
    assert loaded.steps == 3 and loaded.task_names == ["task0", "task1"]
    assert network(torch.zeros(1, 1, 28, 28), 1).shape == (1, 2)
    config.arch = "film"
    with pytest.raises(QuickstudyError, match="holds a run with another arch"):
        train_multitask(tasks, config, tmp_path)


def test_cli_reports_a_missing_dataset_and_a_bad_combination_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["multitask", "train", "--benchmark", "omniglot-mtl", "--out", str(tmp_path / "run")]
    assert main([*args, "--data-root", str(tmp_path)]) == 2
    assert "neither images_background.zip nor images_background/ found" in capsys.readouterr().err
    assert main([*args, "--weighting", "gradnorm", "--combiner", "mgda"]) == 2
    assert "as --combiner mgda does: use one of them" in capsys.readouterr().err
    assert main(["multitask", "eval", str(tmp_path / "nothing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_evaluation_reads_the_split_it_is_asked_for_and_results_carry_train_accuracy(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tasks = synthetic_tasks([3, 2])
    results = train_multitask(tasks, MultiTaskConfig(arch="shared", steps=2, batch_size=4, width=4), tmp_path)
    network, _ = load_multitask(tmp_path)
    network.eval()
    # Task 1 again with one training image, labelled with the class the network predicts for it (train
    # accuracy 1) or with the other one (train accuracy 0); the test split stays task 1's own.
    image = tasks[1].train_images[:1]
    predicted = int(network(image.float() / 255.0, 1).argmax())
    for label, train_accuracy in ((predicted, 1.0), (1 - predicted, 0.0)):
        relabelled = ClassificationTask(
            "relabelled", 2, image, torch.tensor([label]), tasks[1].test_images, tasks[1].test_labels
        )
        assert evaluate_tasks(network, [tasks[0], relabelled], split="train")[1] == train_accuracy
        assert evaluate_tasks(network, [tasks[0], relabelled]) == evaluate_tasks(network, tasks)
    assert list(results["train_accuracy"].values()) == evaluate_tasks(network, tasks, split="train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        evaluate_tasks(network, tasks, split="val")
