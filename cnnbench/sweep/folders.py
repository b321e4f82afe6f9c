"""Run folders read back, as a sweep and the leaderboard see them: each one's status (finished,
running where, stale, failed, not started), metrics, config and overrides."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.engine.run_folder import HYDRA_FILES, METRICS_FILE, RUN_FILES
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


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is missing or unreadable."""
    try:
        metrics = json.loads(read_plain(run_dir / METRICS_FILE))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


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
    except (OSError, ValueError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
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
