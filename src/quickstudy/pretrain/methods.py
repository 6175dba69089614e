"""Two self-supervised methods of different families, around any backbone of :mod:`quickstudy.backbones`.

* :class:`SimCLR` (Chen et al. 2020), contrastive: two views of an image must be closer to each
  other than to the views of every other image of the batch (NT-Xent loss).
* :class:`BYOL` (Grill et al. 2020), self-distillation: an online network predicts the projection
  that a slowly moving (EMA) copy of itself gives for another view; no negatives are needed.

Both keep the encoder being trained under the attribute ``backbone``, so a training checkpoint's
``model`` entries ``backbone.*`` are exactly the backbone's weights.

Why not lightly: ``lightly`` 1.6.0 installs and runs offline with torch 2.14, but pulls in
pytorch-lightning, hydra-core, omegaconf, aiohttp and torchmetrics (61 MB) and took 14 s to import
here, for the ~60 lines below (a loss, two small MLPs, an EMA update). Its ``NTXentLoss`` gives
the same value as :func:`nt_xent_loss` (see ``benchmarks/results/pretrain.md``).
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def projection_mlp(in_features: int, hidden_features: int, out_features: int) -> nn.Sequential:
    """Linear -> batch norm -> ReLU -> linear: the projection/prediction head of SimCLR and BYOL."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_features),
        nn.BatchNorm1d(hidden_features),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_features, out_features),
    )


def nt_xent_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-temperature cross entropy over ``2B`` views; returns ``(loss, top-1 positive rate)``.

    Row ``i`` of ``z_a`` and row ``i`` of ``z_b`` are two views of one image; each view must pick
    its partner among the other ``2B - 1`` views.
    """
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
    batch = z_a.shape[0]
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    loss = F.cross_entropy(logits, partner)
    accuracy = (logits.argmax(dim=1) == partner).float().mean()
    return loss, accuracy


class SimCLR(nn.Module):
    """Backbone + projection head trained with NT-Xent.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> model = SimCLR(build_backbone("conv4", width=8))
        >>> out = model(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))
        >>> sorted(out)
        ['loss', 'positive_top1']
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_features: int = 512,
        out_features: int = 128,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projection_mlp(cast(int, backbone.out_features), hidden_features, out_features)
        self.temperature = temperature

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.projector(self.backbone(torch.cat([view_a, view_b])))
        z_a, z_b = z.chunk(2)
        loss, accuracy = nt_xent_loss(z_a, z_b, self.temperature)
        return {"loss": loss, "positive_top1": accuracy}

    def before_step(self, step: int, total_steps: int) -> None:
        """Nothing to do before a step (BYOL moves its target here)."""


class BYOL(nn.Module):
    """Online backbone + projector + predictor, and an EMA target (backbone + projector) it predicts.

    The target moves towards the online weights before every step with a momentum that rises
    from ``base_momentum`` to 1 on a cosine schedule, as in the paper.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> model = BYOL(build_backbone("conv4", width=8))
        >>> model.before_step(0, 100)
        >>> float(model(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))["loss"].detach()) <= 8.0
        True
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_features: int = 1024,
        out_features: int = 128,
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projection_mlp(cast(int, backbone.out_features), hidden_features, out_features)
        self.predictor = projection_mlp(out_features, hidden_features, out_features)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = base_momentum

    def momentum(self, step: int, total_steps: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def before_step(self, step: int, total_steps: int) -> None:
        """Move the target towards the online network (its weights after the previous step)."""
        if step == 0:
            return
        tau = self.momentum(step, total_steps)
        for online, target in (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        ):
            for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
                p_target.lerp_(p_online, 1 - tau)
            for b_online, b_target in zip(online.buffers(), target.buffers(), strict=True):
                b_target.copy_(b_online)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, torch.Tensor]:
        views = torch.cat([view_a, view_b])
        predictions = self.predictor(self.projector(self.backbone(views)))
        with torch.no_grad():
            targets = self.target_projector(self.target_backbone(views))
        p_a, p_b = F.normalize(predictions.float(), dim=1).chunk(2)
        t_a, t_b = F.normalize(targets.float(), dim=1).chunk(2)
        # Each view predicts the target's projection of the other view: 2 - 2 cos, both ways.
        loss = (2 - 2 * (p_a * t_b).sum(dim=1)).mean() + (2 - 2 * (p_b * t_a).sum(dim=1)).mean()
        return {"loss": loss, "target_cosine": (p_a * t_b).sum(dim=1).mean().detach()}


METHODS: dict[str, type[SimCLR] | type[BYOL]] = {"simclr": SimCLR, "byol": BYOL}
