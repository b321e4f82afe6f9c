"""Continuing a run from its checkpoint: which checkpoint, what a resume may change (the run's length
and schedule, how it computes: config/keys.py), and the schedule rebuilt when those change.

A resume that changes `epochs`, the optimizer's settings, the scheduler or the warmup rebuilds the
schedule from the config, as a run of the new length would have it, and continues it from the
optimizer step the run has reached: `cnnbench resume=RUN epochs=20` after 10 epochs of cosine
trains epochs 11-20 at the learning rates an uninterrupted 20-epoch run has there (the first 10
keep the rates they had; metrics.json's history says which). Anything that decides what is
trained (the model, the data, the seed, the batch size, the loss) cannot change on resume: the
result would be neither run, so it is refused in one line before anything is written.
"""

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.keys import SINCE_0_1, flatten, may_change_on_resume, model_name
from cnnbench.engine.state import Run
from cnnbench.errors import CnnbenchError

log = logging.getLogger("cnnbench")

# The keys whose change rebuilds the schedule (and with them, every optimizer and scheduler option;
# finetune.backbone_lr_scale sets the pretrained part's rate, the only finetune key a resume may change)
SCHEDULE_SHAPING = ("epochs", "optimizer", "scheduler", "warmup_epochs", "steps_per_epoch", "finetune")
_MISSING = object()


def _value(cfg: DictConfig, key: str) -> Any:
    # the key's value, resolved and plain; _MISSING when the config has no such key
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if not isinstance(node, DictConfig) or name not in node:
        return _MISSING
    value = node[name]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def config_changes(saved: dict[str, Any], cfg: DictConfig, keys=None) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, value now)} for every flat key whose value `cfg` changes (among `keys`,
    a filter on flat keys, when given). A key the saved config lacks (a run of a release that did not
    have it) is not a change."""
    changed = {}
    for key, was in flatten(saved).items():
        if keys is not None and not keys(key):
            continue
        now = _value(cfg, key)
        if now is _MISSING and key in flatten(OmegaConf.to_container(cfg, resolve=False)):
            continue  # a dict node where the saved config had a value: compared by its own keys
        now = None if now is _MISSING else now
        if now != was:
            changed[key] = (was, now)
    return changed


def continued_config(saved: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The config a resume trains with: `cfg`, but for the keys added since the run's release that
    decide what it trains (config/keys.py SINCE_0_1), which keep the value that release had."""
    had = flatten(saved)
    missing = {key: value for key, value in SINCE_0_1.items() if key not in had and _value(cfg, key) is not _MISSING}
    if not missing:
        return cfg
    continued = copy.deepcopy(cfg)
    for key, value in missing.items():
        OmegaConf.update(continued, key, value, merge=False)
    log.info("a run of an earlier release: it goes on as it was (%s)",
             ", ".join(f"{key}={shown_value(value)}" for key, value in missing.items()))
    return continued


def refuse_changes(saved: dict[str, Any], cfg: DictConfig, source: Path, epochs_done: int) -> None:
    """Refuse, in one line, a resume that changes what the run trains, or asks for fewer epochs
    than it has done; checked before any data loads or any file is written."""
    refused = config_changes(saved, cfg, keys=lambda key: not may_change_on_resume(key))
    if "model._target_" in refused:  # another model: say so by name, not by each option
        refused = {"model": tuple(model_name({"_target_": target}) for target in refused["model._target_"])}
    if refused:
        shown = ", ".join(f"{key}={shown_value(now)} (the run has {shown_value(was)})"
                          for key, (was, now) in refused.items())
        raise CnnbenchError(
            f"resume={source}: cannot change what the run trains: {shown}; a resume may change only the "
            "length, the schedule and how it computes (README, Resuming): leave these keys as they were, "
            "or start a new run in another folder (hydra.run.dir=DIR)")
    if cfg.epochs < epochs_done:
        raise CnnbenchError(f"epochs={cfg.epochs}: this run has done {epochs_done} epochs already; give "
                            f"epochs={epochs_done} or more")


def shown_value(value: Any) -> str:
    """A config value as a user types it: true, null, [0.5, 0.5], 0.1."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def continue_schedule(run: Run, checkpoint: dict[str, Any]) -> None:
    """Keep the optimizer's saved state (momentum, Adam's moments) with the config's settings (its
    learning rate, weight decay...), and take the config's schedule to the step the run has reached."""
    settings = [{key: value for key, value in group.items() if key != "params"}
                for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    for group, fresh in zip(run.optimizer.param_groups, settings, strict=True):
        group.update(fresh)  # as built from this config: lr of its step 0, initial_lr, the rest
    steps = int(checkpoint["scheduler"].get("last_epoch", 0))  # optimizer steps taken so far
    with warnings.catch_warnings():
        # the schedule is stepped without optimizer steps on purpose: it only catches up
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            run.scheduler.step()
    log.info("the schedule follows the config from optimizer step %d on: learning rate %g", steps,
             run.optimizer.param_groups[0]["lr"])


def shapes_schedule(changes: dict[str, tuple[Any, Any]]) -> bool:
    """Whether these changes rebuild the schedule."""
    return any(key == prefix or key.startswith(f"{prefix}.") for key in changes for prefix in SCHEDULE_SHAPING)
