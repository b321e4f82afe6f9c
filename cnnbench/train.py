"""The training loop: `train(cfg, run_dir)` reads top to bottom, `train_epoch` is one pass over the
training data. What a run is built from is in build.py, how it is scored in validation.py, what a
checkpoint holds and how a run resumes from one in checkpoint.py, what it reports in metrics.py."""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from cnnbench import distributed
from cnnbench.board import Board, per_class_accuracy
from cnnbench.build import Run, build_run
from cnnbench.checkpoint import (
    checkpoint_state,
    find_resume_checkpoint,
    remove_unfinished_writes,
    resume,
    save_checkpoint,
    write_json,
)
from cnnbench.config import check_config
from cnnbench.data import Data
from cnnbench.device import autocast, memory_format, rng_state, synchronize, to_device
from cnnbench.errors import Interrupted
from cnnbench.faults import LossWatch, StopSignals
from cnnbench.metrics import hparams, minor_page_faults, model_name, summarise
from cnnbench.validation import evaluate, misclassified

log = logging.getLogger("cnnbench")


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train cfg.model on cfg.data; leave checkpoints, TensorBoard events and metrics.json in run_dir."""
    run_dir = Path(run_dir)
    check_config(cfg)  # bad values fail here, before any data is loaded
    if cfg.data.get("root"):  # stored absolute: the checkpoint's config works from any folder
        cfg.data.root = str(Path(cfg.data.root).expanduser().absolute())
    resume_from = find_resume_checkpoint(cfg.resume, run_dir)
    run = build_run(cfg)
    data, model, device = run.data, run.model, run.device
    main = distributed.is_main()  # distributed: only rank 0 logs and writes files
    if not main:
        log.setLevel(logging.WARNING)
    state = new_state()
    if resume_from:
        state = resume(resume_from, run, cfg)
        log.info("resuming from %s after epoch %d%s", resume_from, state["epoch"],
                 f", step {state['step']}" if state["step"] else "")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_unfinished_writes(run_dir)
        write_json(OmegaConf.to_container(cfg, resolve=True), run_dir / "config.json")
    board = Board(run_dir, data.classes, data.mean, data.std, enabled=main)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("run folder: %s", run_dir.absolute())
    log.info("%s on %s: %s parameters, %d classes, %s images on %s, %s", model_name(cfg),
             cfg.data.name, f"{parameters:,}", data.num_classes, "x".join(map(str, data.image_size)),
             device, cfg.precision)
    if state["epoch"] == 0 and state["step"] == 0 and main:
        data.train.set_epoch(0)
        board.training_batch(*next(iter(data.train)))

    def save_last() -> None:
        if main:
            save_checkpoint(checkpoint_state(run, cfg, state), run_dir / "last.pt")

    confusion: list[list[int]] = []
    with StopSignals() as signals:
        for epoch in range(state["epoch"], cfg.epochs):
            if stop_early(state, cfg.early_stopping.patience):
                log.info("early stop: no better val acc for %d epochs since epoch %d",
                         cfg.early_stopping.patience, state["best_epoch"])
                break
            faults = minor_page_faults()
            trained = train_epoch(run, cfg, epoch, state, save_last, signals)
            evaluation_start = time.perf_counter()
            val = None if trained is None else validate(
                run, cfg, stop=lambda step: signals.stop_now(step, cfg.log_every, device))
            if val is None:  # a signal came: last.pt holds where training got to
                save_last()
                raise Interrupted(signals.received.name, signals.received, stopped_at(state, epoch, cfg),
                                  str(run_dir))
            confusion = val["live"]["confusion"]
            record = epoch_record(run, epoch, trained, val, time.perf_counter() - evaluation_start, state)
            record["page_faults"] = minor_page_faults() - faults
            state["history"].append(record)
            state.update(epoch=epoch + 1, step=0, epoch_sums=None)
            state["wall_time_s"] += record["epoch_time_s"]
            state["per_class_acc"] = per_class_accuracy(confusion, data.classes)
            state["skipped_images"] = sorted(set(state["skipped_images"]) | skipped_images(data))
            board.epoch(record, confusion)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s  %.0f img/s  %.1f s",
                     epoch + 1, cfg.epochs, record["train_loss"], record["train_acc"], record["val_loss"],
                     record["val_acc"], f" (EMA {record['val_acc_ema']:.4f})" if run.ema else "",
                     record["images_per_sec"], record["epoch_time_s"])
            if record_best(state, record, cfg.ema.best_by if run.ema else "live") and main:
                save_checkpoint(checkpoint_state(run, cfg, state), run_dir / "best.pt")
            save_last()
            if main:
                write_json(summarise(cfg, state, parameters, device, finished=False),
                           run_dir / "metrics.json")

    metrics = summarise(cfg, state, parameters, device, finished=True)
    if not confusion and state["history"]:  # resumed a finished run: evaluate once for the pictures
        val = evaluate(model, data.val, device, cfg.precision, cfg.channels_last, cfg.limit_batches,
                       cfg.tta, num_classes=data.num_classes)
        confusion = val["confusion"]
    if main:
        write_json(metrics, run_dir / "metrics.json")
        final = {f"hparam/{key}": metrics[key] for key in ("best_val_acc", "final_val_acc")
                 if metrics[key] is not None}
        board.finish(state["history"], confusion, misclassified(model, data.val, device, cfg),
                     hparams(cfg, run_dir), final)
    log.info("best val acc %.4f at epoch %d; final %.4f. Checkpoints: %s", metrics["best_val_acc"],
             metrics["best_epoch"], metrics["final_val_acc"], run_dir.absolute())
    if distributed.launched_by_torchrun():
        # every process says what it measured: all must agree, the metrics were all-reduced
        print(f"rank {distributed.rank()}: best val acc {metrics['best_val_acc']:.6f}", flush=True)
        distributed.stop()
    return metrics


def validate(run: Run, cfg: DictConfig, stop: Callable[[int], bool]) -> dict[str, Any] | None:
    """The live weights' scores on the validation data, and the averaged weights' (ema.decay > 0);
    None when a signal stopped it."""
    scores = {}
    models = {"live": run.model, "ema": run.ema.model if run.ema else None}
    for name, model in models.items():
        if model is None:
            scores[name] = None
            continue
        if name == "ema":
            run.ema.same_on_every_process()
        scores[name] = evaluate(model, run.data.val, run.device, cfg.precision, cfg.channels_last,
                                cfg.limit_batches, cfg.tta, stop=stop, num_classes=run.data.num_classes)
        if scores[name] is None:
            return None
    return scores


def epoch_record(run: Run, epoch: int, trained: tuple[float, float, int, float], val: dict[str, Any],
                 evaluation_s: float, state: dict[str, Any]) -> dict[str, Any]:
    """One epoch's line of the history: losses, accuracies, learning rate, speed, time."""
    train_loss, train_acc, seen, train_time = trained
    # the run's first step (compiling, kernel tuning) is reported apart from the speed
    warmup_s, warmup_images = state.pop("warmup", None) or (0.0, 0)
    steady = seen > warmup_images and train_time > warmup_s
    ema = val["ema"] or {}
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val["live"]["loss"], "val_acc": val["live"]["acc"],
            "val_loss_ema": ema.get("loss"), "val_acc_ema": ema.get("acc"),
            "lr": run.optimizer.param_groups[0]["lr"], "train_images": seen,
            "images_per_sec": (seen - warmup_images) / (train_time - warmup_s) if steady
            else seen / train_time,
            "epoch_time_s": train_time + evaluation_s, "warmup_s": warmup_s}


def record_best(state: dict[str, Any], record: dict[str, Any], best_by: str) -> bool:
    """Keep the best accuracies so far (live and averaged weights); True when this epoch is the
    new best by `best_by` (live or ema), whose weights best.pt then holds."""
    improved = {"live": record["val_acc"] > state["best_val_acc"]}
    state["best_val_acc"] = max(state["best_val_acc"], record["val_acc"])
    if record["val_acc_ema"] is not None:
        improved["ema"] = record["val_acc_ema"] > (state.get("best_val_acc_ema") or -1.0)
        state["best_val_acc_ema"] = max(state.get("best_val_acc_ema") or -1.0, record["val_acc_ema"])
    if improved.get(best_by, False):
        state["best_epoch"] = record["epoch"]
        return True
    return False


def new_state() -> dict[str, Any]:
    """The progress of a run that has not started (train() updates it; last.pt saves it).

    `epoch` epochs are done, and `step` optimizer steps of the next one, whose loss and accuracy
    sums so far are `epoch_sums`: a run stopped mid-epoch resumes there.
    """
    return {"epoch": 0, "step": 0, "epoch_sums": None, "rng": None, "best_val_acc": -1.0,
            "best_val_acc_ema": None, "best_epoch": 0, "history": [], "wall_time_s": 0.0,
            "skipped_batches": 0, "skipped_images": []}


def train_epoch(run: Run, cfg: DictConfig, epoch: int, state: dict[str, Any],
                save_last: Callable[[], None], signals: StopSignals
                ) -> tuple[float, float, int, float] | None:
    """One pass over the training data, or the rest of one (from state["step"], after a resume).

    Returns mean loss, accuracy, number of images and seconds spent, all for the whole epoch;
    None when a signal asked the run to stop (state says how far it got). Keeps state["step"]
    and state["epoch_sums"] current, and saves last.pt every checkpoint.every_n_steps steps.
    """
    model, optimizer, scaler, device = run.model, run.optimizer, run.scaler, run.device
    model.train()
    start = state["step"]
    run.data.train.set_epoch(epoch, start)  # shuffle and augmentation depend only on (seed, epoch)
    layout = memory_format(cfg.channels_last)
    # Sums stay on the device: reading them (.item()) would wait for the device every step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, seconds = 0, 0.0
    if state["epoch_sums"]:  # resumed mid-epoch: this process's sums so far
        rank, sums = distributed.rank(), state["epoch_sums"]
        loss_sum += sums["loss"][rank].to(device)
        correct += sums["correct"][rank].to(device)
        seen, seconds = sums["seen"][rank], sums["seconds"]
    clock = time.perf_counter() - seconds
    watch = LossWatch(cfg.on_nan, epoch, device)
    first_of_run = epoch == 0 and start == 0  # its first step builds kernels: timed on its own

    def keep_progress(step: int) -> None:
        # every process's sums, in rank order: rank 0 saves them for all
        local = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device)])
        per_process = distributed.gather_across(local).cpu()
        state["step"] = step
        state["epoch_sums"] = {"loss": per_process[:, 0], "correct": per_process[:, 1].long(),
                               "seen": per_process[:, 2].long().tolist(),
                               "seconds": time.perf_counter() - clock}
        # every process's random generators, for an exact resume on each (nothing random is drawn
        # between here and the checkpoint that saves them)
        state["rng"] = distributed.gather_objects(rng_state())

    every = cfg.checkpoint.every_n_steps
    bar = tqdm(run.data.train, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=cfg.steps_per_epoch,
               initial=start, leave=False, disable=None if distributed.is_main() else True)
    for step, (images, labels) in enumerate(bar, start=start):
        if step >= cfg.steps_per_epoch:  # limit_batches
            break
        images = to_device(images, device, memory_format=layout)
        labels = to_device(labels, device)
        with autocast(device, cfg.precision):
            outputs = model(images)
            loss, logits = classification_loss(outputs, labels, run.criterion, cfg.aux_loss_weight)
        if watch.skip_batch(loss, step):
            state["skipped_batches"] += 1
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
        loss_sum += loss.detach().float() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if first_of_run and step == start:  # torch.compile compiles, cuDNN tries its kernels
            synchronize(device)
            state["warmup"] = [time.perf_counter() - clock, len(labels) * distributed.world_size()]
        if step % cfg.log_every == 0:
            watch.check()  # the bar reads the device now anyway
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
        stop = signals.stop_now(step, cfg.log_every, device)
        if stop or (every and (step + 1) % every == 0 and step + 1 < cfg.steps_per_epoch):
            watch.check()  # never save weights a NaN has reached
            keep_progress(step + 1)
            if stop:
                return None
            save_last()
    watch.check()
    keep_progress(cfg.steps_per_epoch)
    # One all-reduce per epoch: every process reports the same numbers, over all the shards.
    seen_tensor = torch.tensor(float(seen), device=device)
    totals = distributed.sum_across(torch.stack([loss_sum, correct.float(), seen_tensor]))
    loss_total, correct_total, seen_total = totals.tolist()
    seen_total = max(seen_total, 1)  # every batch skipped (on_nan=skip_batch): no division by zero
    seconds = state["epoch_sums"]["seconds"]
    return loss_total / seen_total, correct_total / seen_total, int(seen_total), seconds

def stopped_at(state: dict[str, Any], epoch: int, cfg: DictConfig) -> str:
    """Where a stopped run got to, in words."""
    if state["step"] >= cfg.steps_per_epoch:
        return f"in epoch {epoch + 1}'s evaluation (its training steps are saved)"
    return f"at epoch {epoch + 1}, step {state['step']} of {cfg.steps_per_epoch}"


def skipped_images(data: Data) -> set[str]:
    """Images the loaders left out as unreadable (data.bad_images=skip)."""
    return getattr(data.train, "skipped", set()) | getattr(data.val, "skipped", set())

def classification_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor,
                        criterion: nn.Module, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; auxiliary heads (GoogLeNet in training) add aux_weight x their loss."""
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, labels), outputs
    main, *auxiliary = outputs
    loss = criterion(main, labels) + aux_weight * sum(criterion(aux, labels) for aux in auxiliary)
    return loss, main

def stop_early(state: dict[str, Any], patience: int) -> bool:
    """True once `patience` epochs have passed without a better validation accuracy (0: never)."""
    return bool(patience) and state["epoch"] - state["best_epoch"] >= patience
