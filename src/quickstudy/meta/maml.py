"""MAML (Finn, Abbeel, Levine 2017), its first-order variant, and ANIL (Raghu et al. 2020).

The inner loop is functional: the adapted weights are a dict of tensors computed from the
module's parameters by :func:`torch.autograd.grad` and used through
:func:`torch.func.functional_call`, so no parameter is ever copied or written in place and the
outer gradient flows through the inner steps (second order) unless ``first_order``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from quickstudy.data.episodes import Episode
from quickstudy.errors import QuickstudyError
from quickstudy.meta.base import FewShotLearner, Predictor, feature_size, way_of


def gradient_steps(
    module: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    create_graph: bool,
) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps on the cross-entropy of ``module`` with weights ``params`` on ``(x, y)``.

    With ``create_graph`` the result stays differentiable in ``params`` through the gradients
    (second-order MAML); without, the gradients are constants and only the identity path
    ``params -> params - lr * g`` is differentiated (first-order MAML).
    """
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(module, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}
    return params


class MAML(FewShotLearner):
    """Learn an initialisation from which ``inner_steps`` gradient steps on the support fit a new task.

    The backbone should use batch statistics always (``track_running_stats=False``), as the papers
    do: the model stays in training mode for adaptation and prediction alike. ``way`` is fixed by
    the output layer; evaluating another way is an error.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> learner = MAML(build_backbone("conv4", track_running_stats=False), way=5, inner_lr=0.4)
        >>> predictor = learner.fit(torch.rand(5, 1, 28, 28), torch.arange(5))
        >>> predictor(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    algo = "maml"
    adapts_backbone = True

    def __init__(
        self,
        backbone: nn.Module,
        way: int,
        *,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        first_order: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_size(backbone), way)
        self.way = way
        self.inner_lr, self.inner_steps, self.eval_inner_steps = inner_lr, inner_steps, eval_inner_steps
        self.first_order = first_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _check_way(self, way: int) -> None:
        if way != self.way:
            raise QuickstudyError(
                f"this {self.algo} model was trained {self.way}-way; it cannot run {way}-way"
            )

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_way(episode.way)
        params = gradient_steps(
            self,
            dict(self.named_parameters()),
            episode.support_x,
            episode.support_y,
            lr=self.inner_lr,
            steps=self.inner_steps,
            create_graph=not self.first_order,
        )
        logits = functional_call(self, params, (episode.query_x,))
        return F.cross_entropy(logits, episode.query_y), logits

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        self._check_way(way_of(support_y))
        with torch.enable_grad():
            params = gradient_steps(
                self,
                {name: p.detach().requires_grad_() for name, p in self.named_parameters()},
                support_x,
                support_y,
                lr=self.inner_lr,
                steps=self.eval_inner_steps,
                create_graph=False,
            )
        adapted = {name: p.detach() for name, p in params.items()}

        @torch.no_grad()
        def predict(query_x: torch.Tensor) -> torch.Tensor:
            return functional_call(self, adapted, (query_x,))

        return predict


class FOMAML(MAML):
    """First-order MAML: the outer gradient ignores the second derivatives of the inner steps."""

    algo = "fomaml"

    def __init__(self, backbone: nn.Module, way: int, **kw: float | int) -> None:
        super().__init__(backbone, way, first_order=True, **kw)  # type: ignore[arg-type]


class ANIL(MAML):
    """Almost No Inner Loop: adapt only the output layer; the backbone is shared and fixed per task.

    The support and query features are computed once per task, which makes the inner loop cheap.
    """

    algo = "anil"

    def _adapt_head(self, features: torch.Tensor, labels: torch.Tensor, steps: int, create_graph: bool):
        head = self.head
        params: dict[str, torch.Tensor] = dict(head.named_parameters())
        if not create_graph:
            params = {name: p.detach().requires_grad_() for name, p in params.items()}
        return gradient_steps(
            head, params, features, labels, lr=self.inner_lr, steps=steps, create_graph=create_graph
        )

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_way(episode.way)
        support = self.backbone(episode.support_x)
        params = self._adapt_head(support, episode.support_y, self.inner_steps, create_graph=True)
        logits = functional_call(self.head, params, (self.backbone(episode.query_x),))
        return F.cross_entropy(logits, episode.query_y), logits

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        self._check_way(way_of(support_y))
        with torch.no_grad():
            support = self.backbone(support_x)
        with torch.enable_grad():
            params = self._adapt_head(support, support_y, self.eval_inner_steps, create_graph=False)
        adapted = {name: p.detach() for name, p in params.items()}

        @torch.no_grad()
        def predict(query_x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.head, adapted, (self.backbone(query_x),))

        return predict
