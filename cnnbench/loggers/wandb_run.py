"""logger=wandb: one Weights & Biases run per cnnbench run (`pip install 'cnnbench[wandb]'`).

Config: the resolved config. History: every number of each epoch's record, at step = the epoch,
under metrics.json's names. At the end: the pictures (curves.png, confusion_matrix.png) as images,
and metrics.json's final and test numbers in the run's summary. The run is named after its folder
and grouped by its sweep (the sweep folder's name). Its files go to RUN_FOLDER/wandb/; with
`logger.wandb.mode=offline` (the default: no account, no network) nothing leaves the machine until
`wandb sync RUN_FOLDER/wandb/offline-run-*` uploads it. The run's id is kept in the run folder
(trackers.json), so that a resume goes on in the same W&B run.
"""

from pathlib import Path
from typing import Any

import wandb

from cnnbench.loggers.logged import LoggedRun, numbers

NOT_RESULTS = ("seed", "epochs")  # metrics.json's numbers that are not results


class WandbLogger:
    """One W&B run."""

    def __init__(self, tracked: Any) -> None:
        self.tracked = tracked
        self.ids = {"id": tracked.id}

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.tracked.log(numbers(record), step=record["epoch"])  # epoch too: a value to plot against

    def finish(self, metrics: dict[str, Any], files: list[Path]) -> None:
        pictures = {path.stem: wandb.Image(str(path)) for path in files if path.suffix == ".png"}
        if pictures:
            self.tracked.log(pictures, step=metrics["epochs_done"])
        # (the summary keeps each per-epoch series' last value: images_per_sec's mean would replace it)
        series = {key for record in metrics["history"] for key in record}
        self.tracked.summary.update(numbers(metrics, leave_out=(*NOT_RESULTS, *series)))
        self.tracked.finish(exit_code=0)

    def close(self, failed: bool) -> None:
        if not failed:  # stopped by a signal, to be resumed
            self.tracked.mark_preempting()
        self.tracked.finish(exit_code=1)


def start(run: LoggedRun) -> WandbLogger:
    """The W&B run of `run`: the one its folder kept (a resume), else a new one, which gets the
    epochs done so far at once."""
    options = run.options
    saved = run.saved.get("id")
    saved = saved if isinstance(saved, str) else None
    tracked = wandb.init(
        project=str(options.get("project") or "cnnbench"), entity=options.get("entity"),
        mode=options.get("mode") or "offline", name=run.folder.name, group=options.get("group") or run.sweep,
        dir=str(run.folder),  # its files in RUN_FOLDER/wandb/ (logged.WANDB_FOLDER)
        config=run.config, id=saved, resume="allow" if saved else None,
        allow_val_change=True,  # a resume may change the length, the schedule... (README, Resuming)
        # console off: cnnbench keeps its console log in run.log already, and W&B would wrap stdout
        settings=wandb.Settings(console="off"))
    logger = WandbLogger(tracked)
    for record in run.history if saved is None else []:  # a resumed run that chooses W&B only now
        logger.epoch(record, run.history)
    return logger
