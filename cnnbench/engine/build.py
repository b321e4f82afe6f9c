"""Objects from configs: a whole run (device, data, model, optimizer, schedule) by `build_run`,
the model alone by `build_model`. The one place that calls Hydra's `instantiate`."""

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.config.keys import model_name
from cnnbench.config.resolvers import decay_steps, warmup_steps
from cnnbench.config.trust import check_plain
from cnnbench.data import OneBatch, build_data
from cnnbench.engine.ema import WeightAverage
from cnnbench.engine.model_input import check_model_input
from cnnbench.engine.state import Run
from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import registered_builder, takes_weights
from cnnbench.models.torchvision_weights import imagenet_normalisation, split_head, weights_refusal
from cnnbench.runtime import distributed
from cnnbench.runtime.allocator import keep_freed_memory
from cnnbench.runtime.device import (
    check_precision,
    deterministic_algorithms,
    seed_everything,
    select_device,
    unwrap,
)

log = logging.getLogger("cnnbench")


def build_model(model_cfg: DictConfig | dict[str, Any], source: str | None = None, load_weights: bool = True,
                **shape: Any) -> nn.Module:
    """The model the config names, told the data's shape (num_classes, in_channels, image_size).

    `source`: the file the config was read from when it is not the user's own (a checkpoint, a
    run folder): then only a registered builder is called, with plain option values. The user's
    own configs may name any builder, as Hydra would build it. Pretrained `model.weights` are
    loaded only for the user's own config with `load_weights`: a checkpoint, or a run resumed from
    one, holds every weight already, and needs neither the network nor the weights file.
    """
    if isinstance(model_cfg, DictConfig):
        # not resolved: a stored config holds no interpolations, and one is refused as such
        model_cfg = OmegaConf.to_container(model_cfg, resolve=source is None)
    name = model_name(model_cfg)
    if isinstance(model_cfg, Mapping) and "weights" in model_cfg:
        check_weights(model_cfg)
        builder = registered_builder(str(model_cfg.get("_target_")))
        if builder is not None and not takes_weights(builder):  # +model.weights=null on a model with none
            model_cfg = {key: value for key, value in model_cfg.items() if key != "weights"}
        elif source is not None or not load_weights:
            model_cfg = {**model_cfg, "weights": None}
    try:
        if source is None:
            return instantiate(model_cfg, **shape, _convert_="all")
        builder, options = registered_model(model_cfg, source)
        return builder(**options, **shape)
    except (InstantiationException, TypeError) as error:
        # e.g. an option the builder does not take (+model.depth=3)
        raise CnnbenchError(f"model: {name} cannot be built: {why_not_built(error)}") from None


def why_not_built(error: Exception) -> str:
    """The first line of what stopped Hydra's instantiate (it wraps the builder's own error)."""
    cause = error.__cause__ or error if isinstance(error, InstantiationException) else error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def registered_model(model_cfg: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """The registered builder a stored model config names, and its plain options; CnnbenchError
    when it names anything else (only a registered builder is ever called for a stored config)."""
    if not isinstance(model_cfg, Mapping) or not isinstance(model_cfg.get("_target_"), str):
        raise CnnbenchError(f"{source}: model._target_ is missing: this config names no model")
    target = model_cfg["_target_"]
    builder = registered_builder(target)
    if builder is None:
        raise CnnbenchError(
            f"{source}: model._target_={target} is refused: not a model in cnnbench's registry (a stored "
            "config may only name a registered model; register your own with cnnbench.models.register_model "
            "in a package that declares a 'cnnbench.models' entry point)")
    options = {name: value for name, value in model_cfg.items() if name != "_target_"}
    check_plain(options, "model", source)
    return builder, options


def check_weights(model_cfg: Mapping[str, Any]) -> None:
    """Refuse, in one line, `model.weights` for a registered model that takes no pretrained weights."""
    builder = registered_builder(str(model_cfg.get("_target_")))
    if model_cfg.get("weights") is not None and builder is not None and not takes_weights(builder):
        raise CnnbenchError(weights_refusal(model_name(model_cfg)))


def parameter_groups(cfg: DictConfig, model: nn.Module) -> Any:
    """The parameters as the optimizer takes them: all in one group, or, for a model loaded from
    pretrained weights (model.weights), two: the new head at optimizer.lr, then the pretrained part
    at optimizer.lr x finetune.backbone_lr_scale. Always both, in that order, whatever the scale:
    a resume meets the groups its checkpoint saved (engine/resume.py continue_schedule)."""
    if not cfg.model.get("weights"):
        return model.parameters()
    head, pretrained = split_head(unwrap(model))
    return [{"params": head}, {"params": pretrained, "lr": cfg.optimizer.lr * cfg.finetune.backbone_lr_scale}]


def build_optimizer(cfg: DictConfig, model: nn.Module):
    """The optimizer and per-step scheduler the config names, with optional linear warmup."""
    optimizer = built("optimizer", cfg.optimizer, parameter_groups(cfg, model))
    options = {}
    if "max_lr" in cfg.scheduler and len(optimizer.param_groups) > 1:
        # one-cycle sets every group's rate from max_lr: each group its own, in the groups' ratio
        rates = [group["lr"] for group in optimizer.param_groups]
        options["max_lr"] = [cfg.scheduler.max_lr * rate / rates[0] for rate in rates]
    warmup = warmup_steps(cfg)
    main = built("scheduler", cfg.scheduler, optimizer, **options) if warmup == 0 else None
    if warmup:
        warmup_scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup,
                                                             total_iters=warmup)
        main = built("scheduler", cfg.scheduler, optimizer, **options)
    # one-cycle raises at the step past its total: say so now, not in the middle of the run
    steps_after_warmup = decay_steps(cfg)
    total = getattr(main, "total_steps", None)
    if isinstance(total, int) and total < steps_after_warmup:
        raise CnnbenchError(f"scheduler.total_steps={total} is fewer than the {steps_after_warmup:,} optimizer "
                            "steps this run takes after its warmup: leave it at ${decay_steps:}, or give more")
    if not warmup:
        return optimizer, main
    return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup_scheduler, main],
                                                            milestones=[warmup])


def built(group: str, group_cfg: DictConfig, *arguments: Any, **options: Any) -> Any:
    """The optimizer or scheduler `group_cfg` names (a partial), called with `arguments` and
    `options` (which replace the config's own); one line naming the group when torch refuses its
    options (+optimizer.foo=1, a dampening with Nesterov)."""
    try:
        # _convert_="all": plain lists in the optimizer's state, so checkpoints stay plain data.
        return instantiate(group_cfg, _convert_="all")(*arguments, **options)
    except (InstantiationException, TypeError, ValueError) as error:
        target = str(group_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
        raise CnnbenchError(f"{group}: {target} cannot be built from these options: {why_not_built(error)}") \
            from None


def build_run(cfg: DictConfig, resuming: bool = False) -> Run:
    """Device, data, model, optimizer and scheduler, as the config says. `resuming`: a checkpoint
    will give the model its weights, so pretrained ones (model.weights) are not read."""
    check_weights(cfg.model)  # before any data loads
    if cfg.get("keep_freed_memory", True):  # before the data and the model allocate anything
        keep_freed_memory()
    device = distributed.start(select_device(cfg.device))
    check_precision(device, cfg.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deterministic_algorithms(cfg.get("deterministic", False), device)
    seed_everything(cfg.seed)  # every process alike: the same initial weights
    if distributed.launched_by_torchrun() and cfg.data.get("loader") == "torch" \
            and cfg.data.get("bad_images") == "skip":
        # a batch of unreadable images only would leave this process a step short of the others
        raise CnnbenchError("data.bad_images=skip with data.loader=torch cannot train under torchrun "
                            "(a batch of unreadable files would leave one process a step short): use "
                            "data.loader=memory, which leaves them out before the data is shared out")
    data = build_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, device=device,
                      num_workers=cfg.num_workers)
    model = build_model(cfg.model, load_weights=not resuming, num_classes=data.num_classes,
                        in_channels=data.in_channels, image_size=list(data.image_size)).to(device)
    if cfg.model.get("weights"):
        warn_other_normalisation(cfg.model.weights, data.mean, data.std)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if distributed.launched_by_torchrun():
        if cfg.sync_bn:
            if device.type != "cuda":
                raise CnnbenchError("sync_bn=true needs CUDA GPUs (torch's SyncBatchNorm); "
                                    "set sync_bn=false")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [device] if device.type == "cuda" else None
        # a frozen pretrained part has no gradients: DDP must look for the parameters a step left unused
        freezing = bool(cfg.model.get("weights")) and cfg.finetune.freeze_epochs > 0
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=freezing)
        seed_everything(cfg.seed, distributed.rank())  # now each process its own dropout and draws
    if cfg.overfit:
        # Debugging: learn one fixed batch (the first validation batch, so no augmentation) and
        # validate on it; a model and loop that work drive its loss to about zero.
        data.train = data.val = OneBatch(next(iter(data.val)))
    # the sizes tried only to name the smallest that works: shapes, no weights to read
    check_model_input(unwrap(model), cfg, data, device, lambda size: build_model(
        cfg.model, load_weights=False, num_classes=data.num_classes, in_channels=data.in_channels,
        image_size=size))
    # the scheduler configs count in these steps
    cfg = run_config(cfg, steps_per_epoch=min(len(data.train), cfg.limit_batches or len(data.train)))
    optimizer, scheduler = build_optimizer(cfg, model)
    if cfg.compile:
        model = torch.compile(model)
    # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ema_cfg = cfg.get("ema") or {}  # .get: configs saved before the key existed
    ema = WeightAverage(model, ema_cfg["decay"], ema_cfg.get("warmup", False)) if ema_cfg.get("decay") \
        else None
    return Run(cfg, data, model, optimizer, scheduler, scaler, criterion, device, ema)


def warn_other_normalisation(weights: str, mean: list[float], std: list[float]) -> None:
    """Warn when a run with pretrained weights normalises its images otherwise than they were trained."""
    expected_mean, expected_std = imagenet_normalisation(len(mean))
    if all(abs(a - b) < 1e-3 for a, b in zip([*mean, *std], [*expected_mean, *expected_std], strict=True)):
        return
    log.warning("model.weights=%s: ImageNet weights (torchvision's all are) expect images normalised with ImageNet's "
                "mean %s and std %s; this run normalises with mean %s and std %s, so the pretrained layers see other "
                "inputs than they learnt on: set data.mean=%s data.std=%s", weights, expected_mean, expected_std,
                mean, std, _typed(expected_mean), _typed(expected_std))


def _typed(values: list[float]) -> str:
    return f"[{','.join(map(str, values))}]"  # as an override is typed: no spaces


def run_config(cfg: DictConfig, steps_per_epoch: int) -> DictConfig:
    """The config as a run trains it: `cfg` with the steps per epoch its data gives (which the
    schedules' ${steps:EPOCHS} count in) and the data root made absolute (a checkpoint's config then
    works from any folder); `cfg` itself stays as it was composed."""
    resolved = copy.deepcopy(cfg)
    resolved.steps_per_epoch = steps_per_epoch
    if resolved.data.get("root"):
        resolved.data.root = str(Path(resolved.data.root).expanduser().absolute())
    return resolved
