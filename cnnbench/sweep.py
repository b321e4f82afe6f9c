"""Sweeps (`cnnbench -m ...`): run folders named after their overrides, jobs that skip, resume or
train as their folder says, failures that do not stop the other jobs, and a leaderboard at the end.

Hydra's basic launcher runs a sweep's jobs one after another in this process; `run_job` handles
one job and raises only when SIGINT or SIGTERM stopped it (the sweep stops there), and the
`Leaderboard` callback (conf/config.yaml, `hydra.callbacks`) writes the leaderboard when the last
job is done.
"""

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnbench.errors import CnnbenchError

# Written into a run folder when its job fails: the one-line error, then the traceback of an
# unexpected exception. The leaderboard counts such a run as failed; a rerun deletes the file.
ERROR_FILE = "error.txt"

@dataclass
class Job:
    """What one job of this sweep did: trained, resumed, skipped or failed."""

    folder: Path
    outcome: str
    error: str = ""


# The jobs this process has run, in order: the summary at the end and the exit status read it.
JOBS: list[Job] = []


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is missing or unreadable."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def plan(run_dir: Path, epochs: int) -> str:
    """What a sweep does with a job's folder: "skip", "resume" or "fresh"."""
    metrics = read_metrics(run_dir) or {}
    if metrics.get("status") == "finished" and (metrics.get("epochs_done", 0) >= epochs
                                                 or metrics.get("stopped_early")):
        return "skip"
    # Interrupted (status running), failed after its last checkpoint (error.txt: last.pt is still
    # its last good state, and resuming it gives what an uninterrupted run gives), or finished
    # with fewer epochs than asked for now: carry on from last.pt. (README's sweep table.)
    return "resume" if (run_dir / "last.pt").is_file() else "fresh"


def run_job(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], dict[str, Any]]
            ) -> float | None:
    """One job of a sweep: skip it if finished, resume it if interrupted or failed after saving a
    checkpoint, else train it.

    A failure is reported and the sweep goes on; only a stop signal (errors.Interrupted) passes.
    """
    if any(job.folder == run_dir for job in JOBS):
        # Only possible when the overrides differ in keys left out of folder names.
        return _failed(run_dir, "an earlier job of this sweep has the same folder; their overrides differ "
                       "only in keys left out of folder names (hydra.job.config.override_dirname."
                       "exclude_keys): set hydra.sweep.subdir to tell them apart", write=False)
    action = plan(run_dir, cfg.epochs)
    if action == "skip":
        print(f"skipping {shown(run_dir)}: finished", flush=True)
        JOBS.append(Job(run_dir, "skipped"))
        return read_metrics(run_dir)["best_val_acc"]
    (run_dir / ERROR_FILE).unlink(missing_ok=True)  # a failure of an earlier attempt no longer holds
    cfg.resume = action == "resume"  # the folder decides, whatever resume= the command line gave
    try:
        metrics = train(cfg, run_dir)
    # Any exception: one job's bug or out-of-memory must not cost the other jobs their turn.
    # Ctrl-C (KeyboardInterrupt) is not an Exception and still stops the sweep.
    except Exception as error:
        if isinstance(error, CnnbenchError):
            return _failed(run_dir, str(error))
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {first_line} (traceback in {shown(run_dir / ERROR_FILE)})"
        return _failed(run_dir, message, details=traceback.format_exc())
    JOBS.append(Job(run_dir, "resumed" if action == "resume" else "trained"))
    return metrics["best_val_acc"]


def _failed(run_dir: Path, message: str, details: str = "", write: bool = True) -> None:
    print(f"cnnbench: error: {shown(run_dir)}: {message}", file=sys.stderr, flush=True)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(f"{message}\n\n{details}" if details else f"{message}\n")
    JOBS.append(Job(run_dir, "failed", message))
    return None


def failed_jobs() -> list[Job]:
    """The jobs of this sweep that failed."""
    return [job for job in JOBS if job.outcome == "failed"]


class Leaderboard(Callback):
    """Hydra callback: when a sweep ends, write its folder's leaderboard and sum up the jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write leaderboard.csv and leaderboard.md in the sweep folder and print the table."""
        from cnnbench.report import collect_runs, leaderboard_rows, write_leaderboard

        folder = Path(config.hydra.sweep.dir)
        runs, problems = collect_runs(folder)
        for problem in problems:
            print(f"cnnbench: warning: {problem}", file=sys.stderr)
        if runs:
            table = write_leaderboard(folder, leaderboard_rows(runs))
            print(f"\n{table}\nleaderboard: {shown(folder.absolute() / 'leaderboard.md')} (and .csv)")
        counts = {outcome: sum(job.outcome == outcome for job in JOBS)
                  for outcome in ("trained", "resumed", "skipped", "failed")}
        print(f"{len(JOBS)} runs: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()),
              flush=True)
        failed = failed_jobs()
        if failed:
            print(f"cnnbench: error: {len(failed)} of {len(JOBS)} runs failed: "
                  + ", ".join(shown(job.folder) for job in failed), file=sys.stderr, flush=True)
