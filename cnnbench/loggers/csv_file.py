"""logger=csv: metrics.csv in the run folder, one row per epoch with every number of that epoch's
record in metrics.json's history, under the same names (Keras's CSVLogger, Lightning's CSVLogger),
for a spreadsheet or pandas.

The whole table is written again after each epoch, whole or not at all (files.write_whole): a
reader never meets half a row, and a resumed run's table holds its earlier epochs too, since they
come from the history the checkpoint carried.
"""

import csv
import io
from pathlib import Path
from typing import Any

from cnnbench.files import write_text_whole
from cnnbench.loggers.logged import CSV_FILE, LoggedRun


class CsvLogger:
    """The run's metrics.csv."""

    ids = None  # nothing for a resume to continue: the table is written from the whole history

    def __init__(self, path: Path) -> None:
        self.path = path

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        write_table(self.path, history)

    def finish(self, metrics: dict[str, Any], files: list[Path]) -> None:
        pass  # the last epoch wrote the whole table

    def close(self, failed: bool) -> None:
        pass


def start(run: LoggedRun) -> CsvLogger:
    """The CSV logger of `run`; a resumed run's epochs so far are in its table at once."""
    logger = CsvLogger(run.folder / CSV_FILE)
    if run.history:
        write_table(logger.path, run.history)
    return logger


def write_table(path: Path, history: list[dict[str, Any]]) -> None:
    """The history as a CSV table: a column per key in the order the records have them (a key only
    some epochs have, such as a fine-tuning run's lr_pretrained, is empty in the others), a row per
    epoch. An empty cell is None (no validation split); numbers are written as Python's repr, which
    reads back to the same float."""
    columns = list(dict.fromkeys(key for record in history for key in record))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_whole(path, text.getvalue())
