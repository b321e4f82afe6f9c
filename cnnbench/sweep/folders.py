"""Run folders read back, as a sweep and the leaderboard see them: each one's status (finished,
running where, stale, failed, not started), metrics, config and overrides.

A run folder may be someone else's (a sweep folder copied from a colleague, a download) or damaged
(a disk that filled, an editor): what is read from it is checked before anything uses it, and a
file that fails is named in one warning line and left out, never a traceback that stops a report
or a sweep."""

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.engine.run_folder import CONFIG_FILE, HYDRA_FILES, METRICS_FILE, RUN_FILES
from cnnbench.files import read_plain, refuse_links
from cnnbench.sweep.claims import CLAIM_FILE, Holder, read_holder

# Written into a run folder when its sweep job fails: the one-line error, then the traceback of an
# unexpected exception. The leaderboard counts such a run as failed; a rerun deletes the file.
ERROR_FILE = "error.txt"
# Every file a run, its sweep job and Hydra before them write in a run folder: none may be a link
# (Hydra writes its own with a plain open(), through a link to wherever it points).
RUN_FOLDER_FILES = (*HYDRA_FILES, *RUN_FILES, CLAIM_FILE, ERROR_FILE)


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it (shorter to read)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _integer(value) and value >= 0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _times(value: Any) -> bool:
    # {"0.90": {"seconds": 41.8, "epoch": 6}, "0.94": null}: targets sorted as numbers, reached ones averaged
    def target(key: str) -> bool:
        try:
            return math.isfinite(float(key))
        except ValueError:
            return False
    return isinstance(value, dict) and all(
        target(key) and (reached is None or (isinstance(reached, dict) and _finite(reached.get("seconds"))
                                             and _finite(reached.get("epoch"))))
        for key, reached in value.items())


def _history(value: Any) -> bool:
    # one record per epoch, in order; the pictures draw val_acc and val_loss (a loss may be inf or NaN)
    def plotted(record: dict[str, Any]) -> bool:
        return all(record.get(key) is None or (isinstance(record[key], int | float)
                                               and not isinstance(record[key], bool))
                   for key in ("val_acc", "val_loss"))
    return isinstance(value, list) and all(
        isinstance(record, dict) and record.get("epoch") == epoch and _integer(record["epoch"])
        and plotted(record)
        for epoch, record in enumerate(value, 1))


# What the readers of metrics.json (a sweep's plan, the leaderboard's table, statistics and pictures)
# take each field for. A field there of another type, or NaN where a number is counted, makes the
# file damaged; fields not listed are not read. Only "status" must be there.
METRIC_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "status": (lambda value: isinstance(value, str), "a string"),
    "epochs_done": (_count, "an integer >= 0"),
    "epochs": (_count, "an integer >= 0"),
    "stopped_early": (lambda value: isinstance(value, bool), "true or false"),
    "seed": (_optional(_integer), "an integer"),
    "model": (_optional(lambda value: isinstance(value, str)), "a string"),
    "data": (_optional(lambda value: isinstance(value, str)), "a string"),
    **{name: (_optional(_finite), "a finite number or null")
       for name in ("best_val_acc", "final_val_acc", "best_val_acc_ema", "final_val_acc_ema",
                    "test_acc", "final_test_acc", "images_per_sec", "wall_time_s")},
    "protocol": (_optional(lambda value: isinstance(value, str)), "a string"),
    "data_identity": (_optional(lambda value: isinstance(value, dict)), "an object"),
    "resumes": (lambda value: isinstance(value, list) and all(isinstance(item, dict) for item in value),
                "a list of objects"),
    "best_epoch": (_count, "an integer >= 0"),
    "parameters": (_optional(_count), "an integer >= 0 or null"),
    "provenance": (_optional(lambda value: isinstance(value, dict)), "an object"),
    "time_to_accuracy": (_times, "{target: null or {\"seconds\": number, \"epoch\": number}}"),
    "history": (_history, "a list of one object per epoch, epochs 1, 2, ... in order"),
}


def metrics_problem(metrics: Any) -> str | None:
    """What is wrong with a metrics.json's content for its readers, in words; None when nothing is."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    if "status" not in metrics:
        return "no \"status\": not a cnnbench metrics file"
    for key, (check, what) in METRIC_FIELDS.items():
        if key in metrics and not check(metrics[key]):
            value = json.dumps(metrics[key])
            return f"{key} is {value if len(value) <= 40 else value[:37] + '...'}, not {what}"
    return None


def _damaged(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    # (metrics, None) when readable and sound; (None, why) when damaged; (None, None) when missing
    try:
        text = read_plain(run_dir / METRICS_FILE)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, error.strerror or str(error)
    try:
        metrics = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError too; RecursionError: nested too deep
        return None, "not JSON: truncated?"
    problem = metrics_problem(metrics)
    return (None, problem) if problem else (metrics, None)


_said: set[Path] = set()  # the damaged files a warning has named in this process


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is missing, unreadable or damaged (said once on
    stderr: a sweep then treats the run as unfinished, resuming it from its last.pt)."""
    metrics, problem = _damaged(run_dir)
    path = run_dir / METRICS_FILE
    if problem and path not in _said:
        _said.add(path)
        print(f"cnnbench: warning: {shown(path)} is damaged ({problem}): left out; the run counts as "
              "unfinished", file=sys.stderr, flush=True)
    return metrics


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.json (its config as trained), or None when it is missing or unreadable."""
    try:
        config = json.loads(read_plain(run_dir / CONFIG_FILE))
    except (OSError, ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def refuse_links_in_runs(folder: Path) -> None:
    """Refuse, in one line, a run folder under `folder` (a sweep's, to be written in) holding a link
    where a run writes a file (files.refuse_links)."""
    for path, folders, names in os.walk(folder):
        if METRICS_FILE in names or CLAIM_FILE in names or ".hydra" in folders + names:
            refuse_links(Path(path), RUN_FOLDER_FILES)
        folders[:] = sorted(name for name in folders if not name.startswith("."))  # not into .hydra/


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


# finished: metrics.json says so. running: a live process holds its claim (claims.py), here or on
# another host. failed: error.txt, and no process is at it again. stale: not finished and no
# process at it: a claim left by a process that died, or a run stopped by Ctrl-C or SIGTERM (a
# rerun resumes it from last.pt). not started: none of these (Hydra made its folder, no more).
STATUSES = ("finished", "running", "stale", "failed", "not started")


def _load(path: Path, loader) -> Any:
    try:
        return loader(read_plain(path).decode("utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return None


def read_run(folder: Path) -> RunInfo | str:
    """The run in `folder`, or a line saying why it cannot be read."""
    overrides = _load(folder / ".hydra" / "overrides.yaml", yaml.safe_load)
    if overrides is not None and not (isinstance(overrides, list)
                                      and all(isinstance(override, str) for override in overrides)):
        return f"{folder}: .hydra/overrides.yaml is damaged (not a list of overrides); left out of the table"
    hydra = _load(folder / ".hydra" / "hydra.yaml", yaml.safe_load)
    choices = ((((hydra or {}).get("hydra") or {}).get("runtime") or {}).get("choices") or {}) \
        if isinstance(hydra, dict) else {}
    choices = {key: value for key, value in choices.items() if isinstance(value, str)} \
        if isinstance(choices, dict) else {}
    config = _load(folder / "config.json", json.loads)
    if not isinstance(config, dict):
        config = _load(folder / ".hydra" / "config.yaml", yaml.safe_load)
    error_file = folder / ERROR_FILE
    error = (_load(error_file, str) or "").strip().splitlines()[:1]
    metrics_file = folder / METRICS_FILE
    metrics, problem = _damaged(folder)
    holder = read_holder(folder)
    run = RunInfo(folder, "", metrics or {}, config if isinstance(config, dict) else None,
                  overrides or [], choices, error[0] if error else "", holder=holder)
    if metrics:
        run.mtime = metrics_file.stat().st_mtime
    if metrics and metrics["status"] == "finished":
        run.status = "finished"
    elif holder and holder.is_live():
        run.status = "running"
    elif error_file.is_file():
        run.status = "failed"
    elif problem:
        return f"{metrics_file} is damaged ({problem}); left out of the table"
    elif metrics or holder or (folder / "last.pt").is_file():
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
        marks = (METRICS_FILE, ERROR_FILE, CLAIM_FILE)
        if any(name in files for name in marks) or os.path.isdir(os.path.join(path, ".hydra")):
            run = read_run(Path(path))
            (runs if isinstance(run, RunInfo) else problems).append(run)
    return runs, problems
