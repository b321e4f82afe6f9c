"""The training loop: `train(cfg, run_dir)` reads top to bottom, `train_epoch` is one pass over the
training data. What a run is built from is in build.py, its progress in state.py, how it is scored
in validation.py, what a checkpoint holds and how a run resumes from one in checkpoint.py, what it
reports in metrics.py."""

import contextlib
import logging
import math
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
from cnnbench.data.folder import other_images
from cnnbench.data.mixing import Mixing, mix_batch
from cnnbench.engine.board import Board
from cnnbench.engine.build import build_run
from cnnbench.engine.checkpoint import (
    checkpoint_state,
    load_checkpoint,
    remove_unfinished_writes,
    resume,
    save_checkpoint,
    write_json,
)
from cnnbench.engine.faults import LossWatch, StopSignals, check_weights
from cnnbench.engine.metrics import hparams, minor_page_faults, summarise, tracker_tags
from cnnbench.engine.resume import continued_config, refuse_changes
from cnnbench.engine.run_folder import METRICS_FILE, PICTURES, find_resume_checkpoint
from cnnbench.engine.state import EpochSums, Run, RunState
from cnnbench.engine.validation import misclassified, per_class_accuracy, score_test, validate
from cnnbench.errors import CnnbenchError, Interrupted
from cnnbench.insight.gradients import LayerWatch
from cnnbench.loggers import Loggers, check_loggers
from cnnbench.models.cost import parameters
from cnnbench.models.torchvision_weights import freeze_pretrained
from cnnbench.runtime import distributed
from cnnbench.runtime.device import autocast, memory_format, rng_state, synchronize, to_device, unwrap

log = logging.getLogger("cnnbench")


def train(cfg: DictConfig, run_dir: str | Path, resume_from: bool | str | None = None,
          accepted: Callable[[], None] | None = None, check_claim: Callable[[], None] | None = None,
          sweep: str | None = None) -> dict[str, Any]:
    """Train cfg.model on cfg.data; leave checkpoints, TensorBoard events and metrics.json in run_dir,
    and report to the loggers cfg.logger chooses (cnnbench/loggers/).

    `resume_from`: a run folder or checkpoint to continue, True for run_dir's own last.pt, False
    for a new run; None: as cfg.resume says. `accepted()` is called once the run is accepted (its
    config checked, a checkpoint to resume matched), before anything is written in run_dir.
    `check_claim`: called before every write of a run file; it raises (and the run stops) when
    run_dir is no longer this process's (sweep/claims.py). `sweep`: the sweep folder's name, for a
    sweep's run (the trackers group its runs by it).
    """
    run_dir = Path(run_dir)
    check_config(cfg)  # bad values fail here, before any data is loaded
    check_loggers(cfg.get("logger"))  # and a logger whose package is missing (.get: configs saved before it)
    checkpoint_path = find_resume_checkpoint(cfg.resume if resume_from is None else resume_from, run_dir)
    saved = load_checkpoint(checkpoint_path) if checkpoint_path else None
    if saved:  # what may not change on resume is refused before the data loads (engine/resume.py)
        cfg = continued_config(saved["config"], cfg)
        refuse_changes(saved["config"], cfg, checkpoint_path, RunState.from_checkpoint(saved).epoch)
        moved = other_images(cfg.data, saved.get("data_identity"), saved["config"].get("data", {}).get("root"))
        if moved:
            raise CnnbenchError(f"resume={checkpoint_path}: {moved}; point data.root at the images the run "
                                "trained on, or start a new run in another folder (hydra.run.dir=DIR)")
    run = build_run(cfg, resuming=saved is not None)
    cfg = run.config  # from here on, the config as this run trains it (steps per epoch known)
    data, model, device = run.data, run.model, run.device
    main = distributed.is_main()  # distributed: only rank 0 logs and writes files
    if not main:
        log.setLevel(logging.WARNING)
    state = RunState()
    if saved:
        state = resume(saved, checkpoint_path, run)

    def still_ours() -> None:
        # another copy of a sweep may have taken the folder over meanwhile: then nothing more is written
        if check_claim is not None:
            check_claim()

    if accepted:
        still_ours()
        accepted()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        still_ours()
        remove_unfinished_writes(run_dir)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        write_json(resolved, run_dir / "config.json")
        write_json(data.split, run_dir / "split.json")  # which images went where
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
            still_ours()
            save_checkpoint(checkpoint_state(run, state), run_dir / name)

    def save_last() -> None:
        save("last.pt")

    loggers = Loggers()  # the trackers cfg.logger chooses besides TensorBoard (cnnbench/loggers/)
    if main:  # rank 0's alone
        still_ours()  # (the run folder keeps their ids)
        loggers = Loggers.start(resolved, run_dir, state.history, tracker_tags(cfg, run_dir, device), sweep,
                                resumed=saved is not None)
    confusion: list[list[int]] = []
    pictured = 0  # the last epoch whose filters and feature maps TensorBoard got
    with loggers:  # a run that fails or is stopped closes its tracker runs as such
        with StopSignals() as signals:
            for epoch in range(state.epoch, cfg.epochs):
                if state.stalled(cfg.early_stopping.patience):
                    log.info("early stop: no better val acc for %d epochs since epoch %d",
                             cfg.early_stopping.patience, state.best_epoch)
                    break
                faults = minor_page_faults()
                trained = train_epoch(run, epoch, state, save_last, signals, board)
                evaluation_start = time.perf_counter()
                val = None if trained is None else validate(
                    run, stop=lambda step: signals.stop_now(step, cfg.log_every, device))
                if val is None:  # a signal came: last.pt holds where training got to
                    save_last()
                    raise Interrupted(signals.received.name, signals.received, stopped_at(state, epoch, cfg),
                                      str(run_dir))
                confusion = val["live"]["confusion"] if val["live"] else []
                record = epoch_record(run, epoch, trained, val, time.perf_counter() - evaluation_start)
                record["page_faults"] = minor_page_faults() - faults
                state.finish_epoch(record)
                state.per_class_acc = per_class_accuracy(confusion, data.classes) if confusion else {}
                state.skipped_images = sorted(set(state.skipped_images) | skipped_images(run))
                board.epoch(record, confusion)
                if pictures_due(cfg, record["epoch"]):  # what the convolutions learned (insight/features.py)
                    board.network(unwrap(model), record["epoch"], data.val)
                    pictured = record["epoch"]
                log.info("epoch %d/%d  train loss %.4f acc %.4f  %s  %.0f img/s  %.1f s", epoch + 1,
                         cfg.epochs, record["train_loss"], record["train_acc"], validation_words(record),
                         record["images_per_sec"], record["epoch_time_s"])
                if state.record_best(record, cfg.ema.best_by if run.ema else "live"):
                    save("best.pt")
                save_last()
                if main:  # (save_last has just checked the claim)
                    write_json(summarise(cfg, state, parameter_count, device, data, None, finished=False),
                               run_dir / "metrics.json")
                    loggers.epoch(record, state.history)

        if state.epoch < cfg.epochs and pictured != state.epoch and pictures_due(cfg, cfg.epochs):
            board.network(unwrap(model), state.epoch, data.val)  # stopped early: its last epoch's too
        if not confusion and state.history and data.val is not None:  # a finished run resumed: the pictures
            confusion = validate(run)["live"]["confusion"]
        # the test split, scored once, now: nothing was chosen on it (README, Validation and test)
        test = score_test(run, run_dir / "best.pt") if state.history else None
        metrics = summarise(cfg, state, parameter_count, device, data, test, finished=True)
        if main:
            still_ours()
            write_json(metrics, run_dir / "metrics.json")
            final = {f"hparam/{key}": metrics[key] for key in ("best_val_acc", "final_val_acc", "test_acc")
                     if metrics[key] is not None}
            shown = data.val if data.val is not None else data.test  # no validation: the test's, at the end
            board.finish(state.history, confusion or (test["final"]["confusion"] if test else []),
                         misclassified(model, shown, device, cfg) if shown is not None else None,
                         hparams(cfg, run_dir), final, test)
            kept = [run_dir / name for name in ("best.pt", *PICTURES, METRICS_FILE)]  # for the trackers
            loggers.finish(metrics, [path for path in kept if path.is_file()])
    log.info("%s. Checkpoints: %s", result_words(metrics), run_dir.absolute())
    if distributed.launched_by_torchrun():
        # every process says what it measured: all must agree, the metrics were all-reduced
        measured = ("best val acc", metrics["best_val_acc"]) if metrics["best_val_acc"] is not None \
            else ("test acc", metrics["test_acc"] or 0.0)
        print(f"rank {distributed.rank()}: {measured[0]} {measured[1]:.6f}", flush=True)
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
                signals: StopSignals, board: Board | None = None) -> TrainedEpoch | None:
    """One pass over the training data, or the rest of one (from state.step, after a resume).

    None when a signal asked the run to stop (state says how far it got). Keeps state.step and
    state.epoch_sums current, saves last.pt every checkpoint.every_n_steps steps, and gives `board`
    the training curves between epochs and the gradient statistics (insight.gradient_stats_every);
    no board (the benchmarks): neither.
    """
    cfg, model, optimizer, scaler, device = run.config, run.model, run.optimizer, run.scaler, run.device
    model.train()
    if cfg.model.get("weights"):  # fine-tuning: only the new head learns in the first finetune.freeze_epochs
        freeze_pretrained(unwrap(model), frozen=epoch < cfg.finetune.freeze_epochs)
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
    accumulate = cfg.accumulate_grad_batches  # batches per optimizer step
    # MixUp / CutMix (data/mixing.py), but not on the one fixed batch that overfit must learn
    mixing = Mixing.from_config(cfg.data.get("augment") or {})
    mixing = mixing if mixing.active and not cfg.overfit else None
    added = 0  # batches whose gradients wait for the next optimizer step
    updates = math.ceil(steps / accumulate)  # optimizer steps per epoch: the x-axis of the curves between epochs
    stats_every = (cfg.get("insight") or {}).get("gradient_stats_every", 0) if board and board.enabled else 0
    layers = LayerWatch(unwrap(model), activations=not cfg.compile) if stats_every else None
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(run.data.train, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=steps, initial=start,
               leave=False, disable=None if distributed.is_main() else True)
    for step, (images, labels) in enumerate(bar, start=start):
        if step >= steps:  # limit_batches
            break
        # the last batch of an optimizer step's group (the epoch's last group may be shorter)
        group_ends = (step + 1) % accumulate == 0 or step + 1 == steps
        images, labels = to_device(images, device, memory_format=layout), to_device(labels, device)
        targets = labels  # what the loss compares with: the labels, or a mixed batch's shares of two
        mix = mixing.draw((cfg.seed, distributed.rank(), epoch, step), len(labels), *images.shape[-2:]) \
            if mixing else None
        if mix:  # accuracy is then counted against the class with the larger share of each image
            images, targets, labels = mix_batch(images, labels, run.data.num_classes, mix)
        optimizer_step = step // accumulate + 1  # the optimizer step this batch is part of: this epoch's, from 1
        update = epoch * updates + optimizer_step  # ... and the run's
        # one optimizer step in every `stats_every`: its last batch's activations, its gradients
        measured = layers is not None and group_ends and (update - 1) % stats_every == 0
        with layers.activations_of_next_forward() if measured else contextlib.nullcontext():
            with autocast(device, cfg.precision):
                loss, logits = classification_loss(model(images), targets, run.criterion, cfg.aux_loss_weight)
        if watch.skip_batch(loss, step):
            state.skipped_batches += 1
        else:
            # each batch's mean loss over the group's batch count: the group's summed gradients are
            # then those of one batch of all its images (exactly so without BatchNorm)
            # (with on_nan=skip_batch every batch syncs: the group's last may be skipped)
            with gradient_sync(model, group_ends or cfg.on_nan == "skip_batch"):
                scaler.scale(loss / group_size(step, accumulate, steps)).backward()
            sums.add(loss, logits, labels)
            added += 1
        if not group_ends:
            continue
        if added:  # (a group whose every batch was skipped takes no step, as a skipped batch alone)
            if measured:  # before clipping: the gradients the loss gave (the fp16 loss scale divided out)
                board.gradients(update, layers.measure(scaler.get_scale() if scaler.is_enabled() else 1.0))
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            run.scheduler.step()  # every scheduler here counts optimizer steps, not epochs
            if run.ema:
                run.ema.update(model)
            optimizer.zero_grad(set_to_none=True)
            added = 0
        if epoch == 0 and step + 1 == accumulate and start == 0:  # compiling, cuDNN's kernel tuning
            synchronize(device)
            warmup = (sums.seconds(), len(labels) * accumulate * distributed.world_size())
        if (optimizer_step - 1) % cfg.log_every == 0:
            watch.check()  # the bar reads the device now anyway
            loss_so_far, acc_so_far, recent_loss, recent_acc = sums.progress()
            bar.set_postfix(loss=f"{loss_so_far:.4f}", acc=f"{acc_so_far:.4f}")
            # the same numbers, between epochs: the warm-up and a loss spike inside an epoch show
            if board:
                board.training_steps(update, recent_loss, recent_acc, optimizer.param_groups[0]["lr"])
        # only between optimizer steps: a checkpoint never holds half a group's gradients
        stop = signals.stop_now(optimizer_step - 1, cfg.log_every, device)
        if stop or (every and optimizer_step % every == 0 and step + 1 < steps):
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
    live, ema = val["live"] or {}, val["ema"] or {}  # none: no validation split
    return {"epoch": epoch + 1, "train_loss": trained.loss, "train_acc": trained.acc,
            "val_loss": live.get("loss"), "val_acc": live.get("acc"),
            "val_loss_ema": ema.get("loss"), "val_acc_ema": ema.get("acc"),
            "lr": run.optimizer.param_groups[0]["lr"], **pretrained_rate(run), "train_images": trained.images,
            "images_per_sec": (trained.images - trained.warmup_images) / (trained.seconds - trained.warmup_s)
            if steady else trained.images / trained.seconds,
            "epoch_time_s": trained.seconds + evaluation_s, "warmup_s": trained.warmup_s}


def pretrained_rate(run: Run) -> dict[str, float]:
    """A fine-tuning run's second learning rate, the pretrained part's (`lr` is the new head's)."""
    groups = run.optimizer.param_groups
    return {"lr_pretrained": groups[1]["lr"]} if len(groups) > 1 else {}


def validation_words(record: dict[str, Any]) -> str:
    """`val loss 0.3412 acc 0.8812 (EMA 0.8934)`, or that there is no validation."""
    if record["val_acc"] is None:
        return "no validation (data.val_split=0)"
    ema = f" (EMA {record['val_acc_ema']:.4f})" if record.get("val_acc_ema") is not None else ""
    return f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}{ema}"


def result_words(metrics: dict[str, Any]) -> str:
    """The run's end in a line: what was chosen on validation, and the test score of that choice."""
    if metrics["best_val_acc"] is not None:
        words = (f"best val acc {metrics['best_val_acc']:.4f} at epoch {metrics['best_epoch']}; "
                 f"final {metrics['final_val_acc']:.4f}")
    else:
        words = f"no validation: best.pt is the last epoch ({metrics['best_epoch']})"
    if metrics["test_acc"] is not None:
        words += f"; test acc {metrics['test_acc']:.4f} (best.pt, scored once)"
    return words


def pictures_due(cfg: DictConfig, epoch: int) -> bool:
    """Whether epoch `epoch` (from 1) ends with the filter and feature-map pictures: the first, the
    last, and every insight.pictures_every between (insight.pictures=false: never)."""
    insight = cfg.get("insight") or {}  # (configs saved before the key: as the defaults)
    if not insight.get("pictures", True):
        return False
    every = insight.get("pictures_every", 0)
    return epoch in (1, cfg.epochs) or bool(every) and epoch % every == 0


def stopped_at(state: RunState, epoch: int, cfg: DictConfig) -> str:
    """Where a stopped run got to, in words."""
    if state.step >= cfg.steps_per_epoch:
        return f"in epoch {epoch + 1}'s evaluation (its training steps are saved)"
    return f"at epoch {epoch + 1}, step {state.step} of {cfg.steps_per_epoch}"


def skipped_images(run: Run) -> set[str]:
    """Images the loaders left out as unreadable (data.bad_images=skip)."""
    return set().union(*(getattr(stream, "skipped", set()) for stream in (run.data.train, run.data.val, run.data.test)))


def group_size(step: int, accumulate: int, steps: int) -> int:
    """How many batches the optimizer step that batch `step` belongs to sums (the epoch's `steps`
    batches in groups of `accumulate`, from the epoch's first; its last group may be shorter)."""
    return min(accumulate, steps - step // accumulate * accumulate)


def gradient_sync(model: nn.Module, now: bool):
    """Under DDP, all-reduce the gradients with a group's last batch only (no_sync before it); the
    sum is the same, the traffic one k-th."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if now or no_sync is None else no_sync()


def classification_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor,
                        criterion: nn.Module, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; auxiliary heads (GoogLeNet in training) add aux_weight x their loss."""
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, labels), outputs
    main, *auxiliary = outputs
    loss = criterion(main, labels) + aux_weight * sum(criterion(aux, labels) for aux in auxiliary)
    return loss, main
