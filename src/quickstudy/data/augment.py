"""Batched random augmentations for grayscale surface images, run on the device that holds the batch.

Every image of a batch gets its own random crop, flip, 90° rotation, brightness/contrast, blur and
noise, drawn from a ``torch.Generator`` so that a training step can be replayed exactly. The
geometric part is one affine resampling per batch (``affine_grid`` + ``grid_sample``); the
photometric part is elementwise or a grouped convolution, so a batch of 512 images is a handful of
kernel launches. ``torchvision.transforms.v2`` draws one parameter set per call, so applied to a
batch it would give every image the same crop; that is why the ops here are written on tensors.

There is no colour jitter: surfaces are grayscale, and a steel strip's defects are textures
whose appearance does not depend on orientation, so any 90° rotation or flip is a fair view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the random views; the defaults suit self-supervised pretraining on textures.

    ``crop_scale`` is the range of the crop's area as a fraction of the image, ``crop_ratio`` the
    range of its aspect ratio; ``brightness`` and ``contrast`` are the largest relative changes;
    ``blur_sigma`` is in output pixels; ``noise_std`` in units of the 0..1 value range.
    """

    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rotate90: bool = True
    brightness: float = 0.4
    contrast: float = 0.4
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_probability: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.05)

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if not 0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 <= low <= high, got {self.blur_sigma}")


def _uniform(low: float, high: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_crop_flip_rotate(
    images: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    out_size: int | None = None,
) -> torch.Tensor:
    """A random resized crop of each image, flipped and turned by a multiple of 90°, in one resampling.

    ``images`` is ``[B, C, H, W]``; the result is ``[B, C, out_size, out_size]`` (default: ``H, W``).
    The crop always lies inside the image, so no padding value is ever invented.
    """
    batch = images.shape[0]
    # Area fraction and aspect ratio -> half-extents in normalised coordinates ([-1, 1] spans the image).
    area = _uniform(*config.crop_scale, batch, generator)
    log_ratio = _uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), batch, generator)
    ratio = log_ratio.exp()
    half_w = (area * ratio).sqrt().clamp(max=1.0)
    half_h = (area / ratio).sqrt().clamp(max=1.0)
    centre_x = (1 - half_w) * (2 * torch.rand(batch, generator=generator) - 1)
    centre_y = (1 - half_h) * (2 * torch.rand(batch, generator=generator) - 1)
    quarter_turns = (
        torch.randint(0, 4, (batch,), generator=generator) if config.rotate90 else torch.zeros(batch)
    )
    flip = (
        torch.randint(0, 2, (batch,), generator=generator).float() * -2 + 1
        if config.flip
        else torch.ones(batch)
    )
    angle = quarter_turns.float() * (math.pi / 2)
    cos, sin = angle.cos().round(), angle.sin().round()
    # Output coordinates (u, v) are flipped (u -> flip*u), rotated, then scaled and shifted into the crop.
    theta = torch.stack(
        [
            torch.stack([half_w * cos * flip, -half_w * sin, centre_x], dim=1),
            torch.stack([half_h * sin * flip, half_h * cos, centre_y], dim=1),
        ],
        dim=1,
    ).to(device=images.device, dtype=images.dtype)
    height, width = (out_size, out_size) if out_size is not None else images.shape[-2:]
    grid = F.affine_grid(theta, [batch, images.shape[1], height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def adjust_brightness_contrast(
    images: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scale each image by ``1 ± brightness`` and its contrast around its mean by ``1 ± contrast``."""
    batch = images.shape[0]
    shape = (batch,) + (1,) * (images.dim() - 1)
    gain = _uniform(1 - brightness, 1 + brightness, batch, generator).view(shape).to(images)
    stretch = _uniform(1 - contrast, 1 + contrast, batch, generator).view(shape).to(images)
    mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
    return ((images - mean) * stretch + mean) * gain


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur image ``i`` with a Gaussian of standard deviation ``sigma[i]`` pixels (0 leaves it unchanged)."""
    batch, channels, height, width = images.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(images).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-6)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # a tiny sigma gives the identity kernel
    kernel = kernel.repeat_interleave(channels, dim=0)  # one kernel per (image, channel)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded from ``generator``: large noise is drawn where it lives."""
    if generator is None:
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class TextureAugment:
    """Random views of a batch of grayscale images in ``[0, 1]``; shape and value range are kept.

    Example:
        >>> augment = TextureAugment()
        >>> images = torch.rand(8, 1, 64, 64)
        >>> views = augment(images, torch.Generator().manual_seed(0))
        >>> views.shape, bool(views.min() >= 0), bool(views.max() <= 1)
        (torch.Size([8, 1, 64, 64]), True, True)
    """

    def __init__(self, config: AugmentConfig | None = None, out_size: int | None = None) -> None:
        self.config = config or AugmentConfig()
        self.out_size = out_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected a [B, C, H, W] batch, got shape {tuple(images.shape)}")
        config = self.config
        batch = images.shape[0]
        views = random_crop_flip_rotate(images, config, generator, self.out_size)
        views = adjust_brightness_contrast(views, config.brightness, config.contrast, generator)
        if config.blur_probability > 0 and config.blur_sigma[1] > 0:
            blurred = torch.rand(batch, generator=generator) < config.blur_probability
            sigma = _uniform(*config.blur_sigma, batch, generator) * blurred
            views = gaussian_blur(views, sigma)
        if config.noise_probability > 0 and config.noise_std[1] > 0:
            noisy = torch.rand(batch, generator=generator) < config.noise_probability
            std = (_uniform(*config.noise_std, batch, generator) * noisy).view(-1, 1, 1, 1).to(views)
            noise = torch.randn(
                views.shape,
                generator=_device_generator(generator, views.device),
                device=views.device,
                dtype=views.dtype,
            )
            views = views + std * noise
        return views.clamp(0.0, 1.0)
