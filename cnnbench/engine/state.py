"""A run, typed: what it is made of (Run, which build.py builds from the config), how far it got
and what it measured (RunState, which last.pt saves under its "progress" key), and the running sums
of the epoch in progress (EpochSums)."""

import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from cnnbench.data import Data
from cnnbench.engine.ema import WeightAverage
from cnnbench.runtime import distributed


@dataclass
class Run:
    """Everything one training run is made of, built from its config by `build_run`."""

    config: DictConfig  # the config as the run trains it (run_config): read, never changed
    data: Data
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    ema: WeightAverage | None = None  # the averaged weights (ema.decay > 0)


@dataclass
class RunState:
    """The progress of a run: `epoch` epochs are done, and `step` optimizer steps of the next one,
    whose running sums of every process are `epoch_sums`, so a run stopped mid-epoch resumes there.
    Plain data and CPU tensors only: a checkpoint holds it as it is."""

    epoch: int = 0
    step: int = 0
    epoch_sums: dict[str, Any] | None = None  # EpochSums.saved(): per process, in rank order
    rng: list[dict[str, Any]] | None = None  # every process's random generators at the last save
    best_val_acc: float = -1.0
    best_val_acc_ema: float | None = None  # the averaged weights' (ema.decay > 0)
    best_epoch: int = 0  # the epoch best.pt holds
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch done
    wall_time_s: float = 0.0  # training and validation of the epochs done
    skipped_batches: int = 0  # batches left out for a non-finite loss (on_nan=skip_batch)
    skipped_images: list[str] = field(default_factory=list)  # unreadable images left out
    per_class_acc: dict[str, float] = field(default_factory=dict)  # the last epoch's, on validation
    # each resume: where the run was (epoch, step) and the keys it changed ({key: [was, now]})
    resumes: list[dict[str, Any]] = field(default_factory=list)

    def saved(self) -> dict[str, Any]:
        """The state as a checkpoint stores it (under "progress")."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> "RunState":
        """The progress a checkpoint saved: under "progress", or, in checkpoints of earlier
        versions, as keys at its top level (those that it has; the others keep their defaults)."""
        saved = checkpoint.get("progress")
        if not isinstance(saved, dict):
            saved = checkpoint
        names = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in saved.items() if name in names})

    def finish_epoch(self, record: dict[str, Any]) -> None:
        """Epoch `record["epoch"]` is done: into the history, its time into the wall time."""
        self.history.append(record)
        self.epoch, self.step, self.epoch_sums = record["epoch"], 0, None
        self.wall_time_s += record["epoch_time_s"]

    def record_best(self, record: dict[str, Any], best_by: str) -> bool:
        """Keep the best accuracies so far (live and averaged weights); True when this epoch is the
        new best by `best_by` (live or ema), whose weights best.pt then holds. With no validation
        split nothing is chosen: every epoch is the one best.pt holds, the last one in the end."""
        if record["val_acc"] is None:
            self.best_epoch = record["epoch"]
            return True
        improved = {"live": record["val_acc"] > self.best_val_acc}
        self.best_val_acc = max(self.best_val_acc, record["val_acc"])
        if record["val_acc_ema"] is not None:
            earlier = self.best_val_acc_ema if self.best_val_acc_ema is not None else -1.0
            improved["ema"] = record["val_acc_ema"] > earlier
            self.best_val_acc_ema = max(earlier, record["val_acc_ema"])
        if improved.get(best_by, False):
            self.best_epoch = record["epoch"]
            return True
        return False

    def stalled(self, patience: int) -> bool:
        """True once `patience` epochs have passed without a better validation accuracy (0: never)."""
        return bool(patience) and self.epoch - self.best_epoch >= patience


class EpochSums:
    """This process's loss, correct answers and images of the epoch in progress, and its seconds.

    The sums stay on the device: reading them (.item()) would make the host wait for the device
    every step. A run resumed mid-epoch starts from the sums its checkpoint saved for this process
    (see `share`).
    """

    def __init__(self, device: torch.device, saved: dict[str, Any] | None = None) -> None:
        self.device = device
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen, seconds = 0, 0.0
        self.read_before = (0.0, 0.0, 0)  # loss, correct, images at the last read (see progress)
        if saved:
            loss, correct, self.seen = self.share(saved, distributed.rank(), distributed.world_size())
            self.loss += loss.to(device)
            self.correct += correct.to(device)
            seconds = saved["seconds"]
            self.read_before = (float(loss), float(correct), self.seen)
        self.clock = time.perf_counter() - seconds

    @staticmethod
    def share(saved: dict[str, Any], rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Process `rank`'s part of the sums a checkpoint saved (every process's, in rank order):
        its own; or, saved by another number of processes (checkpoint.restore_rng says so in its
        note), rank 0 takes them all and the others none, so the epoch's totals still count every
        image once whatever the number of processes now."""
        if len(saved["seen"]) == world:
            return saved["loss"][rank], saved["correct"][rank], int(saved["seen"][rank])
        if rank == 0:
            return saved["loss"].sum(), saved["correct"].sum(), int(sum(saved["seen"]))
        return torch.zeros(()), torch.zeros((), dtype=torch.long), 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One step's batch: its mean loss, its logits and labels."""
        self.loss += loss.detach().float() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)

    def seconds(self) -> float:
        """Seconds spent on this epoch so far (before a resume too)."""
        return time.perf_counter() - self.clock

    def progress(self) -> tuple[float, float, float, float]:
        """This process's mean loss and accuracy over the epoch so far (the progress bar's), and over
        the images since the last call (TensorBoard's points between epochs); waits for the device."""
        loss, correct = torch.stack([self.loss, self.correct.float()]).tolist()
        last_loss, last_correct, last_seen = self.read_before
        self.read_before = (loss, correct, self.seen)
        seen, recent = max(self.seen, 1), max(self.seen - last_seen, 1)
        return loss / seen, correct / seen, (loss - last_loss) / recent, (correct - last_correct) / recent

    def saved(self) -> dict[str, Any]:
        """Every process's sums, in rank order, as last.pt stores them (a collective: every process
        calls it at the same step)."""
        local = torch.stack([self.loss, self.correct.float(), torch.tensor(float(self.seen), device=self.device)])
        per_process = distributed.gather_across(local).cpu()
        return {"loss": per_process[:, 0], "correct": per_process[:, 1].long(),
                "seen": per_process[:, 2].long().tolist(), "seconds": self.seconds()}

    def totals(self) -> tuple[float, float, int]:
        """Mean loss, accuracy and images of the whole epoch over every process (one all-reduce)."""
        seen = torch.tensor(float(self.seen), device=self.device)
        loss, correct, images = distributed.sum_across(torch.stack([self.loss, self.correct.float(), seen])).tolist()
        images = max(images, 1)  # every batch skipped (on_nan=skip_batch): no division by zero
        return loss / images, correct / images, int(images)
