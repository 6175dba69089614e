"""Multi-task architectures in LibMTL's multi-input shape: ``net(images, task) -> logits of that task``.

Every architecture is built from one trunk factory (``quickstudy.backbones.build_backbone``), so the
single-task baseline and the multi-task networks differ only in what they share:

- :class:`SingleTaskNetworks`: one trunk and head per task, nothing shared (the baseline of Δm);
- :class:`HardSharing`: one trunk, one linear head per task;
- :class:`TaskConditioned`: one network told which task it serves, by a learned task embedding
  concatenated to the trunk's features before a shared layer (``"concat"``) or by FiLM, a per-task
  scale and shift of every block's channels (``"film"``, multiplicative gating);
- :class:`MMoE`: a few expert trunks mixed per input by one softmax gate per task.

``shared_parameters()`` are what every task updates: the parameters weightings and combiners look at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import cast

import torch
from torch import Tensor, nn

from quickstudy.backbones import build_backbone

TrunkFactory = Callable[..., nn.Module]  # (in_channels=..., **kw) -> module with .out_features


class MultiTaskNetwork(nn.Module):
    """Base: ``n_tasks`` classification tasks with ``n_classes[t]`` classes each."""

    def __init__(self, n_classes: Sequence[int]) -> None:
        super().__init__()
        if not n_classes:
            raise ValueError("a multi-task network needs at least one task")
        self.n_classes = list(n_classes)

    @property
    def n_tasks(self) -> int:
        return len(self.n_classes)

    def forward(self, images: Tensor, task: int) -> Tensor:
        """Logits ``[B, n_classes[task]]`` of a batch of task ``task``'s images."""
        raise NotImplementedError

    def forward_tasks(self, batches: Sequence[Tensor]) -> list[Tensor]:
        """Logits of one batch per task, all tasks in one step (training).

        Networks with a shared trunk run it once on all batches together, so batch norm sees one
        mixed batch, the same mix its running statistics average at test time. (Run per task, batch
        norm normalises each task by its own statistics in training but by the all-task average at
        test time: in a 10-task P8 probe one alphabet fell from 0.71 to 0.25.)
        """
        return [self(images, task) for task, images in enumerate(batches)]

    def shared_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError


class _SharedTrunkNetwork(MultiTaskNetwork):
    """A network whose features come from ``features(images, task_ids)``, then one head per task."""

    heads: nn.ModuleList

    def features(self, images: Tensor, task_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, images: Tensor, task: int) -> Tensor:
        task_ids = torch.full((images.shape[0],), task, dtype=torch.long, device=images.device)
        return self.heads[task](self.features(images, task_ids))

    def forward_tasks(self, batches: Sequence[Tensor]) -> list[Tensor]:
        sizes = [len(images) for images in batches]
        task_ids = torch.repeat_interleave(
            torch.arange(len(batches), device=batches[0].device),
            torch.tensor(sizes, device=batches[0].device),
        )
        features = self.features(torch.cat(list(batches)), task_ids).split(sizes)
        return [head(f) for head, f in zip(self.heads, features, strict=True)]


def _out_features(trunk: nn.Module) -> int:
    return cast(int, trunk.out_features)


def _heads(in_features: int, n_classes: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(in_features, n) for n in n_classes)


class SingleTaskNetworks(MultiTaskNetwork):
    """Independent networks, one per task: summing their losses trains each on its own.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> net = SingleTaskNetworks(lambda **kw: build_backbone("conv4", **kw), [5, 3])
        >>> net(torch.zeros(2, 1, 28, 28), task=1).shape
        torch.Size([2, 3])
    """

    def __init__(self, trunk: TrunkFactory, n_classes: Sequence[int], in_channels: int = 1) -> None:
        super().__init__(n_classes)
        self.trunks = nn.ModuleList(trunk(in_channels=in_channels) for _ in n_classes)
        self.heads = nn.ModuleList(
            nn.Linear(_out_features(t), n) for t, n in zip(self.trunks, n_classes, strict=True)
        )

    def forward(self, images: Tensor, task: int) -> Tensor:
        return self.heads[task](self.trunks[task](images))

    def shared_parameters(self) -> list[nn.Parameter]:
        return []


class HardSharing(_SharedTrunkNetwork):
    """One shared trunk, one linear head per task.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> net = HardSharing(lambda **kw: build_backbone("conv4", **kw), [5, 3])
        >>> net(torch.zeros(2, 1, 28, 28), task=0).shape
        torch.Size([2, 5])
    """

    def __init__(self, trunk: TrunkFactory, n_classes: Sequence[int], in_channels: int = 1) -> None:
        super().__init__(n_classes)
        self.trunk = trunk(in_channels=in_channels)
        self.heads = _heads(_out_features(self.trunk), n_classes)

    def features(self, images: Tensor, task_ids: Tensor) -> Tensor:
        return self.trunk(images)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())


class TaskConditioned(_SharedTrunkNetwork):
    """One trunk conditioned on the task, then a linear head per task (label sets differ per task).

    ``mode="concat"``: a learned ``embedding_dim``-vector per task is concatenated to the trunk's
    features, and a shared layer ``relu(W [features, e_t])`` mixes them before the head.
    ``mode="film"``: after each block of the trunk's ``encoder`` (a ``nn.Sequential``, as Conv-4's),
    channels are scaled and shifted per task, ``h * gamma_t + beta_t``, starting from the identity.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> net = TaskConditioned(lambda **kw: build_backbone("conv4", **kw), [5, 3], mode="film")
        >>> net(torch.zeros(2, 1, 28, 28), task=1).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        trunk: TrunkFactory,
        n_classes: Sequence[int],
        mode: str = "film",
        in_channels: int = 1,
        embedding_dim: int = 8,
    ) -> None:
        super().__init__(n_classes)
        if mode not in ("concat", "film"):
            raise ValueError(f"unknown conditioning mode {mode!r}; choose concat or film")
        self.mode = mode
        self.trunk = trunk(in_channels=in_channels)
        width = _out_features(self.trunk)
        if mode == "concat":
            self.embedding = nn.Embedding(self.n_tasks, embedding_dim)
            self.mixer = nn.Linear(width + embedding_dim, width)
        else:
            encoder = getattr(self.trunk, "encoder", None)
            if not isinstance(encoder, nn.Sequential):
                raise ValueError("FiLM needs a trunk whose blocks are an nn.Sequential named encoder")
            widths = [_out_channels(block) for block in encoder]
            self.gammas = nn.ParameterList(nn.Parameter(torch.ones(self.n_tasks, w)) for w in widths)
            self.betas = nn.ParameterList(nn.Parameter(torch.zeros(self.n_tasks, w)) for w in widths)
        self.heads = _heads(width, n_classes)

    def features(self, images: Tensor, task_ids: Tensor) -> Tensor:
        if self.mode == "concat":
            features = self.trunk(images)
            code = self.embedding(task_ids).to(features.dtype)
            return torch.relu(self.mixer(torch.cat([features, code], dim=1)))
        h = images
        for block, gamma, beta in zip(
            cast(nn.Sequential, self.trunk.encoder), self.gammas, self.betas, strict=True
        ):
            h = block(h) * gamma[task_ids][:, :, None, None] + beta[task_ids][:, :, None, None]
        return h.mean(dim=(2, 3))

    def shared_parameters(self) -> list[nn.Parameter]:
        mixer = list(self.mixer.parameters()) if self.mode == "concat" else []
        return [*self.trunk.parameters(), *mixer]


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"cannot find the output width of trunk block {type(block).__name__}")
    return convs[-1].out_channels


class MMoE(_SharedTrunkNetwork):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): ``n_experts`` trunks; task t mixes their
    features with ``softmax(gate_t(x))``, a linear gate on the flattened image, then its own head.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> net = MMoE(lambda **kw: build_backbone("conv4", **kw), [5, 3], image_size=28)
        >>> net.gates_for(torch.zeros(2, 1, 28, 28), task=0).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        trunk: TrunkFactory,
        n_classes: Sequence[int],
        image_size: int,
        in_channels: int = 1,
        n_experts: int = 4,
    ) -> None:
        super().__init__(n_classes)
        self.experts = nn.ModuleList(trunk(in_channels=in_channels) for _ in range(n_experts))
        self.gates = nn.ModuleList(
            nn.Linear(in_channels * image_size * image_size, n_experts) for _ in n_classes
        )
        self.heads = _heads(_out_features(self.experts[0]), n_classes)

    def gates_for(self, images: Tensor, task: int) -> Tensor:
        """Task ``task``'s mixture weights ``[B, n_experts]`` (rows sum to one)."""
        return torch.softmax(self.gates[task](images.flatten(1)), dim=1)

    def features(self, images: Tensor, task_ids: Tensor) -> Tensor:
        experts = torch.stack([expert(images) for expert in self.experts], dim=1)  # [B, E, D]
        gates = torch.empty(images.shape[0], len(self.experts), device=images.device, dtype=experts.dtype)
        for task in task_ids.unique().tolist():
            rows = task_ids == task
            gates[rows] = self.gates_for(images[rows], task).to(experts.dtype)
        return (gates.unsqueeze(2) * experts).sum(dim=1)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.experts.parameters())


ARCHITECTURES = ("single", "shared", "concat", "film", "mmoe")


def build_network(
    arch: str,
    n_classes: Sequence[int],
    *,
    trunk: str = "conv4",
    width: int = 64,
    image_size: int = 28,
    in_channels: int = 1,
    n_experts: int = 4,
) -> MultiTaskNetwork:
    """The architecture ``arch`` (one of ``ARCHITECTURES``) on ``build_backbone(trunk, width=width)``.

    MMoE's experts get ``width // 2`` filters, so its ``n_experts = 4`` experts cost about one
    full-width trunk (a conv layer's cost grows with the square of its width).

    Example:
        >>> build_network("shared", [5, 3], width=16).n_tasks
        2
    """
    factory = partial(build_backbone, trunk, width=width)
    if arch == "single":
        return SingleTaskNetworks(factory, n_classes, in_channels=in_channels)
    if arch == "shared":
        return HardSharing(factory, n_classes, in_channels=in_channels)
    if arch in ("concat", "film"):
        return TaskConditioned(factory, n_classes, mode=arch, in_channels=in_channels)
    if arch == "mmoe":
        expert = partial(build_backbone, trunk, width=max(1, width // 2))
        return MMoE(expert, n_classes, image_size, in_channels=in_channels, n_experts=n_experts)
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
