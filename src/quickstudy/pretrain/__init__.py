"""Self-supervised pretraining of backbones on images nobody labelled.

>>> from quickstudy.pretrain import pretrain, load_pretrained  # doctest: +SKIP
>>> pretrain(images, out_dir="runs/simclr", method="simclr", image_size=64)  # doctest: +SKIP
>>> load_pretrained("runs/simclr").backbone  # doctest: +SKIP
"""

from quickstudy.pretrain.methods import BYOL, METHODS, SimCLR, nt_xent_loss
from quickstudy.pretrain.run import KIND, PretrainedBackbone, load_pretrained, pretrain

__all__ = [
    "BYOL",
    "KIND",
    "METHODS",
    "PretrainedBackbone",
    "SimCLR",
    "load_pretrained",
    "nt_xent_loss",
    "pretrain",
]
