"""Backbones: shapes, registry, loading pretrained weights with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quickstudy.backbones import build_backbone, load_backbone_weights
from quickstudy.errors import QuickstudyError


@pytest.mark.parametrize(
    ("name", "kw", "size", "features"),
    [
        ("conv4", {}, 28, 64),
        ("conv4", {"width": 32}, 84, 32),
        ("resnet12", {"widths": (8, 16, 24, 32)}, 32, 32),
    ],
)
def test_backbone_shapes(name: str, kw: dict, size: int, features: int) -> None:
    net = build_backbone(name, in_channels=3, **kw)
    assert net.out_features == features
    assert net(torch.randn(4, 3, size, size)).shape == (4, features)


def test_unknown_backbone_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="conv4"):
        build_backbone("vgg99")


def test_load_from_pretrain_checkpoint_and_learner_checkpoint(tmp_path: Path) -> None:
    source = build_backbone("conv4")
    torch.save(
        {"kind": "pretrain", "backbone": source.state_dict(), "backbone_name": "conv4"}, tmp_path / "a.pt"
    )
    learner_state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    torch.save({"kind": "fewshot", "model": learner_state}, tmp_path / "checkpoint.pt")
    for path in (tmp_path / "a.pt", tmp_path):  # a file, and a run folder holding checkpoint.pt
        target = build_backbone("conv4")
        load_backbone_weights(target, path, backbone_name="conv4")
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value)


def test_mismatch_and_corruption_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(QuickstudyError, match="shape of"):
        load_backbone_weights(build_backbone("conv4"), build_backbone("conv4", in_channels=3).state_dict())
    with pytest.raises(QuickstudyError, match="missing"):
        load_backbone_weights(build_backbone("resnet12"), build_backbone("conv4").state_dict())
    torch.save(
        {"backbone": build_backbone("conv4").state_dict(), "backbone_name": "conv4"}, tmp_path / "p.pt"
    )
    with pytest.raises(QuickstudyError, match="not 'resnet12'"):
        load_backbone_weights(build_backbone("resnet12"), tmp_path / "p.pt", backbone_name="resnet12")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(QuickstudyError, match=r"bad\.pt"):
        load_backbone_weights(build_backbone("conv4"), tmp_path / "bad.pt")
    with pytest.raises(QuickstudyError, match="no such"):
        load_backbone_weights(build_backbone("conv4"), tmp_path / "absent.pt")
