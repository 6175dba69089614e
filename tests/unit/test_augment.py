"""Batched texture augmentations: shape, value range, per-image randomness, exact geometry."""

from __future__ import annotations

import pytest
import torch

from quickstudy.data.augment import AugmentConfig, TextureAugment, gaussian_blur

NO_PHOTOMETRIC = {"brightness": 0.0, "contrast": 0.0, "blur_probability": 0.0, "noise_probability": 0.0}


def _dihedral_views(image: torch.Tensor) -> list[torch.Tensor]:
    """The eight flips and quarter turns of a ``[C, H, W]`` image."""
    views = []
    for flipped in (image, image.flip(-1)):
        views.extend(torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4))
    return views


@pytest.mark.parametrize("shape", [(6, 1, 64, 64), (3, 3, 40, 56), (1, 1, 17, 17)])
def test_views_keep_shape_and_value_range(shape: tuple[int, int, int, int]) -> None:
    images = torch.rand(shape)
    images[0] = 1.0  # a saturated image must stay in range after brightness gain and noise
    views = TextureAugment(AugmentConfig(brightness=0.9, contrast=0.9, noise_std=(0.2, 0.3)))(
        images, torch.Generator().manual_seed(1)
    )
    assert views.shape == images.shape
    assert views.dtype == images.dtype
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0


def test_out_size_resizes_the_crop() -> None:
    views = TextureAugment(out_size=32)(torch.rand(4, 1, 64, 64), torch.Generator().manual_seed(0))
    assert views.shape == (4, 1, 32, 32)


def test_same_seed_same_views_and_each_image_gets_its_own_view() -> None:
    images = torch.rand(1, 1, 32, 32).expand(8, 1, 32, 32).contiguous()
    augment = TextureAugment()
    first = augment(images, torch.Generator().manual_seed(3))
    again = augment(images, torch.Generator().manual_seed(3))
    other = augment(images, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # Eight copies of one image: eight different views.
    distinct = {tuple(view.flatten()[:50].tolist()) for view in first}
    assert len(distinct) == 8


def test_full_crop_without_photometric_changes_is_a_flip_or_quarter_turn() -> None:
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **NO_PHOTOMETRIC)
    images = torch.rand(16, 1, 12, 12)
    views = TextureAugment(config)(images, torch.Generator().manual_seed(0))
    seen = set()
    for image, view in zip(images, views, strict=True):
        matches = [i for i, d in enumerate(_dihedral_views(image)) if torch.allclose(view, d, atol=1e-5)]
        assert matches, "the view is not a flip/rotation of its image"
        seen.add(matches[0])
    assert len(seen) > 1  # and the transform is random


def test_without_flip_and_rotation_a_full_crop_is_the_identity() -> None:
    config = AugmentConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, rotate90=False, **NO_PHOTOMETRIC
    )
    images = torch.rand(4, 1, 20, 20)
    assert torch.allclose(TextureAugment(config)(images, torch.Generator().manual_seed(0)), images, atol=1e-5)


def test_small_crops_zoom_in() -> None:
    # A crop of a quarter of the area magnifies by two: a one-pixel checkerboard becomes much smoother.
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    images = checker.float().expand(4, 1, 32, 32).contiguous()
    config = AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), **NO_PHOTOMETRIC)
    views = TextureAugment(config)(images, torch.Generator().manual_seed(0))
    assert float(views.std()) < 0.8 * float(images.std())


def test_blur_zero_sigma_is_identity_and_blur_keeps_flat_images_and_smooths_noise() -> None:
    images = torch.rand(3, 1, 24, 24)
    assert torch.allclose(gaussian_blur(images, torch.zeros(3)), images, atol=1e-6)
    flat = torch.full((2, 1, 10, 10), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 2.0])), flat, atol=1e-6)
    blurred = gaussian_blur(images, torch.tensor([0.0, 1.0, 2.0]))
    stds = [float(blurred[i].std()) for i in range(3)]
    assert stds[0] > stds[1] > stds[2]


def test_bad_config_and_bad_shape_are_rejected() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="B, C, H, W"):
        TextureAugment()(torch.rand(1, 8, 8))
