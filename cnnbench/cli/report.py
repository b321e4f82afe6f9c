"""`cnnbench-report FOLDER [--sort COLUMN] [--ascending] [--baseline WORDS]`: rebuild and print the
leaderboard of every run under FOLDER (leaderboard/table.py builds it)."""

import argparse
import re
import sys
from pathlib import Path

from cnnbench.cli.common import console_command, fail
from cnnbench.errors import CnnbenchError
from cnnbench.leaderboard.table import COLUMNS, EMA_COLUMNS, rebuild_leaderboard
from cnnbench.sweep.folders import STATUSES

TOOL = "cnnbench-report"


def sort_column(name: str) -> str:
    """--sort's argument: a csv column (a time-to-accuracy one for any target, e.g. time_to_0.90_s_mean)."""
    if name in COLUMNS + EMA_COLUMNS or re.fullmatch(r"time_to_[0-9.]+_(s|epochs)_mean", name):
        return name
    raise argparse.ArgumentTypeError(f"no column {name!r}: one of {', '.join(COLUMNS + EMA_COLUMNS)}, "
                                     "time_to_TARGET_s_mean, time_to_TARGET_epochs_mean")



@console_command
def main(argv: list[str] | None = None) -> None:
    """Console entry point: `cnnbench-report FOLDER [--sort COLUMN] [--ascending] [--baseline WORDS]`."""
    parser = argparse.ArgumentParser(
        prog="cnnbench-report",
        description="Leaderboard of every cnnbench run under FOLDER: one row per configuration, "
                    "seeds averaged. Prints it and writes FOLDER/leaderboard.csv, FOLDER/leaderboard.md and "
                    "its pictures (leaderboard_curves.png, leaderboard_cost.png).")
    parser.add_argument("folder", type=Path, help="a sweep folder, or any folder holding run folders")
    parser.add_argument("--sort", default="best_val_acc_mean", type=sort_column, metavar="COLUMN",
                        help="column to sort by (default best_val_acc_mean): "
                             f"{', '.join(COLUMNS + EMA_COLUMNS)}, time_to_TARGET_s_mean, "
                             "time_to_TARGET_epochs_mean")
    parser.add_argument("--ascending", action="store_true", help="smallest first (default: largest first)")
    parser.add_argument("--baseline", metavar="WORDS",
                        help="compare every row with this one, not the best: its model, data or overrides "
                             "as the table shows them, e.g. 'lenet' or 'small_cnn data.permute_pixels=true'")
    args = parser.parse_args(argv)
    try:
        if not args.folder.is_dir():
            raise CnnbenchError(f"{args.folder} is not a folder")
        table, runs, problems = rebuild_leaderboard(args.folder, args.sort, args.ascending, args.baseline)
        for problem in problems:
            print(f"{TOOL}: warning: {problem}", file=sys.stderr)
        if table is None:
            raise CnnbenchError(f"no runs under {args.folder}: no folder there holds a cnnbench run")
        print(table)
        print(f"{len(runs)} runs: " + ", ".join(f"{sum(run.status == status for run in runs)} {status}"
                                                 for status in STATUSES))
    except BrokenPipeError:
        raise  # the reader of stdout went away: console_command ends the command
    except OSError as error:  # e.g. a read-only folder
        fail(f"cannot write the leaderboard in {args.folder}: {error.strerror or error}", TOOL)
    except CnnbenchError as error:
        fail(str(error), TOOL)


if __name__ == "__main__":
    main()
