"""Episodic training through the shared Trainer: exact resume after a kill, torchrun DDP, bad checkpoints.

Run as a script (``torchrun ... test_meta_training.py OUT``) it is the worker of the DDP test.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quickstudy.data.classification import ImageClassSet
from quickstudy.errors import QuickstudyError
from quickstudy.meta import FewShotConfig, ProtoNet, build_learner, load_learner, train_learner
from quickstudy.meta.base import FewShotLearner
from quickstudy.train import distributed, save_checkpoint


def toy_classes() -> ImageClassSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(12).repeat_interleave(6)
    images = (
        torch.rand(12, 16, 16, generator=g)[labels] * 200 + torch.rand(72, 16, 16, generator=g) * 55
    ).byte()
    return ImageClassSet(images, labels, [f"c{i}" for i in range(12)], "toy")


def config(algo: str = "protonet", steps: int = 6, meta_batch: int = 2) -> FewShotConfig:
    return FewShotConfig(
        algo=algo, backbone_kw={"width": 8}, image_size=16, train_way=3, shot=1, query=2, steps=steps,
        meta_batch=meta_batch, lr_halve_every=2, learner_kw={"inner_steps": 1} if algo == "maml" else {},
    )  # fmt: skip


def train(out: Path, cfg: FewShotConfig, learner: FewShotLearner | None = None, **kw: int) -> FewShotLearner:
    torch.manual_seed(0)
    learner = learner or build_learner(cfg)
    train_learner(learner, cfg, toy_classes(), out_dir=out, log_every=1, **kw)
    return learner


def losses(out: Path) -> list[float]:
    with open(out / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    pass


class KilledProtoNet(ProtoNet):
    """Dies in the middle of the step after ``alive`` meta-losses, as a process killed mid-step would."""

    def __init__(self, *args: object, alive: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.alive = alive

    def meta_loss(self, episode):  # type: ignore[no-untyped-def]
        self.alive -= 1
        if self.alive < 0:
            raise Killed
        return super().meta_loss(episode)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = config(steps=6)
    whole = train(tmp_path / "whole", cfg)
    torch.manual_seed(0)
    doomed = KilledProtoNet(build_learner(cfg).backbone, alive=9)  # 4 steps of 2 tasks, then half a step
    with pytest.raises(Killed):
        train(tmp_path / "resumed", cfg, doomed, checkpoint_every=4)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 4
    resumed = train(tmp_path / "resumed", cfg)  # a fresh process would start exactly like this
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert losses(tmp_path / "resumed") == losses(tmp_path / "whole")
    loaded, loaded_config = load_learner(tmp_path / "resumed", algo="protonet")
    assert loaded_config == cfg and torch.equal(
        loaded.state_dict()["backbone.encoder.0.0.weight"], whole.state_dict()["backbone.encoder.0.0.weight"]
    )


def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path: Path) -> None:
    single = tmp_path / "single"
    train(single, config(algo="maml", steps=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*command, __file__, str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(losses(single)) == 4
    torch.testing.assert_close(losses(tmp_path / "ddp"), losses(single), rtol=1e-5, atol=1e-6)
    a = torch.load(single / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_checkpoint_of_another_algorithm_or_corrupt_is_a_clear_error(tmp_path: Path) -> None:
    train(tmp_path / "run", config(steps=1))
    with pytest.raises(QuickstudyError, match="holds a 'protonet' learner, not 'maml'"):
        load_learner(tmp_path / "run", algo="maml")
    with pytest.raises(QuickstudyError, match="algo='protonet', not 'maml'"):
        train(tmp_path / "run", config(algo="maml", steps=2))
    (tmp_path / "bad.pt").write_bytes((tmp_path / "run" / "checkpoint.pt").read_bytes()[:100])
    with pytest.raises(QuickstudyError, match="bad.pt"):
        load_learner(tmp_path / "bad.pt")
    with pytest.raises(QuickstudyError, match="unknown algorithm 'reptile'"):
        FewShotConfig(algo="reptile")
    save_checkpoint(tmp_path / "pretrained.pt", {"kind": "pretrain", "backbone": {}})
    with pytest.raises(QuickstudyError, match="a 'pretrain' checkpoint, expected 'fewshot'"):
        load_learner(tmp_path / "pretrained.pt")


def test_init_loads_a_pretrained_backbone_and_refuses_a_mismatched_one(tmp_path: Path) -> None:
    cfg = config(steps=0)
    pretrained = build_learner(cfg).backbone
    save_checkpoint(
        tmp_path / "pre" / "checkpoint.pt",
        {"kind": "pretrain", "backbone": pretrained.state_dict(), "backbone_name": "conv4"},
    )
    learner = build_learner(cfg)
    train_learner(learner, cfg, toy_classes(), out_dir=tmp_path / "run", init=tmp_path / "pre")
    for key, value in pretrained.state_dict().items():
        assert torch.equal(learner.backbone.state_dict()[key], value)
    wider = FewShotConfig(**{**vars(cfg), "backbone_kw": {"width": 16}})
    with pytest.raises(QuickstudyError, match="weights do not fit"):
        train_learner(
            build_learner(wider), wider, toy_classes(), out_dir=tmp_path / "run2", init=tmp_path / "pre"
        )


def test_maml_cannot_run_another_way(tmp_path: Path) -> None:
    learner = build_learner(config(algo="maml"))
    with pytest.raises(QuickstudyError, match="trained 3-way; it cannot run 5-way"):
        learner.fit(torch.rand(5, 1, 16, 16), torch.arange(5))


if __name__ == "__main__":  # the torchrun worker of the DDP test
    torch.set_num_threads(1)
    distributed.init_from_env()
    try:
        train(Path(sys.argv[1]), config(algo="maml", steps=4))
    finally:  # gloo's threads may abort the exit of a process whose group is still open
        torch.distributed.destroy_process_group()
