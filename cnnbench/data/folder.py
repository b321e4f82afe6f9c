"""Your own images: an image-folder tree, scanned and split, served from its decoded-image cache
(`data.loader=memory`, the default) or decoded every epoch by a DataLoader (`data.loader=torch`)."""

import copy
import logging
from collections import Counter
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnbench.data.augment import Augment
from cnnbench.data.cache import Decoded, check_readable, decoded_images, default_cache_dir
from cnnbench.data.images import ImageFiles, scan_class_folders
from cnnbench.data.loader import EpochSamples, data_loader, sample_transform
from cnnbench.data.memory import MemoryLoader, process_rank
from cnnbench.data.splits import Data, stratified_split, stratified_subset
from cnnbench.errors import CnnbenchError
from cnnbench.runtime.host import memory_bytes

log = logging.getLogger("cnnbench")

# With a random-resized crop, training images are stored this much bigger than the training size:
# the crops, often a small part of the image, are then cut from finer pixels. Validation images
# are stored at the training size, as they are used.
CROP_MARGIN = 1.25


def build_image_folder(cfg: DictConfig, batch_size: int, seed: int, num_workers: int,
                       device: torch.device) -> Data:
    """The train and validation streams of an image folder, already split (train/ + val/ or test/)
    or split here by class."""
    root = Path(cfg.root).expanduser().absolute()
    if not root.is_dir():
        raise CnnbenchError(f"data.root={cfg.root}: no such folder")
    mode = "L" if cfg.grayscale else "RGB"
    size = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    val_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir():
        if val_dir is None:
            raise CnnbenchError(f"data.root={root} has train/ but no val/ or test/ folder beside it")
        train_set, val_set = scan_class_folders(root / "train", mode, size), scan_class_folders(val_dir, mode, size)
        if train_set.classes != val_set.classes:
            raise CnnbenchError(f"{root / 'train'} and {val_dir} hold different class folders: "
                                f"{train_set.classes} vs {val_set.classes}")
        train_indices, val_indices = list(range(len(train_set))), list(range(len(val_set)))
    else:
        train_set = scan_class_folders(root, mode, size)
        val_set = copy.copy(train_set)  # the same files, with the validation transform
        train_indices, val_indices = stratified_split(train_set.targets, cfg.val_fraction, seed)
    if cfg.train_limit:  # drawn by the seed the split is drawn by
        train_indices = stratified_subset(train_set.targets, train_indices, cfg.train_limit, seed)
    if len(train_set.classes) < 2:
        raise CnnbenchError(f"data.root={root} has {len(train_set.classes)} class folder "
                            f"({', '.join(train_set.classes)}); classification needs at least 2")
    if not val_indices:  # no class has a second image to hold out: validation would score nothing
        raise CnnbenchError(
            f"data.root={root}: the validation split would be empty: the classes hold "
            f"{class_counts(train_set)} image(s), and data.val_fraction={cfg.val_fraction} holds out "
            "that share of each class (at least 1) only from a class of 2 or more; add images, or "
            "split them yourself into train/ and val/ folders")
    channels = 1 if cfg.grayscale else 3
    if cfg.loader == "torch":
        train_set.transform = sample_transform(cfg, train=True, size=size)
        val_set.transform = sample_transform(cfg, train=False, size=size)
        loaders = [data_loader(EpochSamples(dataset, indices), batch_size, shuffle, seed, num_workers,
                               device, cfg.bad_images)
                   for dataset, indices, shuffle in ((train_set, train_indices, True),
                                                     (val_set, val_indices, False))]
    else:
        loaders = cached_loaders(cfg, root, (train_set, train_indices), (val_set, val_indices), mode, size,
                                 batch_size, seed, device)
    return Data(loaders[0], loaders[1], train_set.classes, channels, size, list(cfg.mean), list(cfg.std))


def cached_loaders(cfg: DictConfig, root: Path, train: tuple[ImageFiles, list[int]],
                   val: tuple[ImageFiles, list[int]], mode: str, size: tuple[int, int], batch_size: int,
                   seed: int, device: torch.device) -> list[MemoryLoader]:
    """In-memory loaders over the decoded images of each tree (decoded once, cached on disk)."""
    augment = Augment.from_config(cfg.augment)
    cache_dir = Path(cfg.cache_dir or default_cache_dir()).expanduser() if cfg.get("cache", True) else None
    budget = memory_budget(cfg.get("memory_budget_gb"), device)
    rank, world = process_rank()
    placed: dict[tuple, tuple[Decoded, torch.Tensor, str]] = {}  # an unsplit tree serves both splits
    loaders = []
    for (files, indices), training in ((train, True), (val, False)):
        stored = size
        if training and augment.resized_crop_scale:
            stored = tuple(round(side * CROP_MARGIN) for side in size)
        if (files.root, stored) not in placed:
            decoded = decoded_images(files.root, files.samples, mode, stored, cache_dir)
            check_readable(decoded, cfg.bad_images)
            placed[files.root, stored] = (decoded, *place(decoded, budget, device))
        decoded, pixels, where = placed[files.root, stored]
        rows = split_rows(decoded, files, indices)
        if not len(rows):
            raise CnnbenchError(f"data.root={root}: the {'training' if training else 'validation'} split is "
                                f"empty: none of its {len(indices)} image(s) could be read "
                                "(data.bad_images=skip left them out); replace them or add readable ones")
        log.info("%s: %s %s images of %dx%d, %s", files.root, f"{len(rows):,}",
                 "training" if training else "validation", *stored, where)
        loader = MemoryLoader(pixels, decoded.labels, batch_size, mean=list(cfg.mean), std=list(cfg.std),
                              shuffle=training, seed=seed, augment=augment if training else None, size=size,
                              rows=rows, device=device, rank=rank, world=world)
        loader.files = [decoded.files[row] for row in rows.tolist()]
        loader.skipped = {path for path in decoded.unreadable if path in chosen(files, indices)}
        for path in sorted(loader.skipped):
            log.warning("skipping %s: not a readable image (%s)", path, decoded.unreadable[path])
        loaders.append(loader)
    return loaders


def place(decoded: Decoded, budget: int, device: torch.device) -> tuple[torch.Tensor, str]:
    """The decoded pixels where batches are gathered from: in the training device's memory when
    they fit the budget (a sequential read of the cache file), else memory-mapped from the file,
    each batch then copied to the device. And the path taken, in words."""
    pixels, size = decoded.pixels, f"{decoded.pixels.numel() / 2**20:,.1f} MB"
    if decoded.folder is None:  # decoded in memory for this run (data.cache=false)
        return pixels.to(device), f"decoded in memory, {size} (data.cache=false)"
    if pixels.numel() > budget:
        return pixels, (f"memory-mapped from the cache {decoded.folder}, {size}: more than "
                        f"data.memory_budget_gb={budget / 2**30:.1f} allows in {device} memory")
    return pixels.to(device, copy=True), f"held in {device} memory, {size}, from the cache {decoded.folder}"


def class_counts(files: ImageFiles) -> str:
    """How many images each class holds, in words: `cat 1, dog 1, fox 1`."""
    counts = Counter(files.targets)
    return ", ".join(f"{name} {counts[label]}" for label, name in enumerate(files.classes))


def chosen(files: ImageFiles, indices: list[int]) -> set[str]:
    return {files.samples[index][0] for index in indices}


def split_rows(decoded: Decoded, files: ImageFiles, indices: list[int]) -> torch.Tensor:
    """The rows of the decoded images that hold the samples at `indices` (unreadable ones left out)."""
    row_of = {path: row for row, path in enumerate(decoded.files)}
    return torch.tensor([row_of[files.samples[index][0]] for index in indices
                         if files.samples[index][0] in row_of], dtype=torch.long)


def memory_budget(gigabytes: float | None, device: torch.device) -> int:
    """Bytes of decoded images to hold in the device's memory: `data.memory_budget_gb`, or a
    quarter of the device's memory (the host's RAM for the CPU and Apple's unified memory)."""
    if gigabytes is not None:
        return int(gigabytes * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return (memory_bytes() or 2**34) // 4  # not a POSIX system: 4 GiB
