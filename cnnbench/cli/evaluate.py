"""`cnnbench-eval ckpt=PATH [split=test|val] [out=PATH] [weights=auto|ema|live] [key=value ...]`: score
a checkpoint on its test split (split=val: its validation split), the split its run had
(weights=auto: the averaged weights when the run kept an average, ema.decay > 0).

The model and the data are rebuilt from the config stored in the checkpoint; any other key=value
changes that config (data.root=/elsewhere, batch_size=512, device=cpu; +key=value adds a key).
On the CPU the accuracy is exactly the one the run recorded: its test accuracy for best.pt (and
last.pt's final one), or with split=val the checkpoint's epoch's validation accuracy. Prints the
accuracy, loss, per-class accuracy and confusion matrix, and writes them to eval.json beside the
checkpoint (or to out=PATH).
"""

from pathlib import Path
from typing import Any

from cnnbench.cli.common import console_command, parse_arguments, run_tool
from cnnbench.engine.checkpoint import write_json
from cnnbench.files import check_output
from cnnbench.inference.evaluate import TOOL, evaluate_checkpoint


def report(result: dict[str, Any]) -> str:
    """The console summary: totals, a per-class table and (up to 20 classes) the confusion matrix."""
    averaged = " (its averaged weights: ema)" if result.get("weights") == "ema" else ""
    split = {"test": "test", "val": "validation"}[result["split"]]
    lines = [f"{result['model']} at epoch {result['epoch']}{averaged} on {result['data']['name']} "
             f"{split}: {result['images']} images",
             f"accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}"
             + (f"  (the run recorded {result['recorded_acc']:.4f})" if result["recorded_acc"] is not None else ""),
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
    options, overrides = parse_arguments(arguments, {"ckpt": ..., "split": "test", "out": None,
                                                     "weights": "auto"}, overrides=True)
    ckpt = Path(options["ckpt"])
    out = Path(options["out"]) if options["out"] else ckpt.parent / "eval.json"
    if ckpt.is_file():  # (a missing checkpoint is reported by the loader, naming it)
        check_output(out, TOOL)  # before the work: never overwrite a file the user made
    result = evaluate_checkpoint(ckpt, overrides, options["weights"], options["split"])
    print(report(result))
    write_json(result, out)
    print(f"\nwrote {out}")


@console_command
def main() -> None:
    """Console entry point."""
    run_tool(TOOL, _main, __doc__)


if __name__ == "__main__":
    main()
