"""The k most likely classes of each image, with their probabilities (cnnbench-predict). Needs only
the checkpoint: images of any size and mode are converted as the model was trained (greyscale or
RGB, resized to the training size, normalised with the run's mean and std)."""

import csv
import glob
import io
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from cnnbench.data import IMAGE_ERRORS, IMAGE_EXTENSIONS, permute_pixels, pixel_permutation, sample_transform
from cnnbench.data.images import open_image as decode_image
from cnnbench.engine.checkpoint import write_json
from cnnbench.errors import CnnbenchError
from cnnbench.files import write_text_whole
from cnnbench.inference.checkpoints import open_checkpoint, rebuild_model
from cnnbench.runtime.device import select_device

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
    # file,class_1,probability_1,...: the header files.check_output knows as this tool's (files.CSV_HEADERS)
    header = ["file"] + [f"{column}_{rank}" for rank in range(1, k + 1)
                         for column in ("class", "probability")]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row["file"]] + [value for guess in row["top"]
                                         for value in (guess["class"], f"{guess['probability']:.6f}")])
    # whole, never through a link planted at out; a file name that is not UTF-8 is written as its own
    # bytes (surrogateescape: read it back with the same errors= to get them again)
    write_text_whole(out, text.getvalue())


def open_image(path: str | Path, in_channels: int) -> Image.Image:
    """Decode any image file in the model's mode: greyscale for 1 channel, else RGB (as training)."""
    return decode_image(path, "L" if in_channels == 1 else "RGB")


def preprocess(images: list[Image.Image], data_cfg: DictConfig, image_size: tuple[int, int]) -> torch.Tensor:
    """A batch of normalised tensors: resized to the model's size, then scaled as in training."""
    # The transform an ImageFolder run validates with: resize (bilinear, antialiased), scale to
    # [0, 1], normalise with the run's mean and std.
    transform = sample_transform(data_cfg, train=False, size=tuple(image_size))
    batch = torch.stack([transform(image) for image in images])
    if data_cfg.get("permute_pixels"):
        # trained on pixel-shuffled images (data.permute_pixels): shuffle these the same way; the
        # run shuffled at the dataset's own size, before any data.resize, which is not known here
        if data_cfg.get("resize"):
            raise CnnbenchError("this model was trained with data.permute_pixels=true and data.resize: "
                                "its pixel order cannot be rebuilt for new images")
        batch = permute_pixels(batch, pixel_permutation(*image_size, data_cfg.get("permute_seed", 0)))
    return batch
