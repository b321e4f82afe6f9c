"""Scoring a model on the validation data: loss, accuracy and confusion matrix (every epoch, and
cnnbench-eval), and the misclassified images a run shows at its end."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from cnnbench import distributed
from cnnbench.device import autocast, memory_format, unwrap


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
