"""What cnnbench-eval, cnnbench-predict and cnnbench-export share: arguments, checkpoints, images.

Each tool takes Hydra-style `key=value` arguments, loads a checkpoint written by `train`, and
rebuilds its model from the config and shapes stored inside it: no dataset and no config
files are needed to use a trained model.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image
from torch import nn

from cnnbench import data
from cnnbench.build import build_model
from cnnbench.checkpoint import load_checkpoint
from cnnbench.data import permute_pixels, pixel_permutation, sample_transform
from cnnbench.errors import CnnbenchError
from cnnbench.untrusted import check_stored_config

_ABSENT = object()  # OmegaConf.select's answer for a missing key (None is a key set to null)
PREDICT_CSV_HEADER = "file,class_1,probability_1"  # how cnnbench-predict's CSV files begin


def run_tool(tool: str, body: Callable[[list[str]], int | None]) -> None:
    """Run a tool's body on the command line's arguments; a CnnbenchError becomes one line, exit 2."""
    arguments = sys.argv[1:]
    if any(argument in ("-h", "--help") for argument in arguments):
        print(sys.modules[body.__module__].__doc__)
        sys.exit(0)
    try:
        status = body(arguments)
    except CnnbenchError as error:
        print(f"{tool}: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)


def parse_arguments(arguments: list[str], options: dict[str, Any], overrides: bool = False
                    ) -> tuple[dict[str, Any], list[str]]:
    """Split `key=value` arguments into the tool's options (with defaults) and config overrides.

    `options` maps each option to its default; a default of `...` marks it required. Any other
    key is a config override when `overrides` is true, and an error when not.
    """
    values, rest = dict(options), []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals or not key:
            raise CnnbenchError(f"{argument!r} is not a key=value argument, e.g. ckpt=outputs/RUN/best.pt")
        if key in options:
            values[key] = value
        elif overrides:
            rest.append(argument)
        else:
            raise CnnbenchError(f"unknown argument {key!r}: use {', '.join(f'{k}=' for k in options)}")
    missing = [key for key, value in values.items() if value is ...]
    if missing:
        raise CnnbenchError(f"{missing[0]}=... is required; --help shows every argument")
    return values, rest


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's config with `key=value` overrides on top; `+key=value` adds a new key."""
    cfg = OmegaConf.create(config)
    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith("+"):
            continue
        # OmegaConf would quietly add a misspelt key, or replace a whole group with a string.
        current = OmegaConf.select(cfg, key, default=_ABSENT)
        if current is _ABSENT:
            raise CnnbenchError(f"{key}: no such key in the checkpoint's config (add one with +{key}=VALUE)")
        if isinstance(current, DictConfig):
            raise CnnbenchError(f"{override}: the checkpoint fixes {key}; change its keys instead "
                                f"({key}.KEY=VALUE)")
    try:
        changes = OmegaConf.from_dotlist([override.lstrip("+") for override in overrides])
        return OmegaConf.merge(cfg, changes)
    except OmegaConfBaseException as error:
        raise CnnbenchError(f"cannot apply {' '.join(overrides)}: {str(error).splitlines()[0]}") from None


def positive_int(key: str, value: Any) -> int:
    """An integer option >= 1, or a one-line error naming it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise CnnbenchError(f"{key}={value} is not an integer >= 1")
    return number


def open_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint to use a model from: tensors and plain data only (load_checkpoint), and a
    config that names no code (it may be anyone's file: cnnbench/untrusted.py)."""
    checkpoint = load_checkpoint(path)
    check_stored_config(checkpoint["config"], str(path))
    for key in ("in_channels", "image_size"):
        if key not in checkpoint:
            raise CnnbenchError(f"the checkpoint has no {key!r}: it was not written by cnnbench's train")
    return checkpoint


WEIGHTS = ("auto", "ema", "live")  # the tools' weights= argument


def chosen_weights(checkpoint: dict[str, Any], weights: str) -> str:
    """Which weights of a checkpoint to use: `auto` takes the averaged ones when the run kept an
    average (ema.decay > 0), else the live ones; `ema` and `live` ask for one."""
    if weights not in WEIGHTS:
        raise CnnbenchError(f"weights={weights!r}: use auto, ema or live")
    has_average = bool(checkpoint.get("ema"))
    if weights == "ema" and not has_average:
        raise CnnbenchError("weights=ema: this checkpoint holds no averaged weights "
                            "(its run had ema.decay=0)")
    return "ema" if weights == "ema" or (weights == "auto" and has_average) else "live"


def rebuild_model(checkpoint: dict[str, Any], source: str | Path, model_cfg: DictConfig | None = None,
                  device: str | torch.device = "cpu", channels_last: bool = False,
                  weights: str = "auto") -> nn.Module:
    """The trained model of a checkpoint from open_checkpoint, in eval mode on `device`, with the
    weights `weights` picks (chosen_weights); model_cfg replaces its stored config. Only a
    registered model is built: `source` names the file the config came from in the refusal."""
    if model_cfg is None:
        model_cfg = OmegaConf.create(checkpoint["config"]["model"])
    model = build_model(model_cfg, str(source), num_classes=len(checkpoint["classes"]),
                        in_channels=checkpoint["in_channels"], image_size=list(checkpoint["image_size"]))
    averaged = chosen_weights(checkpoint, weights) == "ema"
    state = checkpoint["ema"]["model"] if averaged else checkpoint["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        # e.g. model.width_ratio=0.5 on the command line: the layers no longer fit the weights
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        raise CnnbenchError(f"the checkpoint's weights do not fit this model ({lines[-1]})") from None
    model = model.to(device)
    if channels_last:  # as the run did: move first, then change the memory layout
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def check_output(path: Path, tool: str) -> None:
    """Refuse to overwrite a file unless an earlier run of `tool` wrote it, or to write into no folder."""
    if not path.parent.is_dir():
        raise CnnbenchError(f"out={path}: the folder {path.parent} does not exist")
    if not path.exists():
        return
    if path.is_file() and written_by(path) == tool:
        return
    raise CnnbenchError(f"{path} exists and was not written by {tool}; choose another out=PATH "
                        "or remove the file")


def written_by(path: Path) -> str | None:
    """The cnnbench tool that wrote a file: named in its JSON, or known by its CSV header."""
    try:
        if path.suffix == ".csv":
            with open(path, encoding="utf-8") as file:
                return "cnnbench-predict" if file.readline().startswith(PREDICT_CSV_HEADER) else None
        return json.loads(path.read_text(encoding="utf-8")).get("tool")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------- images as the model saw them

def open_image(path: str | Path, in_channels: int) -> Image.Image:
    """Decode any image file in the model's mode: greyscale for 1 channel, else RGB (as training)."""
    return data.open_image(path, "L" if in_channels == 1 else "RGB")


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
