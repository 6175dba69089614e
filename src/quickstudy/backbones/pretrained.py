"""Loading pretrained backbone weights from a quickstudy checkpoint or a raw state dict."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from quickstudy.errors import QuickstudyError


def _read(path: Path) -> object:
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise QuickstudyError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise QuickstudyError(f"{path}: not a readable torch checkpoint ({error})") from None


def _backbone_state(payload: object, where: str, backbone_name: str | None) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a pretraining payload, a learner payload or a plain state dict."""
    if not isinstance(payload, Mapping):
        raise QuickstudyError(f"{where}: expected a state dict or a quickstudy checkpoint")
    recorded = payload.get("backbone_name")
    if backbone_name is not None and recorded is not None and recorded != backbone_name:
        raise QuickstudyError(f"{where}: holds a {recorded!r} backbone, not {backbone_name!r}")
    if isinstance(payload.get("backbone"), Mapping):  # quickstudy.pretrain checkpoints
        state = payload["backbone"]
    elif isinstance(payload.get("model"), Mapping):  # learner checkpoints: model.backbone.*
        state = {
            k.removeprefix("backbone."): v for k, v in payload["model"].items() if k.startswith("backbone.")
        }
        if not state:
            raise QuickstudyError(f"{where}: its model has no 'backbone.' weights")
    else:
        state = payload
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise QuickstudyError(f"{where}: expected a state dict of tensors")
    return dict(state)


def load_backbone_weights(
    backbone: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    backbone_name: str | None = None,
) -> None:
    """Copy pretrained weights into ``backbone``; every tensor must match by name and shape.

    ``source`` is a checkpoint file, a run folder holding ``checkpoint.pt``, or a state dict. A
    checkpoint may be a pretraining one (``payload["backbone"]``), a learner's (the
    ``backbone.*`` entries of ``payload["model"]``) or a plain ``torch.save(state_dict)``.
    ``backbone_name``, when given, must equal the checkpoint's recorded ``backbone_name``.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> net = build_backbone("conv4")
        >>> load_backbone_weights(net, build_backbone("conv4").state_dict())
    """
    where = "state dict" if isinstance(source, Mapping) else str(source)
    payload = source if isinstance(source, Mapping) else _read(Path(source))
    state = _backbone_state(payload, where, backbone_name)
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if wrong_shape:
        k = wrong_shape[0]
        problems.append(f"shape of {k} is {tuple(state[k].shape)}, backbone wants {tuple(own[k].shape)}")
    if problems:
        raise QuickstudyError(
            f"{where}: weights do not fit the {type(backbone).__name__} backbone: " + "; ".join(problems)
        )
    backbone.load_state_dict(state)
