"""A checkpoint scored again on its validation data (cnnbench-eval): rebuilt from the config stored
in it, whose keys a user may change; on the CPU the accuracy is exactly the one the run recorded."""

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cnnbench.config.checks import check_config
from cnnbench.config.keys import model_name
from cnnbench.data import build_data
from cnnbench.engine.state import RunState
from cnnbench.engine.validation import evaluate
from cnnbench.errors import CnnbenchError
from cnnbench.inference.checkpoints import apply_overrides, chosen_weights, open_checkpoint, rebuild_model
from cnnbench.runtime.device import available, select_device

TOOL = "cnnbench-eval"


SPLITS = ("test", "val")  # the tools' split= argument


def evaluate_checkpoint(ckpt: str | Path, overrides: Sequence[str] = (), weights: str = "auto",
                        split: str = "test") -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and confusion matrix of a checkpoint on its data's test
    split (or its validation split: split=val), the split its run had."""
    if split not in SPLITS:
        raise CnnbenchError(f"split={split!r}: use test or val")
    checkpoint = open_checkpoint(ckpt)
    cfg = apply_overrides(checkpoint["config"], list(overrides))
    check_config(cfg)
    device = select_device(stored_device(cfg.device, overrides))
    weights = chosen_weights(checkpoint, weights)
    model = rebuild_model(checkpoint, ckpt, cfg.model, device, cfg.channels_last, weights)
    data = build_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, device=device,
                      num_workers=cfg.num_workers)
    here = (data.classes, data.in_channels, list(data.image_size))
    trained = (checkpoint["classes"], checkpoint["in_channels"], list(checkpoint["image_size"]))
    if here != trained:
        raise CnnbenchError(f"the data does not match the checkpoint: {describe(*here)} here, "
                            f"{describe(*trained)} in training; check the data.* overrides")

    recorded_split = (checkpoint.get("split") or {}).get("digest")
    same_split = not recorded_split or data.split.get("digest") == recorded_split
    if not same_split:  # other images (another copy of the data, new data): scored, but not the run's numbers
        print(f"{TOOL}: note: the data gives another split than the run had ({data.split['counts']} here, "
              f"{checkpoint['split']['counts']} then): this is not the run's {split} score; check data.root "
              "and the data.* overrides if it should be", file=sys.stderr)
    images = data.test if split == "test" else data.val
    if images is None:
        raise CnnbenchError(f"split={split}: this data has no {'test' if split == 'test' else 'validation'} split "
                            f"(its splits: {', '.join(data.split.get('counts', {}))}); try split="
                            f"{'val' if split == 'test' else 'test'}")
    # .get: checkpoints saved before the tta key existed
    metrics = evaluate(model, images, device, cfg.precision, cfg.channels_last, tta=cfg.get("tta", False))
    confusion = torch.tensor(metrics["confusion"])  # rows: true class, columns: predicted
    per_class = {name: (row[i] / row.sum()).item() if row.sum() else None
                 for i, (name, row) in enumerate(zip(data.classes, confusion.double(), strict=True))}
    recorded = recorded_accuracy(checkpoint, Path(ckpt), weights, split) if same_split else None
    return {"tool": TOOL, "checkpoint": str(Path(ckpt).absolute()), "epoch": checkpoint["epoch"],
            "model": model_name(cfg.model), "overrides": list(overrides), "weights": weights, "split": split,
            "data": OmegaConf.to_container(cfg.data, resolve=True), "images": int(confusion.sum()),
            "accuracy": metrics["acc"], "loss": metrics["loss"], "recorded_acc": recorded, "same_split": same_split,
            "recorded_val_acc": recorded if split == "val" else None,
            "per_class": per_class, "classes": data.classes, "confusion_matrix": confusion.tolist()}


def recorded_accuracy(checkpoint: dict[str, Any], path: Path, weights: str, split: str) -> float | None:
    """The accuracy the run recorded for these weights on this split: the checkpoint's epoch's
    validation accuracy; the test accuracy metrics.json beside best.pt or last.pt holds (scored
    once, at the end of the run); None when it recorded none."""
    if split == "val":
        history = RunState.from_checkpoint(checkpoint).history
        return history[-1].get("val_acc_ema" if weights == "ema" else "val_acc") if history else None
    try:
        metrics = json.loads((path.parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("status") != "finished":
        return None
    if path.name == "best.pt" and metrics.get("test_weights") == weights:
        return metrics.get("test_acc")
    if path.name == "last.pt" and metrics.get("epochs_done") == checkpoint["epoch"]:
        return metrics.get("final_test_acc_ema" if weights == "ema" else "final_test_acc")
    return None


def stored_device(name: str, overrides: Sequence[str]) -> str:
    """The device the checkpoint's run chose, or `auto` when this machine lacks it (a checkpoint
    from a bigger machine: cuda:1 on a laptop), said in a note. A device= given here is used as is."""
    if any(override.partition("=")[0].lstrip("+") == "device" for override in overrides) or name == "auto":
        return name
    try:
        present = available(torch.device(name))
    except RuntimeError:
        present = False
    if not present:
        print(f"{TOOL}: note: the run trained on device={name}, which this machine does not have; "
              "using device=auto (give device=... to choose)", file=sys.stderr)
    return name if present else "auto"


def describe(classes: list[str], in_channels: int, image_size: Sequence[int]) -> str:
    """'10 classes (0 - zero, 1 - one, ...) of 1x28x28 images', for error messages."""
    names = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
    return f"{len(classes)} classes ({names}) of {in_channels}x{'x'.join(map(str, image_size))} images"
