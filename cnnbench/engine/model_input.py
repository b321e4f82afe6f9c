"""Whether a model can take its data's images and training batches, tried once at set-up: a model
too small for its images (LeNet's 5x5 kernels at 4 px), or a BatchNorm given one image per
training batch, would otherwise end the run's first step in a traceback.

The check is one forward pass of one dummy image through the run's own model, in evaluation mode
and without gradients: no random number is drawn and no statistic changes. Which size is the
smallest that works is found by trying models built at other sizes, only when a size fails.
"""

import contextlib
from collections.abc import Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.config.keys import model_name
from cnnbench.data import Data
from cnnbench.errors import CnnbenchError

# The largest square size tried when looking for the smallest one a model takes: past it, a
# failure is not about the size (every registered model runs at 28, 32, 96 and 224 pixels).
LARGEST_TRIED = 512

Builder = Callable[[list[int]], nn.Module]  # a model of the run's config, built for [height, width]


def forward_fails(model: nn.Module, images: torch.Tensor, training: bool = False) -> str | None:
    """Why `model` cannot take `images` (its error's first line), or None when it can."""
    was_training = model.training
    model.train(training)
    try:
        with torch.no_grad(), no_kernel_search():
            model(images)
    except (RuntimeError, ValueError, IndexError) as error:  # too small, BatchNorm of one value
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    finally:
        model.train(was_training)
    return None


@contextlib.contextmanager
def no_kernel_search() -> Iterator[None]:
    """cuDNN without benchmarking for a while: a one-image batch is never trained on, so timing
    kernels for it would only cost time."""
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark


def smallest_size(build: Builder, channels: int, start: int) -> int | None:
    """The smallest square size above `start` that models from `build` take, or None when none up
    to LARGEST_TRIED does. Sizes only grow every layer's output, so a binary search finds it."""
    def takes(size: int) -> bool:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights
            model = build([size, size])
        return forward_fails(model, torch.zeros(1, channels, size, size)) is None

    low, high = start, start + 1  # low fails; find a `high` that works
    while not takes(high):
        if high >= LARGEST_TRIED:
            return None
        low, high = high, min(2 * high, LARGEST_TRIED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if takes(middle) else (middle, high)
    return high


def size_key(data_cfg: DictConfig) -> str:
    """The key that sets the size the model sees: data.resize, else the dataset's own size key."""
    return "data.image_size" if "image_size" in data_cfg and not data_cfg.get("resize") else "data.resize"


def check_image_size(model: nn.Module, cfg: DictConfig, channels: int, height: int, width: int,
                     device: torch.device, build: Builder) -> None:
    """Refuse in one line images too small for the model, naming the smallest size it takes."""
    problem = forward_fails(model, torch.zeros(1, channels, height, width, device=device))
    if not problem:
        return
    key = size_key(cfg.data)
    smallest = smallest_size(build, channels, min(height, width))
    name = model_name(cfg.model)
    if smallest is None:
        raise CnnbenchError(f"{setting(cfg, key)}: {name} cannot take {channels}x{height}x{width} images: "
                            f"{problem}")
    raise CnnbenchError(f"{setting(cfg, key)}: {name} cannot take {height}x{width} images; the smallest it "
                        f"takes is {smallest}x{smallest}: use {key}={smallest} or more")


def check_model_input(model: nn.Module, cfg: DictConfig, data: Data, device: torch.device,
                      build: Builder) -> None:
    """Refuse in one line images too small for the model (naming the smallest size it takes) and
    training batches of one image its BatchNorm cannot normalise (naming the key that made them)."""
    height, width = data.image_size
    check_image_size(model, cfg, data.in_channels, height, width, device, build)
    if data.train.smallest_batch() > 1:
        return
    # A model of its own to train on (the run's BatchNorm statistics stay as they are), under a forked
    # generator: its initial weights and dropout masks leave the run's random numbers as they were.
    with torch.random.fork_rng(devices=[]):
        trained = build([height, width])
        problem = forward_fails(trained, torch.zeros(1, data.in_channels, height, width), training=True)
    if not problem:
        return
    if cfg.batch_size == 1:
        given = "batch_size=1"
    elif cfg.overfit:
        given = "overfit=true: it trains on the first validation batch, and that holds 1 image"
    else:
        key = "data.train_limit" if cfg.data.get("train_limit") else \
            "data.num_train" if cfg.data.name == "fake" else "data.root"
        given = f"{setting(cfg, key)}: the training split holds 1 image"
    name = model_name(cfg.model)
    # torch's BatchNorm and the scratch one in models/batchnorm.py both say "... value per channel ..."
    why = (f"is too few for {name}'s BatchNorm (it normalises by the batch's statistics)"
           if "per channel" in problem else f"is one {name} cannot train on ({problem})")
    raise CnnbenchError(f"{given}: a training batch of 1 image {why}; train on batches of 2 or more "
                        "(batch_size, more images), or a model without BatchNorm")


def setting(cfg: DictConfig, key: str) -> str:
    """`key=value` as the command line writes it."""
    value = OmegaConf.select(cfg, key)
    return f"{key}={'null' if value is None else value}"
