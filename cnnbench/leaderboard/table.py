"""The leaderboard of every run under a folder (a sweep's, or any), one row per configuration.

Runs that differ only by seed form one row (grouping.py): mean ± standard deviation of their
accuracies, and their cost (parameters, multiply-accumulates, images/s, wall time); statistics.py
adds the confidence interval, the difference from the best row (or --baseline) with Welch's
p-value, the averaged weights, time to accuracy and the hardware note. The table is printed and
written as FOLDER/leaderboard.csv and FOLDER/leaderboard.md, with the pictures of pictures.py beside them
(each replaced whole: readers never see half of one); every process of a sweep rebuilds them when
its jobs are done, so the last to finish writes the complete one. Below the table: the runs not
finished, running (and where), stale or not started, and the failed ones.
"""

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnbench.files import LEADERBOARD_SIGN, check_output, locked, write_text_whole, written_by
from cnnbench.leaderboard import statistics as comparison
from cnnbench.leaderboard.grouping import common_overrides, describe, group_key
from cnnbench.leaderboard.statistics import mean, std
from cnnbench.sweep.folders import RunInfo, collect_runs
from cnnbench.sweep.journal import JOURNAL

# The csv's columns, in order (--sort takes any of them); the csv holds raw values, one per cell.
# statistics.py: the interval, the difference from the reference row and its p-value.
COLUMNS = ["model", "data", "config", "seeds", "protocol", "best_val_acc_mean", "best_val_acc_std",
           "best_val_acc_ci_low", "best_val_acc_ci_high", "diff_from_reference", "welch_p", "comparison",
           "test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "test_diff_from_reference",
           "test_welch_p", "test_comparison", "final_val_acc_mean", "final_val_acc_std", "final_test_acc_mean",
           "final_test_acc_std", "best_epoch_mean", "parameters", "macs", "images_per_sec", "wall_time_s",
           "finished", "running", "stale", "failed", "hardware"]
# Only when a row has them: the averaged weights' accuracies (ema.decay > 0), and per accuracy
# target (time_to_accuracy in metrics.json) its TIME_COLUMNS.
EMA_COLUMNS = ["best_val_acc_ema_mean", "best_val_acc_ema_std", "final_val_acc_ema_mean",
               "final_val_acc_ema_std"]
TIME_COLUMNS = ["time_to_{}_s_mean", "time_to_{}_epochs_mean", "time_to_{}_reached"]
TEXT_COLUMNS = ("model", "data", "config", "hardware")
STATUS_COLUMNS = ("finished", "running", "stale", "failed")
LOCK_FILE = ".leaderboard.lock"
# A sweep's other files in its folder: its journal, and Hydra's multirun.yaml (written with a
# plain open(), through a link)
SWEEP_FILES = (LOCK_FILE, JOURNAL, "multirun.yaml")


def leaderboard_files() -> tuple[str, ...]:
    """The files the leaderboard writes in its folder: the table's two and the pictures'."""
    from cnnbench.leaderboard.pictures import COST, CURVES  # imported here: torch comes with it

    return ("leaderboard.csv", "leaderboard.md", CURVES, COST)


def refuse_others_files(folder: Path) -> None:
    """Refuse, in one line and before anything is written, to replace a leaderboard file that
    cnnbench did not write (a user's own leaderboard.md in the folder): each of ours says so
    (files.written_by). A picture of the release before, which said nothing, is known by the
    leaderboard.md of ours beside it that shows it."""
    from cnnbench.leaderboard.pictures import WRITER

    markdown = folder / "leaderboard.md"
    ours = written_by(markdown) == WRITER if markdown.is_file() and not markdown.is_symlink() else False
    shown = markdown.read_text(encoding="utf-8", errors="replace") if ours else ""
    for name in leaderboard_files():
        path = folder / name
        earlier_picture = (name.endswith(".png") and f"]({name})" in shown and not path.is_symlink()
                           and path.is_file() and written_by(path) is None)
        if not earlier_picture:
            check_output(path, WRITER, what=f"move it out of {folder}, which the leaderboard is written in,")


def _number(style: str, value: Any) -> str:
    return "" if value is None else style.format(value)


def _meanstd(row: dict[str, Any], name: str) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    return _number("{:.4f}", mean) + ("" if std is None else f" ± {std:.4f}")


def _runs(row: dict[str, Any]) -> str:
    return ", ".join(f"{row[status]} {status}" for status in STATUS_COLUMNS if row[status])


def display(rows: list[dict[str, Any]], markdown: bool) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """The columns of the markdown table (every one), or of the console table (narrower: the
    validation accuracy that ranks the rows, then the test accuracy with its interval and test;
    without the final accuracies, the best epoch, the wall time and the hardware, the run counts in
    one cell): (heading, the cell's text from a row)."""
    reference = next((row for row in rows if row["comparison"] == comparison.REFERENCE), None)
    ema = any(row["best_val_acc_ema_mean"] is not None for row in rows)
    targets = time_targets_of(rows)
    versus = "vs baseline" if reference and reference.get("baseline") else "vs best"
    # the console's interval and test are the test accuracy's (the number to publish) when the
    # runs have one; runs of cnnbench 0.1 have none, and get their validation accuracy's
    tested = any(row["test_values"] for row in rows)
    columns = [
        ("model", lambda row: row["model"] + comparison.PROTOCOL_MARKS.get(row["protocol"], "")),
        ("data", lambda row: row["data"]),
        ("config", lambda row: row["shown_config"]), ("seeds", lambda row: str(row["seeds"])),
        ("best val acc", lambda row: _meanstd(row, "best_val_acc")),
    ]
    if markdown or not tested:
        columns += [("95% CI" if not markdown else "val 95% CI", comparison.interval_cell),
                    (versus if not markdown else f"val {versus}", lambda row: comparison.versus_cell(row, reference))]
    if markdown or tested:
        columns += [
            ("test acc", lambda row: _meanstd(row, "test_acc")),
            ("test 95% CI", lambda row: comparison.interval_cell(row, "test")),
            (f"test {versus}", lambda row: comparison.versus_cell(row, reference, "test")),
        ]
    if ema:
        columns.append(("best val acc (EMA)", lambda row: _meanstd(row, "best_val_acc_ema")))
    if ema and markdown:
        columns.append(("final val acc (EMA)", lambda row: _meanstd(row, "final_val_acc_ema")))
    if markdown:
        columns += [("final val acc", lambda row: _meanstd(row, "final_val_acc")),
                    ("final test acc", lambda row: _meanstd(row, "final_test_acc")),
                    ("best epoch", lambda row: _number("{:.1f}", row["best_epoch_mean"]))]
    columns += [
        ("parameters", lambda row: _number("{:,}", row["parameters"])),
        ("MACs", lambda row: _number("{:,}", row["macs"])),
        ("images/s", lambda row: _number("{:,.0f}", row["images_per_sec"])),
    ]
    if markdown:
        columns.append(("wall time (s)", lambda row: _number("{:,.1f}", row["wall_time_s"])))
    columns += [(f"time to {target}", lambda row, target=target: comparison.time_cell(row, target))
                for target in targets]
    if not markdown:
        return columns + [("runs", _runs)]
    columns += [(status, lambda row, status=status: str(row[status])) for status in STATUS_COLUMNS]
    if len({comparison.hardware(m.get("provenance")) for row in rows for m in row["metrics"]}) > 1:
        columns.append(("hardware", lambda row: row["hardware"] or ""))
    return columns


def time_targets_of(rows: list[dict[str, Any]]) -> list[str]:
    """The accuracy targets the rows have time-to-accuracy columns for, lowest first."""
    return comparison.time_targets([m for row in rows for m in row["metrics"]])


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """COLUMNS, with the EMA and time-to-accuracy ones when a row has them."""
    ema = EMA_COLUMNS if any(row["best_val_acc_ema_mean"] is not None for row in rows) else []
    at = COLUMNS.index("best_epoch_mean")
    times = [name.format(target) for target in time_targets_of(rows) for name in TIME_COLUMNS]
    return COLUMNS[:at] + ema + COLUMNS[at:-1] + times + COLUMNS[-1:]


def count_macs(config: dict[str, Any], source: Path, known: dict[str, int | None]) -> int | None:
    """Multiply-accumulates of one image through the config's model (as cnnbench-summary counts
    them), or None when it cannot be built; `source` is the run folder the config comes from, which
    may be someone else's; `known` holds the counts already made for this table."""
    key = json.dumps([config.get("model"), config.get("data")], sort_keys=True, default=str)
    if key not in known:
        try:
            known[key] = _count_macs(config, source)
        except Exception:  # a model that no longer builds leaves its cell empty, not the report
            known[key] = None
    return known[key]


def _count_macs(config: dict[str, Any], source: Path) -> int:
    # Imported here: torch takes seconds to load, and a report of nothing should not wait.
    import torch
    from omegaconf import OmegaConf

    from cnnbench.config.shapes import input_shape
    from cnnbench.engine.build import build_model
    from cnnbench.models.cost import macs

    cfg = OmegaConf.create({"model": config["model"], "data": config["data"]})
    channels, height, width, classes = input_shape(cfg.data)
    # a sweep folder may be someone else's: only a registered model is built from its config
    model = build_model(cfg.model, str(source), num_classes=classes, in_channels=channels,
                        image_size=[height, width])
    return macs(model, torch.zeros(1, channels, height, width))


def leaderboard_rows(runs: list[RunInfo], sort: str = "best_val_acc_mean", ascending: bool = False,
                     baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per configuration, sorted by `sort`; empty cells (None) sort last either way. Runs
    with no metrics yet are left out (the roll call below the table names them), failed ones not.
    Each row is compared with the best one, or the one `baseline` names (comparison.find_reference)."""
    groups: dict[str, list[RunInfo]] = {}
    shown_runs = [run for run in runs if run.metrics or run.status == "failed"]
    for run in sorted(shown_runs, key=lambda run: str(run.folder)):
        groups.setdefault(group_key(run), []).append(run)
    used_metrics = {}
    for key, members in groups.items():
        # Statistics over finished runs; a configuration with none finished yet shows its
        # running (or stale) runs' numbers so far, so a half-finished sweep already reads.
        used = ([r for r in members if r.status == "finished"]
                or [r for r in members if r.status in ("running", "stale") and r.metrics])
        # One run per seed (the latest): the same seed found twice, e.g. in two sweep folders, is
        # the same experiment repeated, and counting it twice would shrink the spread.
        by_seed = {r.metrics.get("seed"): r for r in sorted(used, key=lambda r: r.mtime)}
        used_metrics[key] = [r.metrics for r in by_seed.values()]
    targets = comparison.time_targets([m for metrics in used_metrics.values() for m in metrics])
    counted_macs: dict[str, int | None] = {}
    rows = []
    for key, members in groups.items():
        metrics = used_metrics[key]
        best = [m["best_val_acc"] for m in metrics if m.get("best_val_acc") is not None]
        final = [m["final_val_acc"] for m in metrics if m.get("final_val_acc") is not None]
        test = [m["test_acc"] for m in metrics if m.get("test_acc") is not None]
        final_test = [m["final_test_acc"] for m in metrics if m.get("final_test_acc") is not None]
        # runs of cnnbench 0.1 say nothing: they chose on the test split
        protocols = sorted({m.get("protocol", "test") for m in metrics})
        model, data, config = describe(members[0])
        with_config = next((r for r in members if r.config), None)
        machines = dict.fromkeys(filter(None, (comparison.hardware(m.get("provenance")) for m in metrics)))
        rows.append({
            "model": model, "data": data, "config": config, "seeds": len(metrics),
            "protocol": "+".join(protocols) if protocols else None,
            "best_val_acc_mean": mean(best), "best_val_acc_std": std(best),
            "test_acc_mean": mean(test), "test_acc_std": std(test),
            "final_val_acc_mean": mean(final), "final_val_acc_std": std(final),
            "final_test_acc_mean": mean(final_test), "final_test_acc_std": std(final_test),
            **comparison.ema_columns(metrics),
            "best_epoch_mean": mean([m["best_epoch"] for m in metrics if "best_epoch" in m]),
            "parameters": metrics[0].get("parameters") if metrics else None,
            "macs": count_macs(with_config.config, with_config.folder, counted_macs) if with_config else None,
            "images_per_sec": mean([m["images_per_sec"] for m in metrics if m.get("images_per_sec")]),
            "wall_time_s": mean([m["wall_time_s"] for m in metrics if "wall_time_s" in m]),
            **comparison.time_columns(metrics, targets),
            **{status: sum(r.status == status for r in members) for status in STATUS_COLUMNS},
            "hardware": "; ".join(machines) or None,
            "folders": [r.folder for r in members],
            "errors": [(r.folder, r.error) for r in members if r.status == "failed"],
            "best_values": best, "test_values": test, "metrics": metrics,  # for the statistics and the pictures
        })
    reference = comparison.compare(rows, baseline)
    if reference is not None:
        rows[reference]["baseline"] = baseline is not None
    present = [row for row in rows if row.get(sort) is not None]
    present.sort(key=lambda row: row[sort], reverse=not ascending)
    return present + [row for row in rows if row.get(sort) is None]


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as an aligned plain-text table, or as a markdown table."""
    common = set(common_overrides(rows))
    for row in rows:
        row["shown_config"] = " ".join(o for o in row["config"].split() if o not in common)
    columns = display(rows, markdown)
    headings = [heading for heading, _ in columns]
    cells = [[cell(row) for _, cell in columns] for row in rows]
    is_text = [heading in TEXT_COLUMNS for heading in headings]
    if markdown:
        rule = ["---" if text else "---:" for text in is_text]
        escaped = [[text.replace("|", "\\|") for text in line] for line in cells]  # | ends a cell
        return "\n".join("| " + " | ".join(line) + " |" for line in [headings, rule] + escaped)
    widths = [max(len(line[i]) for line in [headings] + cells) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) if left else text.rjust(width)
                       for text, width, left in zip(line, widths, is_text, strict=True)).rstrip()
             for line in [headings] + cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _failures(rows: list[dict[str, Any]], folder: Path) -> list[str]:
    return [f"{os.path.relpath(path, folder)}: {error}" for row in rows for path, error in row["errors"]]


def roll_call(runs: list[RunInfo], folder: Path) -> list[str]:
    """A line for each run that is not finished and has not failed: running (where), stale, not started."""
    lines = []
    for run in sorted(runs, key=lambda run: str(run.folder)):
        name = os.path.relpath(run.folder, folder)
        done = run.metrics.get("epochs_done")
        progress = f" (epoch {done} of {run.metrics.get('epochs')} done)" if done is not None else ""
        if run.status == "running":
            lines.append(f"running: {name} in {run.holder.where}{progress}")
        elif run.status == "stale":
            why = run.holder.gone() if run.holder else "stopped"
            lines.append(f"stale: {name}{progress}: {why}; rerun its sweep (or cnnbench resume=FOLDER) to "
                         "continue it")
        elif run.status == "not started":
            lines.append(f"not started: {name}")
    return lines


def write_leaderboard(folder: Path, rows: list[dict[str, Any]], sort: str = "best_val_acc_mean",
                      ascending: bool = False, runs: list[RunInfo] = ()) -> str:
    """Write folder/leaderboard.csv and folder/leaderboard.md, each replaced whole (none when a file
    of those names is not cnnbench's); return the console table, with the failed runs and the roll
    call of `runs` not finished below it."""
    refuse_others_files(folder)
    table = io.StringIO()
    writer = csv.writer(table)
    names = csv_columns(rows)
    writer.writerow(names + ["folders"])
    for row in rows:
        writer.writerow(["" if row[name] is None else row[name] for name in names]
                        + [" ".join(os.path.relpath(path, folder) for path in row["folders"])])
    write_text_whole(folder / "leaderboard.csv", table.getvalue())
    # Imported here: the pictures need PIL and numpy, which a report of nothing does without.
    from cnnbench.leaderboard.pictures import write_sweep_figures

    pictures = write_sweep_figures(folder, rows)
    order = "ascending" if ascending else "descending"
    failures = _failures(rows, folder)
    unfinished = roll_call(list(runs), folder)
    common = " ".join(common_overrides(rows))
    reference = next((i for i, row in enumerate(rows) if row["comparison"] == comparison.REFERENCE), None)
    legend = comparison.legend(rows, reference, bool(reference is not None and rows[reference]["baseline"]))
    note = comparison.hardware_note([m for row in rows for m in row["metrics"]])
    above = [f"**Note: {note}.**", ""] if note else []
    markdown = [f"# Leaderboard: {folder}", "",
                f"{LEADERBOARD_SIGN}: accuracies are the mean ± the "
                "sample standard deviation over its finished runs; MACs per image. "
                f"Sorted by {sort}, {order}." + (f" Every row also has: `{common}`." if common else ""),
                "", *above, format_table(rows, markdown=True), ""]
    if legend:
        markdown += [legend, ""]
    if failures:
        markdown += ["Failed runs:", ""] + [f"- {line}" for line in failures] + [""]
    if unfinished:
        markdown += ["Runs not finished:", ""] + [f"- {line}" for line in unfinished] + [""]
    markdown += [f"![{what}]({name})" for name, what in pictures.items()] + ([""] if pictures else [])
    write_text_whole(folder / "leaderboard.md", "\n".join(markdown))
    return ((f"every row: {common}\n" if common else "") + (f"note: {note}\n" if note else "")
            + format_table(rows) + (f"\n{legend}" if legend else "")
            + "".join(f"\nfailed: {line}" for line in failures) + "".join(f"\n{line}" for line in unfinished))


def rebuild_leaderboard(folder: Path, sort: str = "best_val_acc_mean", ascending: bool = False,
                        baseline: str | None = None) -> tuple[str | None, list[RunInfo], list[str]]:
    """Rebuild the leaderboard of `folder` (and its pictures) from every run folder under it: (the
    console table, or None when there is no run; the runs; a line per unreadable run folder).

    One process at a time: the processes of a sweep each rebuild it as they end, and the one that
    reads the run folders last must also write last, or an older view could overwrite a newer one.
    """
    with locked(folder / LOCK_FILE):
        runs, problems = collect_runs(folder)
        table = None
        if runs:
            rows = leaderboard_rows(runs, sort, ascending, baseline)
            table = write_leaderboard(folder, rows, sort, ascending, runs)
    return table, runs, problems
