"""`cnnbench-predict ckpt=PATH inputs=FILE|FOLDER|GLOB [topk=5] [out=preds.csv|preds.json] [device=auto]
[weights=auto|ema|live]`

The k most likely classes of each image, with their probabilities. Needs only the checkpoint:
images of any size and mode are converted as the model was trained (greyscale or RGB, resized
to the training size, normalised with the run's mean and std). A folder is searched recursively
for image files; an image that cannot be read is named on stderr and the rest are still predicted.
"""

import csv
import glob
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cnnbench.checkpoint import write_json
from cnnbench.cli import console_command
from cnnbench.data import IMAGE_ERRORS, IMAGE_EXTENSIONS
from cnnbench.device import select_device
from cnnbench.errors import CnnbenchError
from cnnbench.use import (
    check_output,
    open_checkpoint,
    open_image,
    parse_arguments,
    positive_int,
    preprocess,
    rebuild_model,
    run_tool,
)

TOOL = "cnnbench-predict"
CHUNK = 64  # images decoded and run together: bounded memory for a folder of any size


def find_images(inputs: str) -> list[Path]:
    """One file, every image file under a folder (recursive, hidden ones skipped), or a glob's matches."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    else:
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    if not found:
        raise CnnbenchError(f"inputs={inputs}: no image files there (expected a file, a folder of "
                            f"{'/'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS[:4])}... images, or a glob)")
    return sorted(found)


def predict(ckpt: str | Path, files: list[Path], topk: int = 5, device: str = "auto", weights: str = "auto"
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """Top-k predictions for each readable file, and one message for each file that is not."""
    checkpoint = open_checkpoint(ckpt)
    device = select_device(device)
    model = rebuild_model(checkpoint, ckpt, device=device, weights=weights)
    data_cfg = OmegaConf.create(checkpoint["config"]["data"])
    classes = checkpoint["classes"]
    topk = min(topk, len(classes))
    rows, problems = [], []
    for start in range(0, len(files), CHUNK):
        images, names = [], []
        for file in files[start:start + CHUNK]:
            try:
                images.append(open_image(file, checkpoint["in_channels"]))
                names.append(file)
            except IMAGE_ERRORS as error:  # unreadable, unknown, truncated, broken headers
                reason = (str(error).strip() or type(error).__name__).splitlines()[0]
                problems.append(f"{file}: cannot read this image ({reason})")
        if not images:
            continue
        batch = preprocess(images, data_cfg, checkpoint["image_size"]).to(device)
        with torch.no_grad():
            probabilities = model(batch).float().softmax(1)
        top = probabilities.topk(topk, dim=1)
        for name, values, indices in zip(names, top.values.tolist(), top.indices.tolist(), strict=True):
            guesses = [{"class": classes[i], "index": i, "probability": p}
                       for p, i in zip(values, indices, strict=True)]
            rows.append({"file": str(name), "top": guesses})
    return rows, problems


def write_predictions(rows: list[dict[str, Any]], out: Path, ckpt: str) -> None:
    """CSV (one row per image: file, class_1, probability_1, ...) or JSON, chosen by out's suffix."""
    if out.suffix == ".json":
        write_json({"tool": TOOL, "checkpoint": str(Path(ckpt).absolute()), "predictions": rows}, out)
        return
    k = len(rows[0]["top"])
    # file,class_1,probability_1,...: the header check_output knows as this tool's (PREDICT_CSV_HEADER)
    header = ["file"] + [f"{column}_{rank}" for rank in range(1, k + 1)
                         for column in ("class", "probability")]
    with open(out, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row["file"]] + [value for guess in row["top"]
                                             for value in (guess["class"], f"{guess['probability']:.6f}")])


def table(rows: list[dict[str, Any]]) -> str:
    """One line per image: its file and its top classes with probabilities."""
    width = max(len("file"), *(len(row["file"]) for row in rows))
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for row in rows:
        guesses = "  ".join(f"{guess['class']} ({guess['probability']:.3f})" for guess in row["top"])
        lines.append(f"{row['file']:<{width}}  {guesses}")
    return "\n".join(lines)


def _main(arguments: list[str]) -> int:
    options, _ = parse_arguments(arguments, {"ckpt": ..., "inputs": ..., "topk": "5", "out": None,
                                             "weights": "auto",
                                             "device": "auto"})
    out = Path(options["out"]) if options["out"] else None
    if out is not None:
        if out.suffix not in (".csv", ".json"):
            raise CnnbenchError(f"out={out}: the suffix picks the format: use .csv or .json")
        check_output(out, TOOL)
    files = find_images(options["inputs"])
    rows, problems = predict(options["ckpt"], files, positive_int("topk", options["topk"]), options["device"],
                             options["weights"])
    for problem in problems:
        print(f"{TOOL}: {problem}", file=sys.stderr)
    if not rows:
        raise CnnbenchError(f"none of the {len(files)} input file(s) could be read as an image")
    print(table(rows))
    if out is not None:
        write_predictions(rows, out, options["ckpt"])
        print(f"wrote {out}")
    return 0


@console_command
def main() -> None:
    """Console entry point."""
    run_tool(TOOL, _main)


if __name__ == "__main__":
    main()
