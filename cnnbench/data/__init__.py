"""Datasets: find them on disk, load them, and serve normalised batches to the training loop.

Two ways to serve batches, chosen by `data.loader`:
- `memory` (MNIST, Fashion-MNIST, CIFAR-10, fake): the whole split is one uint8 tensor on the
  training device; each batch is gathered, augmented, converted and normalised there
  (memory.py, augment.py). Per-sample PIL transforms in a DataLoader cost about as much as
  LeNet's whole compute on a 2-core CPU.
- `torch`: a standard DataLoader with per-sample transforms and worker processes (loader.py),
  for ImageFolder trees that need decoding from disk (and for comparison on the small datasets).

Reading each dataset from disk is in datasets.py; image files and folders in images.py.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnbench.data.augment import crop_flip_draws, random_crop_flip
from cnnbench.data.datasets import (
    IDX_FILES,
    _find_idx_folder,
    _idx_file,
    load_cifar10,
    load_idx_dataset,
    make_fake,
    permute_pixels,
    pixel_permutation,
    read_idx,
)
from cnnbench.data.images import (
    IMAGE_ERRORS,
    IMAGE_EXTENSIONS,
    ImageFiles,
    _image_files,
    image_problem,
    open_image,
    stratified_split,
)
from cnnbench.data.loader import EpochDataLoader, EpochSamples, TensorImages, _data_loader, sample_transform
from cnnbench.data.memory import Batch, MemoryLoader, OneBatch, epoch_seed, process_rank, shard, shard_size
from cnnbench.errors import CnnbenchError

__all__ = ["IDX_FILES", "IMAGE_ERRORS", "IMAGE_EXTENSIONS", "Batch", "Data", "EpochDataLoader", "ImageFiles",
           "MemoryLoader", "OneBatch", "build_data", "crop_flip_draws", "epoch_seed", "image_problem",
           "open_image", "permute_pixels", "pixel_permutation", "random_crop_flip", "read_idx",
           "sample_transform", "shard", "shard_size", "stratified_split", "_find_idx_folder", "_idx_file"]


@dataclass
class Data:
    """What a run needs from its dataset: the two batch streams and what the model must match."""

    train: "MemoryLoader | EpochDataLoader"
    val: "MemoryLoader | EpochDataLoader"
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]  # height, width of the batches the model sees
    mean: list[float]  # the normalisation the batches carry (to show or undo it)
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_image_folder(cfg: DictConfig, batch_size: int, seed: int, num_workers: int,
                       device: torch.device) -> Data:
    """A DataLoader pair over an ImageFolder tree, already split or split here by class."""
    root = Path(cfg.root).expanduser().absolute()
    if not root.is_dir():
        raise CnnbenchError(f"data.root={cfg.root}: no such folder")
    mode = "L" if cfg.grayscale else "RGB"
    size = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    val_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir():
        if val_dir is None:
            raise CnnbenchError(f"data.root={root} has train/ but no val/ or test/ folder beside it")
        train_set, val_set = _image_files(root / "train", mode, size), _image_files(val_dir, mode, size)
        if train_set.classes != val_set.classes:
            raise CnnbenchError(f"{root / 'train'} and {val_dir} hold different class folders: "
                                f"{train_set.classes} vs {val_set.classes}")
        train_indices, val_indices = list(range(len(train_set))), list(range(len(val_set)))
    else:
        train_set = _image_files(root, mode, size)
        val_set = copy.copy(train_set)  # the same files, with the validation transform
        train_indices, val_indices = stratified_split(train_set.targets, cfg.val_fraction, seed)
    if cfg.train_limit:
        train_indices = train_indices[:cfg.train_limit]
    if len(train_set.classes) < 2:
        raise CnnbenchError(f"data.root={root} has {len(train_set.classes)} class folder "
                            f"({', '.join(train_set.classes)}); classification needs at least 2")
    train_set.transform = sample_transform(cfg, train=True, size=size)
    val_set.transform = sample_transform(cfg, train=False, size=size)
    loaders = [_data_loader(EpochSamples(dataset, indices), batch_size, shuffle, seed, num_workers,
                            device, cfg.bad_images)
               for dataset, indices, shuffle in ((train_set, train_indices, True),
                                                 (val_set, val_indices, False))]
    return Data(loaders[0], loaders[1], train_set.classes, 1 if cfg.grayscale else 3, size,
                list(cfg.mean), list(cfg.std))


LOADERS = {"mnist": load_idx_dataset, "fashion_mnist": load_idx_dataset, "cifar10": load_cifar10}


def build_data(cfg: DictConfig, *, batch_size: int, seed: int, device: torch.device,
               num_workers: int = 0) -> Data:
    """Load the dataset `cfg` names and wrap it in the batch streams `cfg.loader` asks for."""
    if cfg.name == "imagefolder":
        return build_image_folder(cfg, batch_size, seed, num_workers, device)
    if cfg.loader == "memory" and cfg.augment.get("color_jitter"):
        # torchvision's ColorJitter draws one set of factors per call, i.e. per batch here; the
        # per-sample transforms of the DataLoader path jitter each image on its own
        raise CnnbenchError(f"data.augment.color_jitter={cfg.augment.color_jitter} needs data.loader=torch "
                            "(the in-memory loader does not jitter colours); or set it to 0")
    if cfg.name == "fake":
        splits, classes = make_fake(cfg, seed)
    elif cfg.name in LOADERS:
        splits, classes = LOADERS[cfg.name](cfg)
    else:
        raise CnnbenchError(f"data.name={cfg.name!r} is not a dataset cnnbench knows; "
                            f"use one of {', '.join(sorted([*LOADERS, 'fake', 'imagefolder']))}")
    if cfg.train_limit:
        splits["train"] = tuple(tensor[:cfg.train_limit] for tensor in splits["train"])
    if cfg.get("permute_pixels"):  # .get: configs saved before the key existed
        # One shuffle of the pixel positions for train and val alike, fixed by permute_seed and not
        # by the run's seed: it is part of the dataset, so every model and seed sees the same one.
        # An MLP does not care where its pixels are; a CNN's small local filters do.
        permutation = pixel_permutation(*splits["train"][0].shape[-2:], cfg.get("permute_seed", 0))
        splits = {split: (permute_pixels(images, permutation), labels)
                  for split, (images, labels) in splits.items()}
    channels = splits["train"][0].shape[1]
    for key in ("mean", "std"):
        if len(cfg[key]) != channels:
            raise CnnbenchError(f"data.{key} has {len(cfg[key])} values; {cfg.name} images have "
                                f"{channels} channel(s): give one value per channel")
    native = tuple(splits["train"][0].shape[-2:])
    resize = (cfg.resize, cfg.resize) if isinstance(cfg.resize, int) else tuple(cfg.resize or native)
    if cfg.loader == "memory":
        streams = [
            MemoryLoader(images.to(device), labels.to(device), batch_size, mean=list(cfg.mean),
                         std=list(cfg.std), shuffle=train, seed=seed, resize=resize,
                         rank=process_rank()[0], world=process_rank()[1],
                         crop_padding=cfg.augment.crop_padding if train else 0,
                         hflip=cfg.augment.hflip and train)
            for (images, labels), train in ((splits["train"], True), (splits["val"], False))]
    elif cfg.loader == "torch":
        streams = []
        for (images, labels), train in ((splits["train"], True), (splits["val"], False)):
            samples = TensorImages(images, labels, sample_transform(cfg, train, resize, native))
            streams.append(_data_loader(EpochSamples(samples, range(len(labels))), batch_size, train,
                                        seed, num_workers, device))
    else:
        raise CnnbenchError(f"data.loader={cfg.loader!r}: use memory or torch")
    return Data(streams[0], streams[1], classes, channels, resize, list(cfg.mean), list(cfg.std))
