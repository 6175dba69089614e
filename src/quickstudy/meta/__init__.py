"""Few-shot learners behind one interface, episodic meta-training and evaluation.

>>> from quickstudy.meta import ProtoNet, evaluate  # doctest: +SKIP
>>> learner = ProtoNet(build_backbone("conv4"))  # doctest: +SKIP
>>> predictor = learner.fit(support_x, support_y)  # doctest: +SKIP
>>> scores = predictor(query_x)  # doctest: +SKIP

Learners: :class:`ProtoNet`, :class:`MAML`, :class:`FOMAML`, :class:`ANIL`,
:class:`MemoryLearner` (black box), :class:`Finetune` (baseline); :func:`nearest_mean_learner`
scores a fixed (e.g. self-supervised) embedding.
"""

from quickstudy.meta.base import FewShotLearner, Predictor
from quickstudy.meta.evaluation import FewShotReport, evaluate
from quickstudy.meta.finetune import CosineClassifier, Finetune
from quickstudy.meta.maml import ANIL, FOMAML, MAML, gradient_steps
from quickstudy.meta.memory import MemoryLearner
from quickstudy.meta.nearest_mean import nearest_mean_learner
from quickstudy.meta.protonet import ProtoNet
from quickstudy.meta.training import (
    ALGORITHMS,
    FewShotConfig,
    build_learner,
    load_learner,
    paper_recipe,
    train_learner,
)

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "FOMAML",
    "MAML",
    "CosineClassifier",
    "FewShotConfig",
    "FewShotLearner",
    "FewShotReport",
    "Finetune",
    "MemoryLearner",
    "Predictor",
    "ProtoNet",
    "build_learner",
    "evaluate",
    "gradient_steps",
    "load_learner",
    "nearest_mean_learner",
    "paper_recipe",
    "train_learner",
]
