"""What cnnbench-eval, cnnbench-predict and cnnbench-export share: a checkpoint opened as data,
its model rebuilt from the config and shapes stored inside it (no dataset and no config files are
needed to use a trained model), the weights to use, and the config with a user's overrides."""

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from cnnbench.config.trust import check_stored_config
from cnnbench.engine.build import build_model
from cnnbench.engine.checkpoint import default_weights, load_checkpoint
from cnnbench.errors import CnnbenchError

_ABSENT = object()  # OmegaConf.select's answer for a missing key (None is a key set to null)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's config with `key=value` overrides on top; `+key=value` adds a new key."""
    cfg = OmegaConf.create(config)
    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith("+"):
            continue
        # OmegaConf would quietly add a misspelt key, or replace a whole group with a string.
        current = OmegaConf.select(cfg, key, default=_ABSENT)
        if current is _ABSENT:
            raise CnnbenchError(f"{key}: no such key in the checkpoint's config (add one with +{key}=VALUE)")
        if isinstance(current, DictConfig):
            raise CnnbenchError(f"{override}: the checkpoint fixes {key}; change its keys instead "
                                f"({key}.KEY=VALUE)")
    try:
        changes = OmegaConf.from_dotlist([override.lstrip("+") for override in overrides])
        return OmegaConf.merge(cfg, changes)
    except OmegaConfBaseException as error:
        raise CnnbenchError(f"cannot apply {' '.join(overrides)}: {str(error).splitlines()[0]}") from None


def open_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint to use a model from: tensors and plain data only (load_checkpoint), and a
    config that names no code (it may be anyone's file: config/trust.py)."""
    checkpoint = load_checkpoint(path)
    check_stored_config(checkpoint["config"], str(path))
    for key in ("in_channels", "image_size"):
        if key not in checkpoint:
            raise CnnbenchError(f"the checkpoint has no {key!r}: it was not written by cnnbench's train")
    return checkpoint


WEIGHTS = ("auto", "ema", "live")  # the tools' weights= argument


def chosen_weights(checkpoint: dict[str, Any], weights: str) -> str:
    """Which weights of a checkpoint to use: `auto` takes the averaged ones when the run kept an
    average (ema.decay > 0), else the live ones; `ema` and `live` ask for one."""
    if weights not in WEIGHTS:
        raise CnnbenchError(f"weights={weights!r}: use auto, ema or live")
    if weights == "ema" and not checkpoint.get("ema"):
        raise CnnbenchError("weights=ema: this checkpoint holds no averaged weights "
                            "(its run had ema.decay=0)")
    return default_weights(checkpoint) if weights == "auto" else weights


def rebuild_model(checkpoint: dict[str, Any], source: str | Path, model_cfg: DictConfig | None = None,
                  device: str | torch.device = "cpu", channels_last: bool = False,
                  weights: str = "auto") -> nn.Module:
    """The trained model of a checkpoint from open_checkpoint, in eval mode on `device`, with the
    weights `weights` picks (chosen_weights); model_cfg replaces its stored config. Only a
    registered model is built: `source` names the file the config came from in the refusal."""
    if model_cfg is None:
        model_cfg = OmegaConf.create(checkpoint["config"]["model"])
    model = build_model(model_cfg, str(source), num_classes=len(checkpoint["classes"]),
                        in_channels=checkpoint["in_channels"], image_size=list(checkpoint["image_size"]))
    averaged = chosen_weights(checkpoint, weights) == "ema"
    state = checkpoint["ema"]["model"] if averaged else checkpoint["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        # e.g. model.width_ratio=0.5 on the command line: the layers no longer fit the weights
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        raise CnnbenchError(f"the checkpoint's weights do not fit this model ({lines[-1]})") from None
    model = model.to(device)
    if channels_last:  # as the run did: move first, then change the memory layout
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
