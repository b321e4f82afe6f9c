"""The training loop: `train(cfg, run_dir)` reads top to bottom, `train_epoch` is one pass over the
training data. What a run is built from is in build.py, its progress in state.py, how it is scored
in validation.py, what a checkpoint holds and how a run resumes from one in checkpoint.py, what it
reports in metrics.py."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from cnnbench.config.checks import check_config
from cnnbench.config.keys import model_name
from cnnbench.engine.board import Board, per_class_accuracy
from cnnbench.engine.build import Run, build_run
from cnnbench.engine.checkpoint import (
    checkpoint_state,
    find_resume_checkpoint,
    remove_unfinished_writes,
    resume,
    save_checkpoint,
    write_json,
)
from cnnbench.engine.faults import LossWatch, StopSignals, check_weights
from cnnbench.engine.metrics import hparams, minor_page_faults, summarise
from cnnbench.engine.state import EpochSums, RunState
from cnnbench.engine.validation import misclassified, validate
from cnnbench.errors import Interrupted
from cnnbench.models.cost import parameters
from cnnbench.runtime import distributed
from cnnbench.runtime.device import autocast, memory_format, rng_state, synchronize, to_device

log = logging.getLogger("cnnbench")


def train(cfg: DictConfig, run_dir: str | Path, resume_from: bool | str | None = None) -> dict[str, Any]:
    """Train cfg.model on cfg.data; leave checkpoints, TensorBoard events and metrics.json in run_dir.

    `resume_from`: a run folder or checkpoint to continue, True for run_dir's own last.pt, False
    for a new run; None: as cfg.resume says.
    """
    run_dir = Path(run_dir)
    check_config(cfg)  # bad values fail here, before any data is loaded
    checkpoint = find_resume_checkpoint(cfg.resume if resume_from is None else resume_from, run_dir)
    run = build_run(cfg)
    cfg = run.config  # from here on, the config as this run trains it (steps per epoch known)
    data, model, device = run.data, run.model, run.device
    main = distributed.is_main()  # distributed: only rank 0 logs and writes files
    if not main:
        log.setLevel(logging.WARNING)
    state = RunState()
    if checkpoint:
        state = resume(checkpoint, run)
        log.info("resuming from %s after epoch %d%s", checkpoint, state.epoch,
                 f", step {state.step}" if state.step else "")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_unfinished_writes(run_dir)
        write_json(OmegaConf.to_container(cfg, resolve=True), run_dir / "config.json")
    board = Board(run_dir, data.classes, data.mean, data.std, enabled=main)
    parameter_count = parameters(model)
    log.info("run folder: %s", run_dir.absolute())
    log.info("%s on %s: %s parameters, %d classes, %s images on %s, %s", model_name(cfg.model),
             cfg.data.name, f"{parameter_count:,}", data.num_classes, "x".join(map(str, data.image_size)),
             device, cfg.precision)
    if state.epoch == 0 and state.step == 0 and main:
        data.train.set_epoch(0)
        board.training_batch(*next(iter(data.train)))

    def save(name: str) -> None:
        # A finite loss does not make finite weights (a step can overflow them): never save those.
        # Every process checks (their weights are the same), so that all stop together.
        check_weights(model, state.epoch, state.step)
        if main:
            save_checkpoint(checkpoint_state(run, state), run_dir / name)

    def save_last() -> None:
        save("last.pt")

    confusion: list[list[int]] = []
    with StopSignals() as signals:
        for epoch in range(state.epoch, cfg.epochs):
            if state.stalled(cfg.early_stopping.patience):
                log.info("early stop: no better val acc for %d epochs since epoch %d",
                         cfg.early_stopping.patience, state.best_epoch)
                break
            faults = minor_page_faults()
            trained = train_epoch(run, epoch, state, save_last, signals)
            evaluation_start = time.perf_counter()
            val = None if trained is None else validate(
                run, stop=lambda step: signals.stop_now(step, cfg.log_every, device))
            if val is None:  # a signal came: last.pt holds where training got to
                save_last()
                raise Interrupted(signals.received.name, signals.received, stopped_at(state, epoch, cfg),
                                  str(run_dir))
            confusion = val["live"]["confusion"]
            record = epoch_record(run, epoch, trained, val, time.perf_counter() - evaluation_start)
            record["page_faults"] = minor_page_faults() - faults
            state.finish_epoch(record)
            state.per_class_acc = per_class_accuracy(confusion, data.classes)
            state.skipped_images = sorted(set(state.skipped_images) | skipped_images(run))
            board.epoch(record, confusion)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s  %.0f img/s  %.1f s",
                     epoch + 1, cfg.epochs, record["train_loss"], record["train_acc"], record["val_loss"],
                     record["val_acc"], f" (EMA {record['val_acc_ema']:.4f})" if run.ema else "",
                     record["images_per_sec"], record["epoch_time_s"])
            if state.record_best(record, cfg.ema.best_by if run.ema else "live"):
                save("best.pt")
            save_last()
            if main:
                write_json(summarise(cfg, state, parameter_count, device, finished=False), run_dir / "metrics.json")

    metrics = summarise(cfg, state, parameter_count, device, finished=True)
    if not confusion and state.history:  # resumed a finished run: evaluate once for the pictures
        confusion = validate(run)["live"]["confusion"]
    if main:
        write_json(metrics, run_dir / "metrics.json")
        final = {f"hparam/{key}": metrics[key] for key in ("best_val_acc", "final_val_acc")
                 if metrics[key] is not None}
        board.finish(state.history, confusion, misclassified(model, data.val, device, cfg),
                     hparams(cfg, run_dir), final)
    log.info("best val acc %.4f at epoch %d; final %.4f. Checkpoints: %s", metrics["best_val_acc"],
             metrics["best_epoch"], metrics["final_val_acc"], run_dir.absolute())
    if distributed.launched_by_torchrun():
        # every process says what it measured: all must agree, the metrics were all-reduced
        print(f"rank {distributed.rank()}: best val acc {metrics['best_val_acc']:.6f}", flush=True)
        distributed.stop()
    return metrics


@dataclass
class TrainedEpoch:
    """What one pass over the training data measured, over every process."""

    loss: float
    acc: float
    images: int
    seconds: float
    # the run's first step (compiling, kernel tuning), reported apart from the speed: its seconds
    # and images (0 in every epoch but the run's first)
    warmup_s: float = 0.0
    warmup_images: int = 0


def train_epoch(run: Run, epoch: int, state: RunState, save_last: Callable[[], None],
                signals: StopSignals) -> TrainedEpoch | None:
    """One pass over the training data, or the rest of one (from state.step, after a resume).

    None when a signal asked the run to stop (state says how far it got). Keeps state.step and
    state.epoch_sums current, and saves last.pt every checkpoint.every_n_steps steps.
    """
    cfg, model, optimizer, scaler, device = run.config, run.model, run.optimizer, run.scaler, run.device
    model.train()
    start, steps = state.step, cfg.steps_per_epoch
    run.data.train.set_epoch(epoch, start)  # shuffle and augmentation depend only on (seed, epoch)
    layout = memory_format(cfg.channels_last)
    sums = EpochSums(device, state.epoch_sums)
    watch = LossWatch(cfg.on_nan, epoch, device)
    warmup = None  # the run's first step builds kernels: timed on its own

    def keep_progress(step: int) -> None:
        # every process's sums and random generators, for an exact resume on each (nothing random
        # is drawn between here and the checkpoint that saves them)
        state.step, state.epoch_sums = step, sums.saved()
        state.rng = distributed.gather_objects(rng_state())

    every = cfg.checkpoint.every_n_steps
    bar = tqdm(run.data.train, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=steps, initial=start,
               leave=False, disable=None if distributed.is_main() else True)
    for step, (images, labels) in enumerate(bar, start=start):
        if step >= steps:  # limit_batches
            break
        images, labels = to_device(images, device, memory_format=layout), to_device(labels, device)
        with autocast(device, cfg.precision):
            loss, logits = classification_loss(model(images), labels, run.criterion, cfg.aux_loss_weight)
        if watch.skip_batch(loss, step):
            state.skipped_batches += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        run.scheduler.step()  # every scheduler here counts optimizer steps, not epochs
        if run.ema:
            run.ema.update(model)
        sums.add(loss, logits, labels)
        if epoch == 0 and step == start == 0:  # torch.compile compiles, cuDNN tries its kernels
            synchronize(device)
            warmup = (sums.seconds(), len(labels) * distributed.world_size())
        if step % cfg.log_every == 0:
            watch.check()  # the bar reads the device now anyway
            loss_so_far, acc_so_far = sums.so_far()
            bar.set_postfix(loss=f"{loss_so_far:.4f}", acc=f"{acc_so_far:.4f}")
        stop = signals.stop_now(step, cfg.log_every, device)
        if stop or (every and (step + 1) % every == 0 and step + 1 < steps):
            watch.check()  # never save weights a NaN has reached
            keep_progress(step + 1)
            if stop:
                return None
            save_last()
    watch.check()
    keep_progress(steps)
    # One all-reduce per epoch: every process reports the same numbers, over all the shards.
    loss, acc, images = sums.totals()
    return TrainedEpoch(loss, acc, images, state.epoch_sums["seconds"], *(warmup or (0.0, 0)))


def epoch_record(run: Run, epoch: int, trained: TrainedEpoch, val: dict[str, Any],
                 evaluation_s: float) -> dict[str, Any]:
    """One epoch's line of the history: losses, accuracies, learning rate, speed, time."""
    steady = trained.images > trained.warmup_images and trained.seconds > trained.warmup_s
    ema = val["ema"] or {}
    return {"epoch": epoch + 1, "train_loss": trained.loss, "train_acc": trained.acc,
            "val_loss": val["live"]["loss"], "val_acc": val["live"]["acc"],
            "val_loss_ema": ema.get("loss"), "val_acc_ema": ema.get("acc"),
            "lr": run.optimizer.param_groups[0]["lr"], "train_images": trained.images,
            "images_per_sec": (trained.images - trained.warmup_images) / (trained.seconds - trained.warmup_s)
            if steady else trained.images / trained.seconds,
            "epoch_time_s": trained.seconds + evaluation_s, "warmup_s": trained.warmup_s}


def stopped_at(state: RunState, epoch: int, cfg: DictConfig) -> str:
    """Where a stopped run got to, in words."""
    if state.step >= cfg.steps_per_epoch:
        return f"in epoch {epoch + 1}'s evaluation (its training steps are saved)"
    return f"at epoch {epoch + 1}, step {state.step} of {cfg.steps_per_epoch}"


def skipped_images(run: Run) -> set[str]:
    """Images the loaders left out as unreadable (data.bad_images=skip)."""
    return getattr(run.data.train, "skipped", set()) | getattr(run.data.val, "skipped", set())


def classification_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor,
                        criterion: nn.Module, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; auxiliary heads (GoogLeNet in training) add aux_weight x their loss."""
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, labels), outputs
    main, *auxiliary = outputs
    loss = criterion(main, labels) + aux_weight * sum(criterion(aux, labels) for aux in auxiliary)
    return loss, main
