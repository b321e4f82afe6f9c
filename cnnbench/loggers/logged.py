"""What every logger is told about the run it logs (LoggedRun), what it must do (Logger), and the
numbers of a record that a tracker takes (`numbers`)."""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# What the loggers write in the run folder: the CSV table (logger=csv), the ids of the tracker runs
# (MLflow's, W&B's) that a resume continues, and W&B's own folder of the run's files
CSV_FILE = "metrics.csv"
IDS_FILE = "trackers.json"
WANDB_FOLDER = "wandb"
LOGGER_FILES = (CSV_FILE, IDS_FILE, WANDB_FOLDER)


@dataclass
class LoggedRun:
    """The run a logger logs, as it stands when the logger starts."""

    folder: Path
    config: dict[str, Any]  # resolved, as config.json holds it
    options: dict[str, Any]  # this logger's keys (cfg.logger.<name>)
    history: list[dict[str, Any]]  # the epochs done before this process started (a resume's)
    tags: dict[str, str]  # what produced it: model, data, seed, versions, host, command, git commit
    sweep: str | None = None  # the sweep folder's name, in a sweep
    # what this logger kept in the run folder last time (trackers.json): a resume continues that run
    saved: dict[str, Any] = field(default_factory=dict)


class Logger(Protocol):
    """One logger of a run. `ids` is what it keeps in the run folder for a resume to continue its
    tracker run (None: nothing to keep)."""

    ids: dict[str, Any] | None

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Epoch `record["epoch"]` is done; `history` holds every epoch so far, this one last."""

    def finish(self, metrics: dict[str, Any], files: list[Path]) -> None:
        """The run has finished: `metrics` is metrics.json's, `files` the run's files to keep
        (best.pt, the pictures, metrics.json); the tracker run is closed."""

    def close(self, failed: bool) -> None:
        """The run stopped early (`failed`: an error; else a stop signal, to be resumed): the
        tracker run is closed and says so."""


def numbers(record: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, float]:
    """The keys of `record` that hold a finite number (not a boolean), but those left out: what a
    tracker can plot. None (no validation split), text and nested values are left out too."""
    return {key: float(value) for key, value in record.items()
            if key not in leave_out and isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value)}
