"""Objects from configs: the model, and the optimizer with its schedule. The one place that calls
Hydra's `instantiate`."""

from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.untrusted import registered_model


def build_model(model_cfg: DictConfig | dict[str, Any], source: str | None = None, **shape: Any) -> nn.Module:
    """The model the config names, told the data's shape (num_classes, in_channels, image_size).

    `source`: the file the config was read from when it is not the user's own (a checkpoint, a
    run folder): then only a registered builder is called, with plain option values. The user's
    own configs may name any builder, as Hydra would build it.
    """
    if isinstance(model_cfg, DictConfig):
        # not resolved: a stored config holds no interpolations, and one is refused as such
        model_cfg = OmegaConf.to_container(model_cfg, resolve=source is None)
    name = str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    try:
        if source is None:
            return instantiate(model_cfg, **shape, _convert_="all")
        builder, options = registered_model(model_cfg, source)
        return builder(**options, **shape)
    except (InstantiationException, TypeError) as error:
        # e.g. an option the builder does not take (+model.depth=3)
        cause = error.__cause__ or error if isinstance(error, InstantiationException) else error
        raise CnnbenchError(f"model: {name} cannot be built: {str(cause).splitlines()[0]}") from None


def build_optimizer(cfg: DictConfig, model: nn.Module):
    """The optimizer and per-step scheduler the config names, with optional linear warmup."""
    # _convert_="all": plain lists in the optimizer's state, so checkpoints stay plain data.
    optimizer = instantiate(cfg.optimizer, _convert_="all")(model.parameters())
    warmup_steps = round(cfg.warmup_epochs * cfg.steps_per_epoch)
    if warmup_steps == 0:
        return optimizer, instantiate(cfg.scheduler, _convert_="all")(optimizer)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup_steps,
                                               total_iters=warmup_steps)
    main = instantiate(cfg.scheduler, _convert_="all")(optimizer)
    return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main],
                                                            milestones=[warmup_steps])
