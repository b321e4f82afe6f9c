"""Sweeps (`cnnbench -m ...`): run folders named after their overrides, jobs that skip, resume or
train as their folder says, failures that do not stop the other jobs, and a leaderboard at the end.

Each job runs `run_job` in the process the launcher gives it (this one with Hydra's basic
launcher, a worker with joblib, a cluster node with SLURM). It claims its run folder before it
trains it (claim.py), so that copies of one sweep command, started on every GPU or node at once,
split the runs between them: a job whose folder another live process holds skips it. Each job
also notes what it did in this sweep's journal (SWEEP_DIR/.jobs/SWEEP_ID/JOB_NUM.json); the
`Leaderboard` callback (conf/config.yaml, `hydra.callbacks`) reads it when the sweep ends, with the
run folders, for the summary line and the exit status, and rebuilds the leaderboard from every run
folder. Only SIGINT or SIGTERM stops a sweep (errors.Interrupted passes through `run_job`).
"""

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnbench.claim import HOST, Claimed, claim, process_exists
from cnnbench.errors import CnnbenchError
from cnnbench.files import write_text_whole

# Written into a run folder when its job fails: the one-line error, then the traceback of an
# unexpected exception. The leaderboard counts such a run as failed; a rerun deletes the file.
ERROR_FILE = "error.txt"
# Names this sweep's journal; set when the sweep starts, and inherited by the job processes
# (joblib's workers, and SLURM jobs, which sbatch gives the submitting shell's environment).
SWEEP_ID = "CNNBENCH_SWEEP_ID"
JOURNAL = ".jobs"


@dataclass
class Job:
    """What one job of this sweep did: trained, resumed, skipped (finished already), elsewhere
    (another live process holds its folder) or failed."""

    folder: Path
    outcome: str
    error: str = ""
    holder: str = ""  # host:pid of the process that held the folder (elsewhere)
    best_val_acc: float | None = None


# The jobs this process has run, in order.
JOBS: list[Job] = []
# What the last sweep's summary counted as failed (run.main's exit status reads it).
FAILED: list[Job] = []


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


def run_job(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], dict[str, Any]],
            journal: Path | None = None) -> float | None:
    """One job of a sweep: skip it if finished or running in another process, resume it if
    interrupted or failed after saving a checkpoint, else train it; note what it did in `journal`.

    A failure is reported and the sweep goes on; only a stop signal (errors.Interrupted) passes.
    """
    job = _job(cfg, run_dir, train)
    JOBS.append(job)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        write_text_whole(journal, json.dumps({**asdict(job), "folder": str(run_dir.absolute())}))
    return job.best_val_acc


def _job(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], dict[str, Any]]) -> Job:
    if any(job.folder == run_dir for job in JOBS):
        # Only possible when the overrides differ in keys left out of folder names.
        return _failed(run_dir, "an earlier job of this sweep has the same folder; their overrides differ "
                       "only in keys left out of folder names (hydra.job.config.override_dirname."
                       "exclude_keys): set hydra.sweep.subdir to tell them apart", write=False)
    if plan(run_dir, cfg.epochs) == "skip":  # nothing to claim
        return _skipped(run_dir)
    try:
        with claim(run_dir) as stale:
            if stale:
                print(f"taking over {shown(run_dir)}: {stale.gone()}", flush=True)
            return _claimed_job(cfg, run_dir, train)
    except Claimed as busy:
        print(f"skipping {shown(run_dir)}: running in {busy.where}", flush=True)
        return Job(run_dir, "elsewhere", holder=busy.where)
    except CnnbenchError as error:  # the claim cannot be written there
        return _failed(run_dir, str(error), write=False)


def _claimed_job(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], dict[str, Any]]
                 ) -> Job:
    # Planned again: another process may have finished the run since this one looked.
    action = plan(run_dir, cfg.epochs)
    if action == "skip":
        return _skipped(run_dir)
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
    return Job(run_dir, "resumed" if action == "resume" else "trained", best_val_acc=metrics["best_val_acc"])


def _skipped(run_dir: Path) -> Job:
    print(f"skipping {shown(run_dir)}: finished", flush=True)
    return Job(run_dir, "skipped", best_val_acc=read_metrics(run_dir)["best_val_acc"])


def _failed(run_dir: Path, message: str, details: str = "", write: bool = True) -> Job:
    print(f"cnnbench: error: {shown(run_dir)}: {message}", file=sys.stderr, flush=True)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(f"{message}\n\n{details}" if details else f"{message}\n")
    return Job(run_dir, "failed", message)


def failed_jobs() -> list[Job]:
    """The jobs of the last sweep that failed, in this process or any other (its summary's count)."""
    return FAILED


def journal_entry(sweep_dir: str | Path, job_num: int) -> Path | None:
    """Where job `job_num` of this sweep notes what it did (None outside a cnnbench sweep)."""
    sweep_id = os.environ.get(SWEEP_ID)
    return Path(sweep_dir) / JOURNAL / sweep_id / f"{job_num}.json" if sweep_id else None


def read_journal(sweep_dir: Path, sweep_id: str) -> list[Job]:
    """The jobs of sweep `sweep_id`, in job order, as their processes noted them."""
    folder = sweep_dir / JOURNAL / sweep_id
    entries = sorted(folder.glob("*.json"), key=lambda path: int(path.stem)) if folder.is_dir() else []
    jobs = []
    for entry in entries:
        noted = json.loads(entry.read_text())
        jobs.append(Job(**{**noted, "folder": Path(noted["folder"])}))
    return jobs


def forget_journal(sweep_dir: Path) -> None:
    """Delete this sweep's journal, and any a stopped sweep of this host left (.jobs/ once empty)."""
    for folder in (sweep_dir / JOURNAL).glob("*"):
        host, pid, _ = (folder.name.rsplit("-", 2) + ["", "", ""])[:3]  # as on_multirun_start names it
        stopped = host == HOST and pid.isdigit() and not process_exists(int(pid))
        if folder.name == os.environ.get(SWEEP_ID) or stopped:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        (sweep_dir / JOURNAL).rmdir()
    except OSError:  # another sweep's journal is there, or none was made
        pass


# How the summary line names what became of each job, in its order.
COUNTED = ("trained", "resumed", "skipped", "failed", "running elsewhere", "unfinished")


def tally(jobs: list[Job], states: dict[Path, str]) -> dict[str, list[Job]]:
    """The jobs under what the summary counts each as, now that the sweep has ended: what this
    sweep's processes did, or what the run folder (`states`: runs.RunInfo.status) says now when
    another process had it. A run that failed here or anywhere counts as failed."""
    counted: dict[str, list[Job]] = {name: [] for name in COUNTED}
    for job in jobs:
        state = states.get(job.folder.resolve(), "not started")
        if job.outcome == "failed" or state == "failed":
            name = "failed"
        elif job.outcome in ("trained", "resumed"):
            name = job.outcome
        elif state == "finished":
            name = "skipped"  # finished before this sweep, or meanwhile by another process
        elif state == "running":
            name = "running elsewhere"
        else:  # its process stopped or died: stale, or not started
            name = "unfinished"
        counted[name].append(job)
    return counted


def summary_line(counted: dict[str, list[Job]]) -> str:
    """`4 runs: 2 trained, 0 resumed, 2 skipped, 0 failed`, then the runs still running elsewhere
    or left unfinished, if any."""
    total = sum(len(jobs) for jobs in counted.values())
    parts = [f"{len(counted[name])} {name}" for name in COUNTED
             if name in ("trained", "resumed", "skipped", "failed") or counted[name]]
    return f"{total} runs: " + ", ".join(parts)


class Leaderboard(Callback):
    """Hydra callback: name the sweep's journal when it starts; when it ends, rebuild its folder's
    leaderboard and sum up its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A new journal for this sweep: its jobs, in this process or others, note what they did there."""
        os.environ[SWEEP_ID] = f"{HOST}-{os.getpid()}-{time.time_ns()}"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write leaderboard.csv and leaderboard.md in the sweep folder, print the table and the summary."""
        from cnnbench.report import rebuild_leaderboard

        folder = Path(config.hydra.sweep.dir)
        table, runs, problems = rebuild_leaderboard(folder)
        for problem in problems:
            print(f"cnnbench: warning: {problem}", file=sys.stderr)
        if table:
            print(f"\n{table}\nleaderboard: {shown(folder.absolute() / 'leaderboard.md')} (and .csv)")
        jobs = read_journal(folder, os.environ[SWEEP_ID])
        forget_journal(folder)
        counted = tally(jobs, {run.folder.resolve(): run.status for run in runs})
        print(summary_line(counted), flush=True)
        FAILED[:] = counted["failed"]
        if FAILED:
            print(f"cnnbench: error: {len(FAILED)} of {len(jobs)} runs failed: "
                  + ", ".join(shown(job.folder) for job in FAILED), file=sys.stderr, flush=True)
        if counted["running elsewhere"]:
            print(f"still running in other processes: {len(counted['running elsewhere'])} runs; the last "
                  "process to finish writes the complete leaderboard", flush=True)
        unfinished = counted["unfinished"]
        if unfinished:
            print(f"cnnbench: warning: {len(unfinished)} runs are unfinished and no process is at them (a "
                  "worker stopped or died): rerun the same command to finish them: "
                  + ", ".join(shown(job.folder) for job in unfinished), file=sys.stderr, flush=True)
