"""A black-box memory learner: the labelled support set is written to a memory the queries read.

After MANN (Santoro et al. 2016): each support image's embedding, joined with its one-hot label,
is one memory slot; a query reads the memory by content-based addressing (softmax of sharpened
cosine similarity between controller keys, as in Neural Turing Machines) and a small network
maps what it read to class scores. No gradient step happens at adaptation time: "learning" a task
is writing its support set. Unlike a prototype or nearest-neighbour rule, the mapping from read
content to labels is itself learned, so the learner must discover how to use its memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.episodes import Episode
from quickstudy.errors import QuickstudyError
from quickstudy.meta.base import FewShotLearner, Predictor, feature_size, way_of


class MemoryLearner(FewShotLearner):
    """Predict query labels from a content-addressed memory of (support embedding, one-hot label).

    ``max_way`` fixes the size of the label code: any episode up to that many classes works.
    ``heads`` independent read heads each address the memory with their own keys.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> learner = MemoryLearner(build_backbone("conv4"), max_way=5)
        >>> predictor = learner.eval().fit(torch.rand(5, 1, 28, 28), torch.arange(5))
        >>> predictor(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    algo = "mann"

    def __init__(self, backbone: nn.Module, max_way: int, *, dim: int = 128, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} does not split into {heads} heads")
        features = feature_size(backbone)
        self.backbone = backbone
        self.max_way, self.heads = max_way, heads
        self.key = nn.Linear(features, dim)
        self.write = nn.Linear(features + max_way, dim)
        self.sharpness = nn.Parameter(torch.full((heads,), 10.0))
        self.read_out = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, max_way))

    def _logits(
        self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, way: int
    ) -> torch.Tensor:
        if way > self.max_way:
            raise QuickstudyError(f"this mann model reads at most {self.max_way} classes; got {way}-way")

        def by_head(x: torch.Tensor) -> torch.Tensor:  # [N, dim] -> [heads, N, dim / heads]
            return x.view(len(x), self.heads, -1).transpose(0, 1)

        query_key = self.key(query)
        keys_s = F.normalize(by_head(self.key(support)), dim=-1)
        keys_q = F.normalize(by_head(query_key), dim=-1)
        memory = by_head(
            self.write(torch.cat([support, F.one_hot(support_y, self.max_way).to(support.dtype)], 1))
        )
        weights = torch.softmax(self.sharpness[:, None, None] * keys_q @ keys_s.transpose(1, 2), dim=-1)
        read = (weights @ memory).transpose(0, 1).reshape(len(query), -1)
        return self.read_out(torch.cat([query_key, read], dim=1))[:, :way]

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        n = len(episode.support_y)
        logits = self._logits(features[:n], episode.support_y, features[n:], episode.way)
        return F.cross_entropy(logits, episode.query_y), logits

    @torch.no_grad()
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        support, way = self.backbone(support_x), way_of(support_y)

        @torch.no_grad()
        def predict(query_x: torch.Tensor) -> torch.Tensor:
            return self._logits(support, support_y, self.backbone(query_x), way)

        return predict
