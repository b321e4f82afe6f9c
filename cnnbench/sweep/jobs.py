"""Sweeps (`cnnbench -m ...`): jobs that skip, resume or train as their run folder says, and
failures that do not stop the other jobs.

Each job runs `run_job` in the process the launcher gives it (this one with Hydra's basic
launcher, a worker with joblib, a cluster node with SLURM). It claims its run folder before it
trains it (claims.py), so that copies of one sweep command, started on every GPU or node at once,
split the runs between them: a job whose folder another live process holds skips it. Each job
also notes what it did in this sweep's journal (journal.py), which the sweep's end reads with the
run folders (leaderboard/callback.py). Only SIGINT or SIGTERM stops a sweep (errors.Interrupted
passes through `run_job`).
"""

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnnbench.errors import CnnbenchError, Interrupted, say
from cnnbench.files import write_text_whole
from cnnbench.sweep.claims import Claimed, ClaimLost, claim
from cnnbench.sweep.folders import ERROR_FILE, read_config, read_metrics, shown
from cnnbench.sweep.journal import Job, note, read_journal

# train(cfg, run_dir, resume, check_claim): the run itself (engine/train.py), handed in by the
# command; check_claim, before each write of the run's, raises ClaimLost when the folder was taken over
Train = Callable[[DictConfig, Path, bool, Callable[[], None]], dict[str, Any]]


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


def other_data(cfg: DictConfig, run_dir: Path) -> str | None:
    """Why the run in `run_dir` trained on other data than `cfg` names, in words (an image folder's
    images are the data; data.root is left out of folder names); None when it did not, or there is
    no run there yet."""
    metrics = read_metrics(run_dir)
    if cfg.data.get("name") != "imagefolder" or metrics is None:
        return None
    from cnnbench.data.folder import other_images  # here only: it imports torch

    config = read_config(run_dir) or {}
    return other_images(cfg.data, metrics.get("data_identity"), (config.get("data") or {}).get("root"))


def run_job(cfg: DictConfig, run_dir: Path, train: Train, journal: Path | None = None) -> float | None:
    """One job of a sweep: skip it if finished or running in another process, resume it if
    interrupted or failed after saving a checkpoint, else train it; note what it did in `journal`.

    A failure is reported and the sweep goes on; only a stop signal (errors.Interrupted) passes.
    """
    try:
        job = _job(cfg, run_dir, train, journal)
    except Interrupted as stop:
        stop.in_sweep = True  # the whole sweep stops: rerunning its command continues it
        raise
    if journal is not None:
        note(journal, job)
    return job.best_val_acc


def _job(cfg: DictConfig, run_dir: Path, train: Train, journal: Path | None) -> Job:
    earlier = read_journal(journal.parent) if journal is not None else []
    if any(job.folder == run_dir.absolute() for job in earlier):
        # Only possible when the overrides differ in keys left out of folder names.
        return _failed(run_dir, "an earlier job of this sweep has the same folder; their overrides differ "
                       "only in keys left out of folder names (hydra.job.config.override_dirname."
                       "exclude_keys): set hydra.sweep.subdir to tell them apart", write=False)
    other = other_data(cfg, run_dir)
    if other:  # the folder holds the results of a run on other images: never skipped as this one's
        return _failed(run_dir, f"{other}; this sweep's run would meet that run's results in one folder: "
                       "give this sweep its own hydra.sweep.dir", write=False)
    if plan(run_dir, cfg.epochs) == "skip":  # nothing to claim
        return _skipped(run_dir)
    try:
        with claim(run_dir) as ours:
            if ours.stale:
                print(f"taking over {shown(run_dir)}: {ours.stale.gone()}", flush=True)
            return _claimed_job(cfg, run_dir, train, ours.check)
    except Claimed as busy:
        print(f"skipping {shown(run_dir)}: running in {busy.where}", flush=True)
        return Job(run_dir, "elsewhere", holder=busy.where)
    except CnnbenchError as error:  # the claim cannot be written there
        return _failed(run_dir, str(error), write=False)


def _claimed_job(cfg: DictConfig, run_dir: Path, train: Train, check_claim: Callable[[], None]) -> Job:
    # Planned again: another process may have finished the run since this one looked.
    action = plan(run_dir, cfg.epochs)
    if action == "skip":
        return _skipped(run_dir)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)  # a failure of an earlier attempt no longer holds
    try:
        # the folder decides whether to resume, whatever resume= the command line gave
        metrics = train(cfg, run_dir, action == "resume", check_claim)
    except ClaimLost as lost:  # the run goes on in the process that took it over: not a failure
        say(str(lost))
        return Job(run_dir, "elsewhere", holder=lost.where)
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
    return Job(run_dir, "skipped", best_val_acc=(read_metrics(run_dir) or {}).get("best_val_acc"))


def _failed(run_dir: Path, message: str, details: str = "", write: bool = True) -> Job:
    say(f"{shown(run_dir)}: {message}")
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_whole(run_dir / ERROR_FILE, f"{message}\n\n{details}" if details else f"{message}\n")
    return Job(run_dir, "failed", message)
