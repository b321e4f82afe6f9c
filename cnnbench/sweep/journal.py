"""What the jobs of one sweep did, whichever process ran them: each job notes its outcome in the
sweep's journal, SWEEP_DIR/.jobs/SWEEP_ID/JOB_NUM.json, and the sweep's end reads the journal
with the run folders for its summary line and its exit status.

The sweep id is made when the sweep starts (leaderboard.callback) and passed to the job processes
in the environment (joblib's workers, and SLURM jobs, which sbatch gives the submitting shell's
environment).
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnbench.files import write_text_whole
from cnnbench.runtime.host import HOST, process_exists

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


def new_sweep_id() -> str:
    """A name for a new sweep's journal, unique across hosts and processes; set in the environment
    so that this process's jobs and the worker processes it starts note what they do there."""
    sweep_id = f"{HOST}-{os.getpid()}-{time.time_ns()}"
    os.environ[SWEEP_ID] = sweep_id
    return sweep_id


def journal_entry(sweep_dir: str | Path, job_num: int) -> Path | None:
    """Where job `job_num` of this sweep notes what it did (None outside a cnnbench sweep)."""
    sweep_id = os.environ.get(SWEEP_ID)
    return Path(sweep_dir) / JOURNAL / sweep_id / f"{job_num}.json" if sweep_id else None


def note(entry: Path, job: Job) -> None:
    """Write what a job did into its journal entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    write_text_whole(entry, json.dumps({**asdict(job), "folder": str(job.folder.absolute())}))


def read_journal(folder: Path) -> list[Job]:
    """The jobs noted in one sweep's journal folder, in job order (an unreadable entry is left out:
    the run folder it named says what became of it)."""
    entries = sorted(folder.glob("*.json"), key=lambda path: int(path.stem) if path.stem.isdigit() else -1) \
        if folder.is_dir() else []
    jobs = []
    for entry in entries:
        try:
            noted = json.loads(entry.read_text())
            jobs.append(Job(**{**noted, "folder": Path(noted["folder"])}))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return jobs


def this_sweep(sweep_dir: Path) -> list[Job]:
    """The jobs of the sweep this process runs (or started), in job order."""
    sweep_id = os.environ.get(SWEEP_ID)
    return read_journal(sweep_dir / JOURNAL / sweep_id) if sweep_id else []


def forget_journal(sweep_dir: Path) -> None:
    """Delete this sweep's journal, and any a stopped sweep of this host left (.jobs/ once empty)."""
    for folder in (sweep_dir / JOURNAL).glob("*"):
        host, pid, _ = (folder.name.rsplit("-", 2) + ["", "", ""])[:3]  # as new_sweep_id names it
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
    sweep's processes did, or what the run folder (`states`: folders.RunInfo.status) says now when
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
