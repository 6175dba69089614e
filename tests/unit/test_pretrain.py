"""Self-supervised pretraining: the losses, the EMA target, and a short run that learns and checkpoints."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from quickstudy.backbones import build_backbone, load_backbone_weights
from quickstudy.data.augment import TextureAugment
from quickstudy.errors import QuickstudyError
from quickstudy.pretrain import BYOL, METHODS, load_pretrained, nt_xent_loss, pretrain
from quickstudy.train import load_checkpoint, save_checkpoint


def _striped_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Synthetic textures: sinusoidal stripes of random orientation, frequency and phase, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    angle = torch.rand(count, 1, 1, generator=g) * math.pi
    frequency = 0.2 + 0.8 * torch.rand(count, 1, 1, generator=g)
    phase = torch.rand(count, 1, 1, generator=g) * 2 * math.pi
    waves = torch.sin(frequency * (x * angle.cos() + y * angle.sin()) + phase)
    noisy = 0.5 + 0.4 * waves + 0.05 * torch.randn(count, size, size, generator=g)
    return (noisy.clamp(0, 1) * 255).to(torch.uint8)


def _reference_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out view by view, as in the SimCLR paper's algorithm 1."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n, batch = len(z), len(z_a)
    total = 0.0
    for i in range(n):
        j = (i + batch) % n
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / temperature) / denominator)
    return total / n


def test_nt_xent_matches_the_written_out_definition_and_rewards_aligned_views() -> None:
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    loss, _ = nt_xent_loss(z_a, z_b, temperature=0.3)
    assert float(loss) == pytest.approx(_reference_nt_xent(z_a, z_b, 0.3), rel=1e-5)
    aligned_loss, aligned_top1 = nt_xent_loss(z_a, z_a + 1e-3 * torch.randn(5, 7, generator=g), 0.3)
    assert float(aligned_loss) < float(loss)
    assert float(aligned_top1) == 1.0


def test_byol_target_follows_the_online_network_with_rising_momentum() -> None:
    model = BYOL(build_backbone("conv4", width=4), hidden_features=16, out_features=8, base_momentum=0.9)
    assert model.momentum(0, 100) == pytest.approx(0.9)
    assert model.momentum(100, 100) == pytest.approx(1.0)
    assert not any(p.requires_grad for p in model.target_backbone.parameters())
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    online = next(model.backbone.parameters()).detach()
    target = next(model.target_backbone.parameters())
    before = float((online - target).abs().mean())
    model.before_step(1, 100)
    after = float((online - target).abs().mean())
    assert after == pytest.approx(before * model.momentum(1, 100), rel=1e-4)


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_short_pretraining_lowers_its_loss_and_writes_a_checkpoint_others_load(
    method: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    images, out = _striped_images(48), tmp_path / method
    run: dict[str, Any] = {"backbone_kwargs": {"width": 8}, "method": method, "image_size": 24, "steps": 40}
    run |= {"batch_size": 24, "lr": 3e-3, "log_every": 1}
    metrics = pretrain(images, out_dir=out, **run)
    assert math.isfinite(metrics["loss"])
    with open(out / "metrics.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 40
    # Calling it again resumes a finished run: no step is taken, and the training time is kept...
    again = pretrain(images, out_dir=out, **run)
    assert metrics["seconds"] <= again["seconds"] < metrics["seconds"] + 5
    # ...but another run's settings are refused rather than silently mixed into it.
    with pytest.raises(QuickstudyError, match="image_size=24, not 32; use another --out"):
        pretrain(images, out_dir=out, **{**run, "image_size": 32})
    # The loss on one fixed pair of views of every image, at initialisation (same seed) and after training.
    # (The logged training loss is no measure for BYOL: its target moves while it learns.)
    pixels = images.unsqueeze(1).float() / 255
    augment, views = TextureAugment(out_size=24), torch.Generator().manual_seed(123)
    view_a, view_b = augment(pixels, views), augment(pixels, views)
    torch.manual_seed(0)
    model = METHODS[method](build_backbone("conv4", width=8))
    with torch.no_grad():
        initial = float(model(view_a, view_b)["loss"])
        model.load_state_dict(load_checkpoint(out)["model"])
        trained = float(model(view_a, view_b)["loss"])
    assert trained < 0.9 * initial

    payload = load_checkpoint(out, kind="pretrain")
    assert payload["backbone_name"] == "conv4" and payload["method"] == method and payload["image_size"] == 24
    pretrained = load_pretrained(out)
    assert pretrained.backbone_kwargs == {"width": 8} and pretrained.steps == 40
    # What the meta and detect engineers call with --init DIR:
    fresh = build_backbone("conv4", width=8)
    load_backbone_weights(fresh, out, backbone_name="conv4")
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, pretrained.backbone.state_dict()[name])
    untrained = build_backbone("conv4", width=8).state_dict()
    assert not torch.equal(fresh.state_dict()["encoder.0.0.weight"], untrained["encoder.0.0.weight"])
    embeddings = pretrained.backbone.eval()(torch.rand(3, 1, 24, 24))
    assert embeddings.shape == (3, 8)


def test_bad_method_and_unfinished_run_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(QuickstudyError, match="unknown pretraining method 'mae'"):
        pretrain(_striped_images(4), out_dir=tmp_path / "x", method="mae", steps=1)
    with pytest.raises(QuickstudyError, match="at least 2 images"):
        pretrain(_striped_images(1), out_dir=tmp_path / "y", steps=1)
    save_checkpoint(tmp_path / "half" / "checkpoint.pt", {"kind": "pretrain", "step": 3})
    with pytest.raises(QuickstudyError, match="did not finish"):
        load_pretrained(tmp_path / "half")
    save_checkpoint(tmp_path / "other" / "checkpoint.pt", {"kind": "fewshot"})
    with pytest.raises(QuickstudyError, match="expected 'pretrain'"):
        load_pretrained(tmp_path / "other")


def test_detector_pretraining_lowers_its_loss_and_records_its_network(
    tmp_path: Path, one_torch_thread
) -> None:
    """``pretrain --backbone detector``: the detector's ResNet + FPN, pooled, learns from unlabelled images."""
    from quickstudy.backbones import PooledResNetFPN
    from quickstudy.backbones.resnet_fpn import ResNetFPN

    network = {"widths": (8, 16, 32, 64), "depths": (1, 1, 1, 1), "fpn_channels": 16}
    images, out = _striped_images(16, size=64), tmp_path / "detector"
    run: dict[str, Any] = {"backbone": "detector", "backbone_kwargs": network, "arch": "test"}
    run |= {"method": "simclr", "image_size": 64, "steps": 40, "batch_size": 16, "lr": 1e-2}
    pretrain(images, out_dir=out, **run)
    pixels = images.unsqueeze(1).float() / 255
    augment, views = TextureAugment(out_size=64), torch.Generator().manual_seed(123)
    view_a, view_b = augment(pixels, views), augment(pixels, views)
    torch.manual_seed(0)
    model = METHODS["simclr"](PooledResNetFPN(**network))
    with torch.no_grad():
        initial = float(model(view_a, view_b)["loss"])
        model.load_state_dict(load_checkpoint(out)["model"])
        trained = float(model(view_a, view_b)["loss"])
    assert trained < 0.9 * initial

    pretrained = load_pretrained(out)
    assert (pretrained.backbone_name, pretrained.arch, pretrained.steps) == ("detector", "test", 40)
    assert pretrained.backbone_kwargs == network and pretrained.file == out / "checkpoint.pt"
    # Its weights are a detector backbone's, name for name and shape for shape.
    detector_backbone = ResNetFPN(**network)
    load_backbone_weights(detector_backbone, out, backbone_name="detector")
    assert torch.equal(detector_backbone.trunk.conv1.weight, pretrained.backbone.trunk.conv1.weight)
