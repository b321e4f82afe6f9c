"""`cnnbench-predict ckpt=PATH inputs=FILE|FOLDER|GLOB [topk=5] [out=preds.csv|preds.json] [device=auto]
[weights=auto|ema|live]`

The k most likely classes of each image, with their probabilities. Needs only the checkpoint:
images of any size and mode are converted as the model was trained (greyscale or RGB, resized
to the training size, normalised with the run's mean and std). A folder is searched recursively
for image files; an image that cannot be read is named on stderr and the rest are still predicted.
"""

import sys
from pathlib import Path
from typing import Any

from cnnbench.cli.common import console_command, parse_arguments, positive_int, run_tool
from cnnbench.errors import CnnbenchError
from cnnbench.files import check_output
from cnnbench.inference.predict import TOOL, find_images, predict, write_predictions


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
    run_tool(TOOL, _main, __doc__)


if __name__ == "__main__":
    main()
