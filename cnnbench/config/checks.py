"""The checks every config passes before a run loads any data: required keys, ranges, booleans,
choices, a list or one value as each key takes, the few rules between keys, and what the data's
shape rules out (a mean per channel, memory); each refusal names the key and what is allowed."""

import math
import numbers
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.shapes import CLASS_OPTIONS, SHAPED_DATASETS, input_shape, training_images
from cnnbench.errors import CnnbenchError
from cnnbench.runtime.host import memory_bytes

# The largest seed every generator a run seeds takes (NumPy's; torch's and Python's take more).
SEED_MAX = 2**32 - 1

# (key, lowest, highest, lowest allowed?, highest allowed?, must be an integer?)
_RANGES = [
    ("epochs", 1, math.inf, True, False, True),
    ("batch_size", 1, math.inf, True, False, True),
    ("accumulate_grad_batches", 1, math.inf, True, False, True),
    ("seed", 0, SEED_MAX, True, True, True),
    ("num_workers", 0, math.inf, True, False, True),
    ("threads", 1, math.inf, True, False, True),
    ("jobs_per_gpu", 1, math.inf, True, False, True),
    ("log_every", 1, math.inf, True, False, True),
    ("insight.pictures_every", 0, math.inf, True, False, True),
    ("insight.gradient_stats_every", 0, math.inf, True, False, True),
    ("limit_batches", 1, math.inf, True, False, True),
    ("early_stopping.patience", 0, math.inf, True, False, True),
    ("checkpoint.every_n_steps", 0, math.inf, True, False, True),
    ("label_smoothing", 0, 1, True, False, False),
    ("grad_clip", 0, math.inf, True, False, False),
    ("warmup_epochs", 0, math.inf, True, False, False),
    ("optimizer.lr", 0, math.inf, False, False, False),
    ("optimizer.momentum", 0, 1, True, False, False),
    ("optimizer.weight_decay", 0, math.inf, True, False, False),
    ("data.val_fraction", 0, 1, False, False, False),
    ("data.train_limit", 1, math.inf, True, False, True),
    ("data.num_train", 1, math.inf, True, False, True),
    ("data.num_val", 0, math.inf, True, False, True),
    ("data.num_test", 0, math.inf, True, False, True),
    ("data.val_split", 0, math.inf, True, False, False),  # a fraction below 1, or a count: see below
    ("data.test_split", 0, math.inf, True, False, False),
    ("data.split_seed", 0, math.inf, True, False, True),
    ("data.num_classes", 2, math.inf, True, False, True),
    ("data.permute_seed", 0, SEED_MAX, True, True, True),
    ("data.augment.color_jitter", 0, math.inf, True, False, False),
    ("data.augment.crop_padding", 0, math.inf, True, False, True),
    ("data.augment.mixup_alpha", 0, math.inf, True, False, False),
    ("data.augment.cutmix_alpha", 0, math.inf, True, False, False),
    ("data.augment.mixup_prob", 0, 1, True, True, False),
    ("data.augment.mixup_switch_prob", 0, 1, True, True, False),
    ("data.augment.resized_crop_scale", 0, 1, False, True, False),
    ("data.augment.resized_crop_ratio", 0, math.inf, False, False, False),
    ("data.augment.policy_ops", 1, math.inf, True, False, True),
    ("data.augment.policy_magnitude", 0, 30, True, True, True),  # RandAugment's 31 levels (data/policies.py)
    ("data.augment.random_erasing", 0, 1, True, True, False),
    ("data.augment.erasing_scale", 0, 1, False, True, False),
    ("data.augment.erasing_ratio", 0, math.inf, False, False, False),
    ("data.memory_budget_gb", 0, math.inf, True, False, False),
    ("data.image_size", 1, math.inf, True, False, True),  # an int, or [height, width]: each checked
    ("data.resize", 1, math.inf, True, False, True),
    ("data.in_channels", 1, math.inf, True, False, True),
    ("data.std", 0, math.inf, False, False, False),
    ("data.mean", -math.inf, math.inf, False, False, False),
    # optimizer options of the presets (a user's own optimizer may have others: not checked)
    ("optimizer.betas", 0, 1, True, False, False),
    ("optimizer.eps", 0, math.inf, False, False, False),
    ("optimizer.dampening", 0, 1, True, True, False),
    # scheduler options; durations written as ${steps:EPOCHS} are checked once resolved, by torch
    ("scheduler.eta_min", 0, math.inf, True, False, False),
    ("scheduler.T_max", 1, math.inf, True, False, True),
    ("scheduler.gamma", 0, 1, False, True, False),
    ("scheduler.step_size", 1, math.inf, True, False, True),
    ("scheduler.milestones", 1, math.inf, True, False, True),
    ("scheduler.factor", 0, 1, False, True, False),
    ("scheduler.total_iters", 0, math.inf, True, False, True),
    ("scheduler.max_lr", 0, math.inf, False, False, False),
    ("scheduler.total_steps", 1, math.inf, True, False, True),
    ("scheduler.pct_start", 0, 1, False, False, False),
    ("scheduler.div_factor", 0, math.inf, False, False, False),
    ("scheduler.final_div_factor", 0, math.inf, False, False, False),
    # model options (each model takes some of them)
    ("model.dropout", 0, 1, True, False, False),
    ("model.width_ratio", 0, math.inf, False, False, False),
    ("model.hidden", 1, math.inf, True, False, True),
    ("model.channels", 1, math.inf, True, False, True),
    ("model.growth_rate", 1, math.inf, True, False, True),
    ("model.block_config", 1, math.inf, True, False, True),
    ("aux_loss_weight", 0, math.inf, True, False, False),
    ("ema.decay", 0, 1, True, False, False),
    ("finetune.freeze_epochs", 0, math.inf, True, False, True),
    ("finetune.backbone_lr_scale", 0, math.inf, False, False, False),
    ("data.accuracy_targets", 0, 1, False, True, False),
]

# Keys that hold a list: its length where that is fixed (None: any), and what to give; each item is
# checked as _RANGES says. Every other key of _RANGES holds one value, except these:
_LISTS = {"optimizer.betas": (2, "two numbers, [beta1, beta2], e.g. [0.9, 0.999]"),
          "scheduler.milestones": (None, "a list of steps, e.g. ['${steps:30}', '${steps:60}']"),
          "data.mean": (None, "one number per channel, e.g. [0.5, 0.5, 0.5]"),
          "data.std": (None, "one number per channel, e.g. [0.25, 0.25, 0.25]"),
          "data.accuracy_targets": (None, "a list of accuracies, e.g. [0.5, 0.9]"),
          "data.augment.resized_crop_scale": (2, "[low, high], e.g. [0.08, 1.0]"),
          "data.augment.resized_crop_ratio": (2, "[low, high], e.g. [0.75, 1.3333]"),
          "data.augment.erasing_scale": (2, "[low, high], e.g. [0.02, 0.33]"),
          "data.augment.erasing_ratio": (2, "[low, high], e.g. [0.3, 3.3]")}
# ... sizes, one integer (a square) or [height, width] ...
_SIZES = ("data.image_size", "data.resize")
# ... and model options that are a list for one model and a number for another (mlp's hidden
# layers [256, 256], VGG's FC width 4096): their builder says when it cannot use one.
_LIST_OR_NUMBER = ("model.hidden", "model.block_config")

# Keys that name something (a device, a folder): a list or a number there is a mistake.
_QUOTED = "a name that reads as a number goes in quotes"
_TEXTS = {"device": "give one device: auto, cpu, cuda, cuda:N or mps",
          "data.root": f"""give one folder ({_QUOTED}: 'data.root="2024"')""",
          "data.cache_dir": f"""give one folder ({_QUOTED}: 'data.cache_dir="2024"')"""}
# ... and keys that list such names
_TEXT_LISTS = {"data.search_dirs": "give a list of folders, e.g. data.search_dirs=[/srv/mnist]"}

# keys that take true or false (a string 'yes' would be truthy and silently mean true)
_BOOLEANS = ("channels_last", "compile", "sync_bn", "tta", "overfit", "keep_freed_memory", "deterministic",
             "optimizer.nesterov", "optimizer.amsgrad", "data.download", "data.grayscale", "data.permute_pixels",
             "data.augment.hflip", "data.cache", "data.svhn_extra", "model.batch_norm", "model.aux_logits",
             "ema.warmup", "logger.mlflow.log_checkpoint", "insight.pictures")


# key -> the values it may take
_CHOICES = {
    "precision": ("fp32", "bf16", "fp16"),
    "data.loader": ("memory", "torch"),
    "data.bad_images": ("error", "skip"),
    "on_nan": ("stop", "skip_batch"),
    "ema.best_by": ("live", "ema"),
    "scheduler.anneal_strategy": ("cos", "linear"),
    "model.stem": ("auto", "imagenet", "cifar"),
    "model.norm": ("torch", "scratch"),
    "model.classifier": ("fc", "linear"),
    # data/policies.py's POLICIES (config does not import data: the layers are independent)
    "data.augment.policy": ("randaugment", "trivialaugment", "autoaugment_cifar10", "autoaugment_svhn",
                            "autoaugment_imagenet"),
    "data.augment.erasing_value": ("mean", "noise"),
    "logger.wandb.mode": ("offline", "online", "disabled"),
    # the options that choose a dataset's classes: CIFAR-100's data.labels, EMNIST's data.split (only
    # their configs have these keys)
    **{f"data.{key}": tuple(counts) for key, counts in CLASS_OPTIONS.values()},
}


def _describe(low: float, high: float, low_ok: bool, high_ok: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    if low == -math.inf:
        return kind
    if high == math.inf:
        return f"{kind} {'>=' if low_ok else '>'} {low}"
    return f"{kind} in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"


def _missing_keys(cfg: DictConfig, prefix: str = ""):
    # OmegaConf.missing_keys resolves interpolations, and ours need steps_per_epoch (set later).
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            yield f"{prefix}{key}"
        elif not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg[key], DictConfig):
            yield from _missing_keys(cfg[key], f"{prefix}{key}.")


_ABSENT = object()  # OmegaConf.select's answer for a missing key (None: a key set to null)

# Keys that hold other keys (`early_stopping=3` would replace the group with a number), and one
# key inside each, for the message.
_SECTIONS = {"early_stopping": "patience", "checkpoint": "every_n_steps", "data.augment": "hflip",
             "ema": "decay", "finetune": "freeze_epochs", "insight": "pictures"}


def _literal(cfg: DictConfig, key: str) -> Any:
    """The value at `key` as written (lists as plain lists); None when absent, null, or an
    interpolation (${steps:30} is resolved only once the run knows its steps per epoch)."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig) or name not in parent or OmegaConf.is_interpolation(parent, name):
        return None
    value = parent[name]
    if isinstance(value, DictConfig):
        return value
    if OmegaConf.is_list(value):  # [${steps:5}, ${steps:8}]: those items too wait for the run
        return [None if OmegaConf.is_interpolation(value, index) else item
                for index, item in enumerate(OmegaConf.to_container(value))]
    return value


def _check_number(key: str, value: Any, low: float, high: float, low_ok: bool, high_ok: bool,
                  integer: bool) -> None:
    allowed = _describe(low, high, low_ok, high_ok, integer)
    # an integer must be one (2.0 epochs would reach range() and numpy's seeding as a float)
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CnnbenchError(f"{key}={value!r} is not {allowed}")
    above_low = value >= low if low_ok else value > low
    below_high = value <= high if high_ok else value < high
    if not (above_low and below_high):
        raise CnnbenchError(f"{key}={value} is out of range: must be {allowed}")


def _check_list_or_one(key: str, value: Any, allowed: str) -> None:
    """A list where the key takes one value, one value where it takes a list, or a list of the wrong
    length: each is refused, naming what the key takes."""
    if key in _LIST_OR_NUMBER:
        return
    if key in _SIZES:
        if isinstance(value, list) and len(value) != 2:
            raise CnnbenchError(f"{key}={value} is not a size: give one integer (a square) or "
                                "[height, width]")
    elif key in _LISTS:
        length, what = _LISTS[key]
        if not isinstance(value, list):
            raise CnnbenchError(f"{key}={value!r} is not a list: give {what}")
        if length and len(value) != length:
            raise CnnbenchError(f"{key}={value} has {len(value)} value(s): give {what}")
    elif isinstance(value, list):
        raise CnnbenchError(f"{key}={value} is a list: give one value, {allowed}")


def check_config(cfg: DictConfig) -> None:
    """Raise CnnbenchError naming the first key that is missing or out of its allowed range."""
    missing = sorted(set(_missing_keys(cfg)) - {"steps_per_epoch"})
    if missing:
        raise CnnbenchError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=VALUE")
    for key, inner in _SECTIONS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)  # absent: a config saved before the section existed
        if value is not _ABSENT and not isinstance(value, DictConfig):
            raise CnnbenchError(f"{key}={value!r} would replace a group of keys; set a key inside it, "
                                f"e.g. {key}.{inner}={value}")
    for key, low, high, low_ok, high_ok, integer in _RANGES:
        value = _literal(cfg, key)
        if value is None:
            continue
        _check_list_or_one(key, value, _describe(low, high, low_ok, high_ok, integer))
        # one number, or a list of them (betas, milestones, [height, width], a mean per channel)
        items = [(key, value)] if not isinstance(value, list) else [
            (f"{key}[{index}]", item) for index, item in enumerate(value)]
        for name, item in items:
            if item is not None:
                _check_number(name, item, low, high, low_ok, high_ok, integer)
    for key, what in _TEXTS.items():
        value = _literal(cfg, key)
        if value is not None and not isinstance(value, str):
            raise CnnbenchError(f"{key}={value!r} is not a name: {what}")
    for key, what in _TEXT_LISTS.items():
        value = _literal(cfg, key)
        if value is not None and not (isinstance(value, list) and all(isinstance(i, str) for i in value)):
            raise CnnbenchError(f"{key}={value!r} is not a list of names: {what}")
    for key in _BOOLEANS:
        value = _literal(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise CnnbenchError(f"{key}={value!r} is not true or false")
    for key, choices in _CHOICES.items():
        value = _literal(cfg, key)
        if value is not None and value not in choices:
            raise CnnbenchError(f"{key}={value!r} is not one of: {', '.join(choices)}")
    for key in ("data.augment.resized_crop_scale", "data.augment.resized_crop_ratio", "data.augment.erasing_scale",
                "data.augment.erasing_ratio"):
        pair = _literal(cfg, key)
        if pair is not None and (not isinstance(pair, list) or len(pair) != 2 or pair[0] > pair[1]):
            raise CnnbenchError(f"{key}={pair} must be [low, high] with low <= high")
    milestones = _literal(cfg, "scheduler.milestones")
    if isinstance(milestones, list) and None not in milestones and milestones != sorted(set(milestones)):
        raise CnnbenchError(f"scheduler.milestones={milestones} must rise: each milestone after the one before")
    if _literal(cfg, "optimizer.nesterov") and not _literal(cfg, "optimizer.momentum"):
        raise CnnbenchError("optimizer.nesterov=true needs optimizer.momentum > 0; set a momentum, "
                            "or optimizer.nesterov=false")
    for key in ("data.val_split", "data.test_split"):
        amount = _literal(cfg, key)
        if isinstance(amount, numbers.Real) and amount >= 1 and not float(amount).is_integer():
            raise CnnbenchError(f"{key}={amount} is neither a fraction below 1 nor a whole number of images")
    no_validation = _literal(cfg, "data.val_split") == 0 or (
        _literal(cfg, "data.name") == "fake" and _literal(cfg, "data.num_val") == 0)
    if no_validation and (_literal(cfg, "early_stopping.patience") or 0) > 0:
        raise CnnbenchError("early_stopping.patience needs a validation split to watch, and this run has none "
                            "(data.val_split=0 chooses nothing): set data.val_split, or early_stopping.patience=0")
    _check_finetuning(cfg)
    if _literal(cfg, "optimizer.nesterov") and _literal(cfg, "optimizer.dampening"):
        raise CnnbenchError(f"optimizer.dampening={_literal(cfg, 'optimizer.dampening')}: Nesterov momentum "
                            "(optimizer.nesterov=true) takes no dampening; set optimizer.dampening=0, or "
                            "optimizer.nesterov=false")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
        raise CnnbenchError(f"warmup_epochs={cfg.warmup_epochs} must be less than epochs={cfg.epochs}")
    threads, cores = _literal(cfg, "threads"), os.cpu_count() or 1
    if threads is not None and threads > cores:  # torch starts them all: 100000 threads crashed it
        raise CnnbenchError(f"threads={threads} is more than this machine's {cores} CPU cores: give at most "
                            f"{cores}, or threads=null for all of them")
    if cfg.get("data") is not None and cfg.data.get("name") in SHAPED_DATASETS:
        _check_data_shape(cfg)


def _check_finetuning(cfg: DictConfig) -> None:
    # model.weights: null, imagenet, or a file (whether it exists is checked where it is read: a
    # checkpoint's config names a file that other machines need not have)
    weights = _literal(cfg, "model.weights")
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise CnnbenchError(f"model.weights={weights!r} is not null, imagenet or the path of a torchvision "
                            "state-dict file")
    if weights is not None:
        return
    for key, off in (("finetune.freeze_epochs", 0), ("finetune.backbone_lr_scale", 1)):
        value = _literal(cfg, key)
        if value is not None and value != off:
            raise CnnbenchError(f"{key}={value} fine-tunes pretrained weights, and this run has none: set "
                                f"model.weights=imagenet (or a state-dict file), or {key}={off}")


def _check_data_shape(cfg: DictConfig) -> None:
    """What the data config's shape rules out before any file is read: a mean or std for another
    number of channels, a non-square size for fake images, images or batches no memory here holds."""
    data = cfg.data
    if data.name == "fake" and isinstance(_literal(cfg, "data.image_size"), list):
        raise CnnbenchError(f"data.image_size={_literal(cfg, 'data.image_size')}: fake images are square: "
                            "give one integer (data.resize=[height, width] trains them at another shape)")
    channels, height, width, _ = input_shape(data)
    wrong = {f"data.{key}": value for key in ("mean", "std")
             if isinstance(value := _literal(cfg, f"data.{key}"), list) and len(value) != channels}
    if wrong:  # both are usually wrong together (data.grayscale=true with the colour defaults): say both
        given = " and ".join(f"{key}={value} ({len(value)} value{'' if len(value) == 1 else 's'})"
                             for key, value in wrong.items())
        examples = " ".join(f"{key}=[{', '.join([str(value[0] if value else 0.5)] * channels)}]"
                            for key, value in wrong.items())
        raise CnnbenchError(f"{given}: {_images(data)} have {channels} channel(s): give one value per "
                            f"channel, e.g. {examples}")
    total = memory_bytes()
    if total is None:
        return
    pixels = channels * height * width
    images = min(cfg.batch_size, training_images(data) or 1)  # an image folder: at least one image
    if images * pixels * 4 > total:  # a training batch as float32, however the images are stored
        key = "data.resize" if data.get("resize") else \
            "data.image_size" if "image_size" in data else "batch_size"
        what = "one image" if images == 1 else f"a batch of {images:,} images"
        raise CnnbenchError(f"{key}={_literal(cfg, key)}: {what} of {channels}x{height}x{width} needs "
                            f"{_in_words(images * pixels * 4)} of memory as float32, more than this "
                            f"machine's {_in_words(total)}: use a smaller {key}"
                            + (" or batch_size" if images > 1 else ""))
    if data.name == "fake":
        # made at once: float32 noise and class patterns, then uint8 images (datasets.make_fake)
        parts = {"data.num_train": 9 * data.num_train * pixels, "data.num_val": 9 * data.num_val * pixels,
                 "data.num_classes": 4 * data.num_classes * pixels}
        if sum(parts.values()) > total:
            key = max(parts, key=parts.get)
            needed = _in_words(sum(parts.values()))
            raise CnnbenchError(f"{key}={_literal(cfg, key)}: {data.num_train:,} training and "
                                f"{data.num_val:,} validation fake images of {channels}x{height}x{width} in "
                                f"{data.num_classes:,} classes need {needed} of memory to make, more than "
                                f"this machine's {_in_words(total)}: use fewer images or classes, or a "
                                "smaller data.image_size")


def _images(data: DictConfig) -> str:
    """The images a data config gives, in words, as their channels are concerned."""
    if data.name == "imagefolder":
        return "greyscale images (data.grayscale=true)" if data.grayscale else \
            "colour images (data.grayscale=false)"
    if data.name == "fake":
        return f"fake images with data.in_channels={data.in_channels}"
    return f"{data.name} images"


def _in_words(count: float) -> str:
    """A number of bytes for people: 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            break
        count /= 1024
    return f"{count:,.1f} {unit}"
