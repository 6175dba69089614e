"""The training engine: the shared loop, atomic resumable checkpoints, data-parallel helpers.

>>> from quickstudy.train import Trainer, step_generator, load_checkpoint  # doctest: +SKIP
"""

from quickstudy.train import distributed
from quickstudy.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from quickstudy.train.device import describe_device
from quickstudy.train.resume import check_resumable
from quickstudy.train.trainer import Trainer, step_generator

__all__ = [
    "Trainer",
    "check_resumable",
    "checkpoint_path",
    "describe_device",
    "distributed",
    "load_checkpoint",
    "save_checkpoint",
    "step_generator",
]
