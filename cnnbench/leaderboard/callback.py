"""The Hydra callback of every sweep (conf/config.yaml, `hydra.callbacks.leaderboard`): it names the
sweep's journal when the sweep starts, and when it ends rebuilds the sweep folder's leaderboard,
prints it, and sums up what the jobs did, read from the journal and the run folders."""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnbench.errors import CnnbenchError, SweepFailed, say
from cnnbench.files import refuse_links
from cnnbench.leaderboard.table import SWEEP_FILES, leaderboard_files, rebuild_leaderboard
from cnnbench.sweep.folders import collect_runs, refuse_links_in_runs, shown
from cnnbench.sweep.journal import forget_journal, new_sweep_id, summary_line, tally, this_sweep


class Leaderboard(Callback):
    """Name the sweep's journal when it starts; when it ends, write its folder's leaderboard and
    sum up its jobs. Raises SweepFailed when a run failed (the command's exit status is then 1)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A new journal for this sweep: its jobs, in this process or others, note what they did there.
        Before that, a sweep folder (maybe someone else's) with a link where the sweep, its runs or
        Hydra write is refused in one line, exit 2: nothing has been written yet."""
        folder = Path(config.hydra.sweep.dir)
        try:
            refuse_links(folder, (*leaderboard_files(), *SWEEP_FILES))
            refuse_links_in_runs(folder)
        except CnnbenchError as error:
            say(str(error))
            raise SystemExit(2) from None  # an Exception here, Hydra would only warn and go on
        new_sweep_id()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write leaderboard.csv and leaderboard.md in the sweep folder, print the table and the summary."""
        folder = Path(config.hydra.sweep.dir)
        try:
            table, runs, problems = rebuild_leaderboard(folder)
        except CnnbenchError as error:  # a file of the user's where the leaderboard goes: kept as it is
            say(f"{error} (the runs are done; the leaderboard was not written)")
            table, (runs, problems) = None, collect_runs(folder)
        for problem in problems:
            print(f"cnnbench: warning: {problem}", file=sys.stderr)
        if table:
            print(f"\n{table}\nleaderboard: {shown(folder.absolute() / 'leaderboard.md')} (and .csv)")
        jobs = this_sweep(folder)
        forget_journal(folder)
        counted = tally(jobs, {run.folder.resolve(): run.status for run in runs})
        print(summary_line(counted), flush=True)
        failed = counted["failed"]
        if failed:
            say(f"{len(failed)} of {len(jobs)} runs failed: " + ", ".join(shown(job.folder) for job in failed))
        if counted["running elsewhere"]:
            print(f"still running in other processes: {len(counted['running elsewhere'])} runs; the last "
                  "process to finish writes the complete leaderboard", flush=True)
        unfinished = counted["unfinished"]
        if unfinished:
            print(f"cnnbench: warning: {len(unfinished)} runs are unfinished and no process is at them (a "
                  "worker stopped or died): rerun the same command to finish them: "
                  + ", ".join(shown(job.folder) for job in unfinished), file=sys.stderr, flush=True)
        if failed:
            raise SweepFailed(len(failed), len(jobs))
