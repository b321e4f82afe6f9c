"""The training loop: `train(cfg, run_dir)` reads top to bottom; the helpers below it are small."""

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from cnnbench import distributed
from cnnbench.allocator import keep_freed_memory
from cnnbench.board import Board, per_class_accuracy
from cnnbench.build import build_model, build_optimizer
from cnnbench.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_json
from cnnbench.config import check_config, override_key, refuse_existing_run
from cnnbench.data import Data, OneBatch, build_data
from cnnbench.errors import CnnbenchError, Interrupted
from cnnbench.faults import LossWatch, StopSignals

log = logging.getLogger("cnnbench")


@dataclass
class Run:
    """Everything one training run is made of, built from its config by `build_run`."""

    data: Data
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device


def build_run(cfg: DictConfig) -> Run:
    """Device, data, model, optimizer and scheduler, as the config says."""
    if cfg.get("keep_freed_memory", True):  # before the data and the model allocate anything
        keep_freed_memory()
    device = distributed.start(select_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    data = build_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, device=device,
                      num_workers=cfg.num_workers)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=list(data.image_size)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if distributed.launched_by_torchrun():
        if cfg.sync_bn:
            if device.type != "cuda":
                raise CnnbenchError("sync_bn=true needs CUDA GPUs (torch's SyncBatchNorm); "
                                    "set sync_bn=false")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [device] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.overfit:
        # Debugging: learn one fixed batch (the first validation batch, so no augmentation) and
        # validate on it; a model and loop that work drive its loss to about zero.
        data.train = data.val = OneBatch(next(iter(data.val)))
    # the scheduler configs count in these steps
    cfg.steps_per_epoch = min(len(data.train), cfg.limit_batches or len(data.train))
    optimizer, scheduler = build_optimizer(cfg, model)
    if cfg.compile:
        model = torch.compile(model)
    # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return Run(data, model, optimizer, scheduler, scaler, criterion, device)


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
            trained = train_epoch(run, cfg, epoch, state, save_last, signals)
            evaluation_start = time.perf_counter()
            val = None if trained is None else evaluate(
                model, data.val, device, cfg.precision, cfg.channels_last, cfg.limit_batches, cfg.tta,
                stop=lambda step: signals.stop_now(step, cfg.log_every, device))
            if val is None:  # a signal came: last.pt holds where training got to
                save_last()
                raise Interrupted(signals.received.name, signals.received, stopped_at(state, epoch, cfg),
                                  str(run_dir))
            train_loss, train_acc, seen, train_time = trained
            confusion = val["confusion"]
            epoch_time = train_time + time.perf_counter() - evaluation_start
            record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                      "val_loss": val["loss"], "val_acc": val["acc"],
                      "lr": run.optimizer.param_groups[0]["lr"], "train_images": seen,
                      "images_per_sec": seen / train_time, "epoch_time_s": epoch_time}
            state["history"].append(record)
            state.update(epoch=epoch + 1, step=0, epoch_sums=None)
            state["wall_time_s"] += epoch_time
            state["per_class_acc"] = per_class_accuracy(confusion, data.classes)
            state["skipped_images"] = sorted(set(state["skipped_images"]) | skipped_images(data))
            board.epoch(record, confusion)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.0f img/s  %.1f s",
                     epoch + 1, cfg.epochs, train_loss, train_acc, val["loss"], val["acc"],
                     record["images_per_sec"], epoch_time)
            if val["acc"] > state["best_val_acc"]:
                state["best_val_acc"], state["best_epoch"] = val["acc"], epoch + 1
                if main:
                    save_checkpoint(checkpoint_state(run, cfg, state), run_dir / "best.pt")
            save_last()
            if main:
                write_json(summarise(cfg, state, parameters, device, finished=False), run_dir / "metrics.json")

    metrics = summarise(cfg, state, parameters, device, finished=True)
    if not confusion and state["history"]:  # resumed a finished run: evaluate once for the pictures
        val = evaluate(model, data.val, device, cfg.precision, cfg.channels_last, cfg.limit_batches,
                       cfg.tta)
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


def new_state() -> dict[str, Any]:
    """The progress of a run that has not started (train() updates it; last.pt saves it).

    `epoch` epochs are done, and `step` optimizer steps of the next one, whose loss and accuracy
    sums so far are `epoch_sums`: a run stopped mid-epoch resumes there.
    """
    return {"epoch": 0, "step": 0, "epoch_sums": None, "best_val_acc": -1.0, "best_epoch": 0,
            "history": [], "wall_time_s": 0.0, "skipped_batches": 0, "skipped_images": []}


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

    def keep_progress(step: int) -> None:
        # every process's sums, in rank order: rank 0 saves them for all
        local = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device)])
        per_process = distributed.gather_across(local).cpu()
        state["step"] = step
        state["epoch_sums"] = {"loss": per_process[:, 0], "correct": per_process[:, 1].long(),
                               "seen": per_process[:, 2].long().tolist(),
                               "seconds": time.perf_counter() - clock}

    every = cfg.checkpoint.every_n_steps
    bar = tqdm(run.data.train, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=cfg.steps_per_epoch,
               initial=start, leave=False, disable=None)
    for step, (images, labels) in enumerate(bar, start=start):
        if step >= cfg.steps_per_epoch:  # limit_batches
            break
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
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
        loss_sum += loss.detach().float() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
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
    return loss_total / seen_total, correct_total / seen_total, int(seen_total), state["epoch_sums"]["seconds"]


def checkpoint_state(run: Run, cfg: DictConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the rest of the run (weights, optimizer, scheduler, loss scaler,
    every random generator, progress), and what is needed to use the model alone."""
    data = run.data
    return {"model": unwrap(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "rng": rng_state(), "config": OmegaConf.to_container(cfg, resolve=True),
            "classes": data.classes, "in_channels": data.in_channels,
            "image_size": list(data.image_size), **state}


def stopped_at(state: dict[str, Any], epoch: int, cfg: DictConfig) -> str:
    """Where a stopped run got to, in words."""
    if state["step"] >= cfg.steps_per_epoch:
        return f"in epoch {epoch + 1}'s evaluation (its training steps are saved)"
    return f"at epoch {epoch + 1}, step {state['step']} of {cfg.steps_per_epoch}"


def skipped_images(data: Data) -> set[str]:
    """Images the loaders left out as unreadable (data.bad_images=skip)."""
    return getattr(data.train, "skipped", set()) | getattr(data.val, "skipped", set())


def remove_unfinished_writes(run_dir: Path) -> None:
    """Delete the temporary files a killed run left half-written (the files they were to replace
    are intact: see checkpoint.py)."""
    for name in ("last.pt", "best.pt", "metrics.json", "config.json"):
        for path in run_dir.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for `precision` bf16 or fp16 (matmuls and convs in 16 bits); off for fp32."""
    return torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout batches are handed to the model in (see the channels_last key)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, without torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def classification_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor,
                        criterion: nn.Module, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; auxiliary heads (GoogLeNet in training) add aux_weight x their loss."""
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, labels), outputs
    main, *auxiliary = outputs
    loss = criterion(main, labels) + aux_weight * sum(criterion(aux, labels) for aux in auxiliary)
    return loss, main


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32",
             channels_last: bool = False, limit_batches: int | None = None,
             tta: bool = False, stop: Callable[[int], bool] | None = None) -> dict[str, Any] | None:
    """Mean cross-entropy, accuracy and confusion matrix (rows: true class) of `model` on `loader`.

    `tta`: score the mean of the logits of each image and its left-right mirror image.
    `stop(step)`: asked after every batch; True ends the evaluation early and returns None.
    Distributed, each process evaluates its shard and the sums are added up across processes.
    """
    model = unwrap(model)  # no DDP in evaluation: nothing to synchronise per batch
    model.eval()
    layout = memory_format(channels_last)
    loss_sum = torch.zeros((), device=device)
    confusion = None
    for step, (images, labels) in enumerate(loader):
        if limit_batches and step >= limit_batches:
            break
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
            if tta:
                # A mirrored photo is as likely as the original: averaging both predictions cancels
                # part of each one's error, for twice the cost (Page's ResNet-9, airbench)
                logits = (logits + model(images.flip(-1))) / 2
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        classes = logits.shape[1]
        # true * classes + predicted counts each (true, predicted) pair in one bincount
        pairs = torch.bincount(labels * classes + logits.argmax(1), minlength=classes * classes)
        confusion = pairs if confusion is None else confusion + pairs
        if stop and stop(step):
            return None
    confusion = distributed.sum_across(confusion).view(classes, classes).cpu()
    loss_sum = distributed.sum_across(loss_sum)
    count = int(confusion.sum())
    return {"loss": loss_sum.item() / count, "acc": int(confusion.diag().sum()) / count,
            "confusion": confusion.tolist()}


@torch.no_grad()
def misclassified(model: nn.Module, loader, device: torch.device, cfg: DictConfig,
                  limit: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `limit` validation images the model gets wrong, with their true and predicted classes."""
    model = unwrap(model)  # rank 0 alone runs this: a DDP forward could wait for the others
    model.eval()
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    total = 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, cfg.precision):
            predicted = model(images).argmax(1)
        wrong = (predicted != labels).nonzero().flatten()[:limit - total]
        found.append((images[wrong].cpu(), labels[wrong].cpu(), predicted[wrong].cpu()))
        total += len(wrong)
        if total >= limit:
            break
    return tuple(torch.cat(parts) for parts in zip(*found, strict=True))


def find_resume_checkpoint(resume: bool | str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuse to overwrite an earlier run."""
    if resume is False or resume is None:
        refuse_existing_run(run_dir)
        return None
    path = run_dir if resume is True else Path(str(resume))
    path = path / "last.pt" if path.is_dir() or resume is True else path
    if not path.is_file():
        shown = "true" if resume is True else resume
        raise CnnbenchError(f"resume={shown}: {path} does not exist; give a run folder that holds "
                            "last.pt, or a checkpoint file")
    return path


def resume(path: Path, run: Run, cfg: DictConfig) -> dict[str, Any]:
    """Load model, optimizer, scheduler, scaler and RNG states; return the run's progress so far."""
    checkpoint = load_checkpoint(path)
    step, saved_steps = checkpoint.get("step", 0), checkpoint["config"].get("steps_per_epoch")
    if step and saved_steps != cfg.steps_per_epoch:
        # the same step number would be another place in the data
        raise CnnbenchError(f"{path} was saved {step} steps into an epoch of {saved_steps} steps; this "
                            f"config has {cfg.steps_per_epoch} steps per epoch: resume with the run's own "
                            "batch_size and limit_batches")
    try:
        unwrap(run.model).load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.scaler.load_state_dict(checkpoint["scaler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CnnbenchError(f"{path} does not match this config's model or optimizer "
                            f"({str(error).splitlines()[0]}); resume with the run's own overrides") from None
    set_rng_state(checkpoint["rng"])
    keys = ("epoch", "best_val_acc", "best_epoch", "history", "wall_time_s")
    progress = {key: checkpoint[key] for key in keys}
    # absent from checkpoints of earlier cnnbench versions, which saved at epoch ends only
    optional = {"step": 0, "epoch_sums": None, "skipped_batches": 0, "skipped_images": [], "per_class_acc": {}}
    return {**progress, **{key: checkpoint.get(key, default) for key, default in optional.items()}}


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; any other name must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnbenchError(f"device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "mps": torch.backends.mps.is_available(),
                 "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()}
    if not available.get(device.type, False):
        raise CnnbenchError(f"device={name}: no such device on this machine; use device=auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) so weights and dropout repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_name(cfg: DictConfig) -> str:
    """The model's registered name: its builder's function name."""
    return cfg.model._target_.rsplit(".", 1)[-1]


def stop_early(state: dict[str, Any], patience: int) -> bool:
    """True once `patience` epochs have passed without a better validation accuracy (0: never)."""
    return bool(patience) and state["epoch"] - state["best_epoch"] >= patience


def hparams(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """What distinguishes this run in TensorBoard's HParams tab: model, data, seed, and the overrides."""
    values: dict[str, Any] = {"model": model_name(cfg), "data": cfg.data.name, "seed": cfg.seed}
    overrides = run_dir / ".hydra" / "overrides.yaml"  # written by Hydra for CLI runs
    if overrides.is_file():
        for override in yaml.safe_load(overrides.read_text()) or []:
            key = override_key(override)
            if key not in ("model", "data", "seed", "resume") and not key.startswith("hydra"):
                value = OmegaConf.select(cfg, key, default=override.split("=", 1)[-1])
                values[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return values


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory of this process so far: resident host memory, and the GPU's when on CUDA."""
    peaks = {}
    try:
        import resource  # Unix only

        # ru_maxrss is in kilobytes on Linux (bytes on macOS)
        scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
        peaks["peak_host_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except ImportError:
        pass
    if device.type == "cuda":
        peaks["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


def summarise(cfg: DictConfig, state: dict[str, Any], parameters: int, device: torch.device,
              finished: bool) -> dict[str, Any]:
    """The numbers metrics.json holds: final and best results, cost, and the per-epoch history."""
    history = state["history"]
    last = history[-1] if history else {}
    return {
        "status": "finished" if finished else "running",
        "model": model_name(cfg), "data": cfg.data.name, "seed": cfg.seed,
        "epochs_done": state["epoch"], "epochs": cfg.epochs,
        "best_val_acc": state["best_val_acc"], "best_epoch": state["best_epoch"],
        "stopped_early": state["epoch"] < cfg.epochs and finished,
        "final_val_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
        "final_train_acc": last.get("train_acc"), "final_train_loss": last.get("train_loss"),
        "parameters": parameters,
        "images_per_sec": sum(r["images_per_sec"] for r in history) / max(1, len(history)),
        "wall_time_s": state["wall_time_s"], "device": str(device),
        "per_class_acc": state.get("per_class_acc", {}),
        # left out: batches whose loss was NaN or infinite (on_nan=skip_batch), unreadable images
        # (data.bad_images=skip)
        "skipped_batches": state["skipped_batches"], "skipped_images": state["skipped_images"],
        **peak_memory_mb(device),
        "history": history,
    }
