"""`cnnbench-eval ckpt=PATH [out=PATH] [weights=auto|ema|live] [key=value ...]`: score a checkpoint
on its validation data (weights=auto: the averaged weights when the run kept an average, ema.decay > 0).

The model and the data are rebuilt from the config stored in the checkpoint; any other key=value
changes that config (data.root=/elsewhere, batch_size=512, device=cpu; +key=value adds a key).
On the CPU the accuracy is exactly the one the run recorded for that checkpoint. Prints the
accuracy, loss, per-class accuracy and confusion matrix, and writes them to eval.json beside the
checkpoint (or to out=PATH).
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cnnbench.checkpoint import write_json
from cnnbench.cli import console_command
from cnnbench.config import check_config
from cnnbench.data import build_data
from cnnbench.device import available, select_device
from cnnbench.errors import CnnbenchError
from cnnbench.use import (
    apply_overrides,
    check_output,
    chosen_weights,
    open_checkpoint,
    parse_arguments,
    rebuild_model,
    run_tool,
)
from cnnbench.validation import evaluate

TOOL = "cnnbench-eval"


def evaluate_checkpoint(ckpt: str | Path, overrides: Sequence[str] = (), weights: str = "auto"
                        ) -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and confusion matrix of a checkpoint on its validation data."""
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

    # .get: checkpoints saved before the tta key existed
    metrics = evaluate(model, data.val, device, cfg.precision, cfg.channels_last, tta=cfg.get("tta", False))
    confusion = torch.tensor(metrics["confusion"])  # rows: true class, columns: predicted
    per_class = {name: (row[i] / row.sum()).item() if row.sum() else None
                 for i, (name, row) in enumerate(zip(data.classes, confusion.double(), strict=True))}
    key = "val_acc_ema" if weights == "ema" else "val_acc"
    recorded = checkpoint["history"][-1].get(key) if checkpoint.get("history") else None
    return {"tool": TOOL, "checkpoint": str(Path(ckpt).absolute()), "epoch": checkpoint["epoch"],
            "model": cfg.model._target_.rsplit(".", 1)[-1], "overrides": list(overrides), "weights": weights,
            "data": OmegaConf.to_container(cfg.data, resolve=True), "images": int(confusion.sum()),
            "accuracy": metrics["acc"], "loss": metrics["loss"], "recorded_val_acc": recorded,
            "per_class": per_class, "classes": data.classes, "confusion_matrix": confusion.tolist()}


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


def report(result: dict[str, Any]) -> str:
    """The console summary: totals, a per-class table and (up to 20 classes) the confusion matrix."""
    averaged = " (its averaged weights: ema)" if result.get("weights") == "ema" else ""
    lines = [f"{result['model']} at epoch {result['epoch']}{averaged} on {result['data']['name']} "
             f"validation: {result['images']} images",
             f"accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}"
             + (f"  (the run recorded {result['recorded_val_acc']:.4f})"
                if result["recorded_val_acc"] is not None else ""),
             ""]
    width = max(len("class"), *(len(name) for name in result["classes"]))
    lines.append(f"{'class':<{width}}  {'images':>7}  {'accuracy':>8}")
    for name, row in zip(result["classes"], result["confusion_matrix"], strict=True):
        accuracy = result["per_class"][name]
        lines.append(f"{name:<{width}}  {sum(row):>7}  {'-' if accuracy is None else f'{accuracy:.4f}':>8}")
    if len(result["classes"]) <= 20:
        cell = max(5, len(str(max(max(row) for row in result["confusion_matrix"]))) + 1)
        lines += ["", "confusion matrix (rows: true class, columns: predicted class by number)",
                  " " * width + "".join(f"{i:>{cell}}" for i in range(len(result["classes"])))]
        lines += [f"{name:<{width}}" + "".join(f"{n:>{cell}}" for n in row)
                  for name, row in zip(result["classes"], result["confusion_matrix"], strict=True)]
    return "\n".join(lines)


def _main(arguments: list[str]) -> None:
    options, overrides = parse_arguments(arguments, {"ckpt": ..., "out": None, "weights": "auto"},
                                         overrides=True)
    ckpt = Path(options["ckpt"])
    out = Path(options["out"]) if options["out"] else ckpt.parent / "eval.json"
    if ckpt.is_file():  # (a missing checkpoint is reported by the loader, naming it)
        check_output(out, TOOL)  # before the work: never overwrite a file the user made
    result = evaluate_checkpoint(ckpt, overrides, options["weights"])
    print(report(result))
    write_json(result, out)
    print(f"\nwrote {out}")


@console_command
def main() -> None:
    """Console entry point."""
    run_tool(TOOL, _main)


if __name__ == "__main__":
    main()
