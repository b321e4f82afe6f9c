"""Names in a config: the key a command-line override sets, the model a config names, and the one
list of keys that say where or how a run runs rather than what it trains.

RUNTIME_KEYS is used alike by sweep folder names (conf/config.yaml takes it through the
`${runtime_keys:...}` resolver for `override_dirname.exclude_keys`), by the leaderboard's grouping
of runs into configurations, and by what a resume may change (with SCHEDULE_KEYS).
"""

from collections.abc import Mapping
from typing import Any

# Where the data is and how it is read, where and how fast a run computes, what it reports,
# how it logs: runs that differ only in these (and their seed) trained the same thing. (An image
# folder's data.root says where its images are; what they are is the run's data fingerprint.)
RUNTIME_KEYS = ("resume", "steps_per_epoch", "num_workers", "log_every", "device", "threads",
                "keep_freed_memory", "jobs_per_gpu", "launcher", "hparams_search", "data.root",
                "data.download", "data.search_dirs", "data.cache", "data.cache_dir",
                "data.memory_budget_gb", "data.accuracy_targets",
                # what TensorBoard is shown of the network (README, "See what the network learned")
                "insight.pictures", "insight.pictures_every", "insight.gradient_stats_every",
                # the trackers a run reports to (conf/logger/), each key by name: a sweep folder's name
                # leaves out only the keys named exactly (tests/test_loggers.py checks they all are)
                "logger", "logger.mlflow.tracking_uri", "logger.mlflow.experiment_name",
                "logger.mlflow.run_name", "logger.mlflow.log_checkpoint", "logger.wandb.project",
                "logger.wandb.entity", "logger.wandb.mode", "logger.wandb.group")


# What a resume may change besides the runtime keys: how long the run goes on and the schedule it
# follows (the optimizer's settings, not its kind; the pretrained part's share of the learning rate,
# finetune.backbone_lr_scale, as optimizer.lr), how it computes, validates, checkpoints and reacts
# to a NaN. A key is matched with its sub-keys (`optimizer` covers `optimizer.lr`). Every other key
# decides what is trained (the model and its pretrained weights, the data and its augmentation, the
# seed, the batch size, the loss, which epochs keep the pretrained part frozen:
# finetune.freeze_epochs): changing one on resume is refused, since the result would be neither run.
SCHEDULE_KEYS = ("epochs", "optimizer", "scheduler", "warmup_epochs", "early_stopping", "ema", "checkpoint",
                 "on_nan", "grad_clip", "precision", "channels_last", "compile", "deterministic", "sync_bn",
                 "tta", "data.loader", "finetune.backbone_lr_scale")
# ... but not these: another optimizer class cannot take the saved one's state
FIXED_ON_RESUME = ("optimizer._target_", "optimizer._partial_")


# Keys added since cnnbench 0.1 that decide what a run trains, with the value that gives a run of
# that release, resumed or evaluated now, what it had (it held no validation split out: it
# validated on the test split, data/splits.py; its optimizer stepped after every batch).
SINCE_0_1 = {"data.val_split": None, "data.test_split": None, "accumulate_grad_batches": 1}


def may_change_on_resume(key: str) -> bool:
    """Whether a resume may give the flat config key `key` another value than the run had."""
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)

    return not under(FIXED_ON_RESUME) and under(RUNTIME_KEYS + SCHEDULE_KEYS)


def override_key(override: str) -> str:
    """The key a command-line override sets: `+optimizer.lr=0.1` -> `optimizer.lr`."""
    return override.split("=", 1)[0].lstrip("+~")


def model_name(model_cfg: Mapping[str, Any] | Any) -> str:
    """A model config's registered name: its builder's function name (`cnnbench.models.vgg.vgg11`
    -> `vgg11`); `?` when it names none."""
    target = model_cfg.get("_target_") if isinstance(model_cfg, Mapping) or hasattr(model_cfg, "get") else None
    return str(target).rsplit(".", 1)[-1] if target else "?"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
