"""Run folders as the leaderboard reads them: each one's status (finished, running where, stale,
failed, not started), metrics, config and overrides, and what makes runs one configuration."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.claim import CLAIM_FILE, Holder, read_holder
from cnnbench.config import override_key
from cnnbench.sweep import ERROR_FILE

# Keys that say where or how a run ran, not what it trained: runs that differ only in these
# (and the seed) are one configuration. data.root is kept for image folders, where it IS the data.
RUNTIME_KEYS = {"seed", "resume", "steps_per_epoch", "num_workers", "log_every", "device", "threads",
                "keep_freed_memory", "jobs_per_gpu", "data.accuracy_targets", "data.cache", "data.cache_dir",
                "data.memory_budget_gb", "data.root", "data.download", "data.search_dirs", "launcher",
                "hparams_search"}


@dataclass
class RunInfo:
    """One run folder as the leaderboard sees it."""

    folder: Path
    status: str  # one of STATUSES
    metrics: dict[str, Any]
    config: dict[str, Any] | None  # config.json (as trained), else .hydra/config.yaml (as composed)
    overrides: list[str]
    choices: dict[str, str] = field(default_factory=dict)  # Hydra's group choices (model, data...)
    error: str = ""
    mtime: float = 0.0  # when metrics.json was last written
    holder: Holder | None = None  # who holds its claim (running), or held it and is gone (stale)


# finished: metrics.json says so. running: a live process holds its claim (claim.py), here or on
# another host. failed: error.txt, and no process is at it again. stale: not finished and no
# process at it: a claim left by a process that died, or a run stopped by Ctrl-C or SIGTERM (a
# rerun resumes it from last.pt). not started: none of these (Hydra made its folder, no more).
STATUSES = ("finished", "running", "stale", "failed", "not started")


def _load(path: Path, loader) -> Any:
    try:
        return loader(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None


def read_run(folder: Path) -> RunInfo | str:
    """The run in `folder`, or a line saying why it cannot be read."""
    overrides = _load(folder / ".hydra" / "overrides.yaml", yaml.safe_load)
    hydra = _load(folder / ".hydra" / "hydra.yaml", yaml.safe_load)
    choices = (((hydra or {}).get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    config = _load(folder / "config.json", json.loads)
    if not isinstance(config, dict):
        config = _load(folder / ".hydra" / "config.yaml", yaml.safe_load)
    error_file = folder / ERROR_FILE
    error = (_load(error_file, str) or "").strip().splitlines()[:1]
    metrics_file = folder / "metrics.json"
    metrics = _load(metrics_file, json.loads)
    readable = isinstance(metrics, dict) and "status" in metrics
    holder = read_holder(folder)
    run = RunInfo(folder, "", metrics if readable else {}, config if isinstance(config, dict) else None,
                  overrides if isinstance(overrides, list) else [], choices, error[0] if error else "",
                  holder=holder)
    if readable:
        run.mtime = metrics_file.stat().st_mtime
    if readable and metrics["status"] == "finished":
        run.status = "finished"
    elif holder and holder.is_live():
        run.status = "running"
    elif error_file.is_file():
        run.status = "failed"
    elif metrics_file.is_file() and not readable:
        return f"{folder}: metrics.json is damaged or not a cnnbench metrics file; left out of the table"
    elif readable or holder or (folder / "last.pt").is_file():
        run.status = "stale"
    else:
        run.status = "not started"
    return run


def collect_runs(folder: Path) -> tuple[list[RunInfo], list[str]]:
    """Every run folder under `folder` (it holds metrics.json, error.txt, a claim or .hydra/); a line
    per unreadable one."""
    runs, problems = [], []
    for path, folders, files in os.walk(folder):
        # not into .hydra/, nor a sweep's .jobs/ journal or .submitit/ logs
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        marks = ("metrics.json", ERROR_FILE, CLAIM_FILE)
        if any(name in files for name in marks) or os.path.isdir(os.path.join(path, ".hydra")):
            run = read_run(Path(path))
            (runs if isinstance(run, RunInfo) else problems).append(run)
    return runs, problems


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _ignored(data_name: Any) -> set[str]:
    return RUNTIME_KEYS - {"data.root"} if data_name == "imagefolder" else RUNTIME_KEYS


def group_key(run: RunInfo) -> str:
    """What makes runs one configuration: their config without the seed and the runtime keys.

    The config, not the command line: `model=lenet` typed or left to the default, a run made
    last week or today, it is the same configuration when the config that trained is the same.
    A run that failed before writing its config falls back to its overrides.
    """
    if run.config is not None:
        flat = flatten(run.config)
        ignored = _ignored(flat.get("data.name"))
        return json.dumps({k: v for k, v in flat.items() if k not in ignored}, sort_keys=True, default=str)
    data = next((o.split("=", 1)[1] for o in run.overrides if override_key(o) == "data"), None)
    return json.dumps(sorted(o for o in run.overrides if override_key(o) not in _ignored(data)))


def describe(run: RunInfo) -> tuple[str, str, str]:
    """(model, data, the other overrides) as the leaderboard shows a run's configuration."""
    flat = flatten(run.config or {})
    model = run.choices.get("model") or run.metrics.get("model") or str(flat.get("model._target_", "?"))
    data = run.choices.get("data") or run.metrics.get("data") or str(flat.get("data.name", "?"))
    ignored = _ignored(data) | {"model", "data"}
    config = " ".join(sorted(o for o in run.overrides if override_key(o) not in ignored))
    return model.rsplit(".", 1)[-1], data, config
