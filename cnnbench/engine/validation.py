"""Scoring a model on the validation data: loss, accuracy and confusion matrix (every epoch, and
cnnbench-eval), a run's live and averaged weights scored together, and the misclassified images a
run shows at its end."""

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from cnnbench.engine.checkpoint import default_weights, load_checkpoint
from cnnbench.engine.state import Run
from cnnbench.errors import CnnbenchError
from cnnbench.runtime import distributed
from cnnbench.runtime.device import autocast, memory_format, to_device, unwrap


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32",
             channels_last: bool = False, limit_batches: int | None = None, tta: bool = False,
             stop: Callable[[int], bool] | None = None, num_classes: int | None = None
             ) -> dict[str, Any] | None:
    """Mean cross-entropy, accuracy and confusion matrix (rows: true class) of `model` on `loader`.

    `tta`: score the mean of the logits of each image and its left-right mirror image.
    `stop(step)`: asked after every batch; True ends the evaluation early and returns None.
    Distributed, each process evaluates its shard and the sums are added up across processes;
    pass `num_classes` there (a process's shard may be empty).
    """
    model = unwrap(model)  # no DDP in evaluation: nothing to synchronise per batch
    model.eval()
    layout = memory_format(channels_last)
    loss_sum = torch.zeros((), device=device)
    confusion = None if num_classes is None else torch.zeros(num_classes**2, dtype=torch.long, device=device)
    # Every process takes as many steps as the one with the most batches: when the images do not
    # split evenly, some shards are a batch shorter (none is padded with repeated images), and a
    # process past its end adds nothing but still asks stop() with the others, whose answer is a
    # collective every process must join in the same order.
    steps = int(distributed.max_across(torch.tensor(len(loader), device=device)).item())
    steps = min(steps, limit_batches) if limit_batches else steps
    batches = iter(loader)
    for step in range(steps):
        batch = next(batches, None)
        if batch is not None:
            images, labels = to_device(batch[0], device, memory_format=layout), to_device(batch[1], device)
            with autocast(device, precision):
                logits = model(images)
                if tta:
                    # A mirrored photo is as likely as the original: averaging both predictions cancels
                    # part of each one's error, for twice the cost (Page's ResNet-9, airbench)
                    logits = (logits + model(images.flip(-1))) / 2
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            classes = logits.shape[1]
            if confusion is None:
                confusion = torch.zeros(classes**2, dtype=torch.long, device=device)
            # true * classes + predicted counts each (true, predicted) pair: a scatter-add, not a
            # bincount, which reads its input's largest value back to the host on every GPU call
            confusion.scatter_add_(0, labels * classes + logits.argmax(1), torch.ones_like(labels))
        if stop and stop(step):
            return None
    if confusion is None:
        raise CnnbenchError("evaluation found no images: the validation set is empty")
    classes = math.isqrt(len(confusion))
    confusion = distributed.sum_across(confusion).view(classes, classes).cpu()
    loss_sum = distributed.sum_across(loss_sum)
    count = max(int(confusion.sum()), 1)
    return {"loss": loss_sum.item() / count, "acc": int(confusion.diag().sum()) / count,
            "confusion": confusion.tolist()}


def per_class_accuracy(confusion: list[list[int]], classes: Sequence[str]) -> dict[str, float]:
    """Accuracy of each true class: the diagonal over its row (0 for a class with no images)."""
    rows = zip(classes, confusion, strict=True)
    return {name: row[index] / max(1, sum(row)) for index, (name, row) in enumerate(rows)}


def validate(run: Run, stop: Callable[[int], bool] | None = None) -> dict[str, Any] | None:
    """The run's live weights' scores on its validation data ("live"), and its averaged weights'
    ("ema", None without ema.decay); both None when the data has no validation split; None when
    `stop` ended the evaluation (a stop signal)."""
    cfg, scores = run.config, {}
    if run.data.val is None:  # data.val_split=0: nothing to score, nothing is chosen
        return {"live": None, "ema": None}
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


@torch.no_grad()
def misclassified(model: nn.Module, loader, device: torch.device, cfg: DictConfig,
                  limit: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `limit` validation images the model gets wrong, with their true and predicted classes."""
    model = unwrap(model)  # rank 0 alone runs this: a DDP forward could wait for the others
    model.eval()
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    total = 0
    for images, labels in loader:
        images, labels = to_device(images, device), to_device(labels, device)
        with autocast(device, cfg.precision):
            predicted = model(images).argmax(1)
        wrong = (predicted != labels).nonzero().flatten()[:limit - total]
        found.append((images[wrong].cpu(), labels[wrong].cpu(), predicted[wrong].cpu()))
        total += len(wrong)
        if total >= limit:
            break
    return tuple(torch.cat(parts) for parts in zip(*found, strict=True))


def score_test(run: Run, best: Path) -> dict[str, Any] | None:
    """The test split, scored once at the end of a run: the chosen checkpoint `best` (best.pt) with
    the weights the tools use by default (the averaged ones when it has them), the final weights, and
    the final averaged weights; None when the data has no test split. Every process takes part."""
    if run.data.test is None:
        return None
    cfg = run.config

    def score(model: nn.Module) -> dict[str, Any]:
        return evaluate(model, run.data.test, run.device, cfg.precision, cfg.channels_last, cfg.limit_batches,
                        cfg.tta, num_classes=run.data.num_classes)

    distributed.barrier()  # rank 0 has written best.pt
    checkpoint = load_checkpoint(best)
    weights = default_weights(checkpoint)
    chosen = copy.deepcopy(unwrap(run.model))
    chosen.load_state_dict(checkpoint["ema"]["model"] if weights == "ema" else checkpoint["model"])
    if cfg.channels_last:
        chosen = chosen.to(memory_format=torch.channels_last)
    if run.ema:
        run.ema.same_on_every_process()
    return {"best": score(chosen), "best_epoch": checkpoint["epoch"], "weights": weights,
            "final": score(run.model), "final_ema": score(run.ema.model) if run.ema else None}
