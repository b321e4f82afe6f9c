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

import torch
from omegaconf import DictConfig

from cnnbench.data.augment import Augment, random_crop_flip
from cnnbench.data.datasets import (
    load_cifar10,
    load_idx_dataset,
    make_fake,
    permute_pixels,
    pixel_permutation,
    read_idx,
)
from cnnbench.data.folder import build_image_folder
from cnnbench.data.images import IMAGE_ERRORS, IMAGE_EXTENSIONS, ImageFiles
from cnnbench.data.loader import EpochSamples, TensorImages, data_loader, sample_transform
from cnnbench.data.memory import MemoryLoader, OneBatch, process_rank
from cnnbench.data.splits import Data, stratified_split
from cnnbench.errors import CnnbenchError

# What the other packages use, by name
__all__ = ["IMAGE_ERRORS", "IMAGE_EXTENSIONS", "Data", "ImageFiles", "MemoryLoader", "OneBatch", "build_data",
           "permute_pixels", "pixel_permutation", "random_crop_flip", "read_idx", "sample_transform",
           "stratified_split"]


LOADERS = {"mnist": load_idx_dataset, "fashion_mnist": load_idx_dataset, "cifar10": load_cifar10}


def build_data(cfg: DictConfig, *, batch_size: int, seed: int, device: torch.device,
               num_workers: int = 0) -> Data:
    """Load the dataset `cfg` names and wrap it in the batch streams `cfg.loader` asks for."""
    if cfg.augment.get("resized_crop_scale") and cfg.augment.get("crop_padding"):
        raise CnnbenchError("data.augment.resized_crop_scale and data.augment.crop_padding are two ways to "
                            "crop: set crop_padding=0 or resized_crop_scale=null")
    if cfg.name == "imagefolder":
        return build_image_folder(cfg, batch_size, seed, num_workers, device)
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
    channels = splits["train"][0].shape[1]  # as the config says: config/checks.py checked mean and std
    native = tuple(splits["train"][0].shape[-2:])
    resize = (cfg.resize, cfg.resize) if isinstance(cfg.resize, int) else tuple(cfg.resize or native)
    if cfg.loader == "memory":
        rank, world = process_rank()
        streams = [
            MemoryLoader(images.to(device), labels.to(device), batch_size, mean=list(cfg.mean),
                         std=list(cfg.std), shuffle=train, seed=seed, size=resize, rank=rank, world=world,
                         augment=Augment.from_config(cfg.augment) if train else None)
            for (images, labels), train in ((splits["train"], True), (splits["val"], False))]
    elif cfg.loader == "torch":
        streams = []
        for (images, labels), train in ((splits["train"], True), (splits["val"], False)):
            samples = TensorImages(images, labels, sample_transform(cfg, train, resize, native))
            streams.append(data_loader(EpochSamples(samples, range(len(labels))), batch_size, train,
                                        seed, num_workers, device))
    else:
        raise CnnbenchError(f"data.loader={cfg.loader!r}: use memory or torch")
    return Data(streams[0], streams[1], classes, channels, resize, list(cfg.mean), list(cfg.std))
