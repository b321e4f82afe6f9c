"""Datasets: find them on disk, load them, and serve normalised batches to the training loop.

Two ways to serve batches, chosen by `data.loader`:
- `memory` (the built-in datasets and fake): the whole split is one uint8 tensor on the
  training device; each batch is gathered, augmented, converted and normalised there
  (memory.py, augment.py). Per-sample PIL transforms in a DataLoader cost about as much as
  LeNet's whole compute on a 2-core CPU.
- `torch`: a standard DataLoader with per-sample transforms and worker processes (loader.py),
  for ImageFolder trees that need decoding from disk (and for comparison on the small datasets).

Reading each dataset from disk is in datasets.py; image files and folders in images.py.
"""

from typing import Any

import torch
from omegaconf import DictConfig

from cnnbench.data.augment import Augment, random_crop_flip
from cnnbench.data.datasets import (
    load_cifar10,
    load_cifar100,
    load_emnist,
    load_idx_dataset,
    load_stl10,
    load_svhn,
    make_fake,
    permute_pixels,
    pixel_permutation,
    read_idx,
)
from cnnbench.data.folder import build_image_folder
from cnnbench.data.images import IMAGE_ERRORS, IMAGE_EXTENSIONS, ImageFiles
from cnnbench.data.loader import EpochSamples, TensorImages, data_loader, sample_transform
from cnnbench.data.memory import MemoryLoader, OneBatch, process_rank
from cnnbench.data.splits import Batch, Data, hold_out, split_record, stratified_split
from cnnbench.errors import CnnbenchError

# What the other packages use, by name
__all__ = ["IMAGE_ERRORS", "IMAGE_EXTENSIONS", "Data", "ImageFiles", "MemoryLoader", "OneBatch", "build_data",
           "permute_pixels", "pixel_permutation", "random_crop_flip", "read_idx", "sample_transform",
           "stratified_split"]


LOADERS = {"mnist": load_idx_dataset, "fashion_mnist": load_idx_dataset, "kmnist": load_idx_dataset,
           "emnist": load_emnist, "cifar10": load_cifar10, "cifar100": load_cifar100, "svhn": load_svhn,
           "stl10": load_stl10}


def build_data(cfg: DictConfig, *, batch_size: int, seed: int, device: torch.device,
               num_workers: int = 0) -> Data:
    """Load the dataset `cfg` names, split it into training, validation and test images, and wrap
    each in the batch stream `cfg.loader` asks for."""
    if cfg.augment.get("resized_crop_scale") and cfg.augment.get("crop_padding"):
        raise CnnbenchError("data.augment.resized_crop_scale and data.augment.crop_padding are two ways to "
                            "crop: set crop_padding=0 or resized_crop_scale=null")
    if cfg.name == "imagefolder":
        return build_image_folder(cfg, batch_size, seed, num_workers, device)
    if cfg.name == "fake":
        splits, classes = make_fake(cfg, seed)
        members = {name: list(range(len(labels))) for name, (_, labels) in splits.items()}
    elif cfg.name in LOADERS:
        splits, classes = LOADERS[cfg.name](cfg)
        splits, members = hold_out_validation(splits, cfg)
    else:
        raise CnnbenchError(f"data.name={cfg.name!r} is not a dataset cnnbench knows; "
                            f"use one of {', '.join(sorted([*LOADERS, 'fake', 'imagefolder']))}")
    if cfg.train_limit:
        splits["train"] = tuple(tensor[:cfg.train_limit] for tensor in splits["train"])
        members["train"] = members["train"][:cfg.train_limit]
    if cfg.get("permute_pixels"):  # .get: configs saved before the key existed
        # One shuffle of the pixel positions for every split alike, fixed by permute_seed and not
        # by the run's seed: it is part of the dataset, so every model and seed sees the same one.
        # An MLP does not care where its pixels are; a CNN's small local filters do.
        permutation = pixel_permutation(*splits["train"][0].shape[-2:], cfg.get("permute_seed", 0))
        splits = {split: (permute_pixels(images, permutation), labels)
                  for split, (images, labels) in splits.items()}
    channels = splits["train"][0].shape[1]  # as the config says: config/checks.py checked mean and std
    native = tuple(splits["train"][0].shape[-2:])
    resize = (cfg.resize, cfg.resize) if isinstance(cfg.resize, int) else tuple(cfg.resize or native)
    streams = {}
    for name, (images, labels) in splits.items():
        train = name == "train"
        if cfg.loader == "memory":
            rank, world = process_rank()
            streams[name] = MemoryLoader(images.to(device), labels.to(device), batch_size, mean=list(cfg.mean),
                                         std=list(cfg.std), shuffle=train, seed=seed, size=resize, rank=rank,
                                         world=world, augment=Augment.from_config(cfg.augment) if train else None)
        elif cfg.loader == "torch":
            samples = TensorImages(images, labels, sample_transform(cfg, train, resize, native))
            streams[name] = data_loader(EpochSamples(samples, range(len(labels))), batch_size, train, seed,
                                        num_workers, device)
        else:
            raise CnnbenchError(f"data.loader={cfg.loader!r}: use memory or torch")
    # the training and test rows in words (the validation rows are listed): split.json stays small
    limit = f", the first {cfg.train_limit:,}" if cfg.train_limit else ""
    listed = {"train": f"the rows of the training file not held out for validation{limit}",
              "test": "every row of the test file"} if cfg.name in LOADERS else {}
    return Data(streams["train"], streams.get("val"), classes, channels, resize, list(cfg.mean), list(cfg.std),
                test=streams.get("test"), split=split_record(members, holdout_description(cfg), listed))


def hold_out_validation(splits: dict[str, Batch], cfg: DictConfig) -> tuple[dict[str, Batch], dict[str, list]]:
    """A dataset's own train and test splits as training, validation and test images: data.val_split
    of the training images (a count or a fraction, stratified, chosen by data.split_seed) are the
    validation images; and which rows of the dataset's files each split holds.

    A config of cnnbench 0.1 has no val_split: its runs validated on the test split, and go on so."""
    train_images, train_labels = splits["train"]
    test_rows = list(range(len(splits["test"][1])))
    amount = cfg.get("val_split")
    if amount is None:  # the 0.1 protocol: the test split served as validation
        return ({"train": splits["train"], "val": splits["test"], "test": splits["test"]},
                {"train": list(range(len(train_labels))), "val": test_rows, "test": test_rows})
    if not amount:  # val_split=0: no validation, nothing is chosen
        return ({"train": splits["train"], "test": splits["test"]},
                {"train": list(range(len(train_labels))), "test": test_rows})
    if amount >= 1 and amount > len(train_labels) / 2:
        raise CnnbenchError(f"data.val_split={amount} would hold out more than half of the {len(train_labels):,} "
                            f"training images of {cfg.name}: give a smaller count, or a fraction (e.g. "
                            "data.val_split=0.1)")
    kept, held = hold_out(train_labels.tolist(), amount, cfg.get("split_seed", 0))
    rows = {name: torch.tensor(part, dtype=torch.long) for name, part in (("train", kept), ("val", held))}
    carved = {name: (train_images.index_select(0, index), train_labels.index_select(0, index))
              for name, index in rows.items()}
    return {**carved, "test": splits["test"]}, {"train": kept, "val": held, "test": test_rows}


def holdout_description(cfg: DictConfig) -> dict[str, Any]:
    """What decided a built-in dataset's split, for its record."""
    # the options that choose the files or labels read: EMNIST's split, CIFAR-100's labels, SVHN's extra
    chosen = {key: cfg[key] for key in ("split", "labels", "svhn_extra") if key in cfg}
    return {"dataset": cfg.name, **chosen, "val_split": cfg.get("val_split"),
            "split_seed": cfg.get("split_seed", 0), "train_limit": cfg.get("train_limit")}
