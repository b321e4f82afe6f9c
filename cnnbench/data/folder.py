"""Your own images: an image-folder tree, scanned and split, served from its decoded-image cache
(`data.loader=memory`, the default) or decoded every epoch by a DataLoader (`data.loader=torch`)."""

import copy
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnnbench.data.augment import Augment
from cnnbench.data.cache import Decoded, check_readable, decoded_images, default_cache_dir
from cnnbench.data.images import ImageFiles, scan_class_folders, tree_identity
from cnnbench.data.loader import EpochSamples, data_loader, sample_transform
from cnnbench.data.memory import MemoryLoader, process_rank
from cnnbench.data.splits import Data, hold_out, split_record, stratified_split, stratified_subset
from cnnbench.errors import CnnbenchError
from cnnbench.runtime.host import memory_bytes

log = logging.getLogger("cnnbench")

# With a random-resized crop, training images are stored this much bigger than the training size:
# the crops, often a small part of the image, are then cut from finer pixels. Validation images
# are stored at the training size, as they are used.
CROP_MARGIN = 1.25
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


# (the part's name, the images of one tree, the indices of that tree's samples it holds)
Part = tuple[str, ImageFiles, list[int]]


def build_image_folder(cfg: DictConfig, batch_size: int, seed: int, num_workers: int,
                       device: torch.device) -> Data:
    """The training, validation and test streams of an image folder: from its train/, val/ and
    test/ folders where it has them, else held out here, per class."""
    root = Path(cfg.root).expanduser().absolute()
    if not root.is_dir():
        raise CnnbenchError(f"data.root={cfg.root}: no such folder")
    mode = "L" if cfg.grayscale else "RGB"
    size = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
    parts = split_tree(cfg, root, mode, size, seed)
    train_set, train_indices = parts[0][1], parts[0][2]
    if cfg.train_limit:  # drawn by the seed the split is drawn by
        split_seed = cfg.split_seed if cfg.get("val_split") is not None else seed  # (0.1: the run's)
        parts[0] = ("train", train_set, stratified_subset(train_set.targets, train_indices, cfg.train_limit,
                                                          split_seed))
    if len(train_set.classes) < 2:
        raise CnnbenchError(f"data.root={root} has {len(train_set.classes)} class folder "
                            f"({', '.join(train_set.classes)}); classification needs at least 2")
    if any(name == "test" and not indices for name, _, indices in parts):
        log.warning("%s: too few images to hold out a test split (data.test_split): the run is scored on its "
                    "validation split only", root)
        parts = [part for part in parts if part[0] != "test" or part[2]]
    refuse_empty_parts(cfg, root, parts)
    channels = 1 if cfg.grayscale else 3
    if cfg.loader == "torch":
        duplicates = duplicates_across(parts, file_digest)
        parts = without_duplicates(parts, duplicates) if cfg.get("drop_duplicates") else parts
        streams = {}
        for name, files, indices in parts:
            files.transform = sample_transform(cfg, train=name == "train", size=size)
            streams[name] = data_loader(EpochSamples(files, indices), batch_size, name == "train", seed,
                                        num_workers, device, cfg.bad_images)
    else:
        trees = decode_trees(cfg, parts, mode, size, device)
        digests = {path: digest for decoded, _, _ in trees.values()
                   for path, digest in zip(decoded.files, decoded.digests, strict=True)}
        duplicates = duplicates_across(parts, digests.get)
        parts = without_duplicates(parts, duplicates) if cfg.get("drop_duplicates") else parts
        streams = cached_loaders(cfg, parts, trees, size, batch_size, seed, device)
    report_duplicates(duplicates, root, dropped=bool(cfg.get("drop_duplicates")))
    members = {name: [os.path.relpath(files.samples[i][0], root) for i in indices] for name, files, indices in parts}
    how = {"dataset": "imagefolder", "folders": [name for name in ("train", "val", "test") if (root / name).is_dir()],
           "val_split": cfg.get("val_split"), "test_split": cfg.get("test_split"), "split_seed": cfg.get("split_seed"),
           "duplicates_across_splits": {name: len(paths) for name, paths in duplicates.items()},
           "duplicates_left_out": bool(cfg.get("drop_duplicates")) and bool(duplicates)}
    identity = {**tree_identity(root), "classes": train_set.classes}
    return Data(streams["train"], streams.get("val"), train_set.classes, channels, size, list(cfg.mean),
                list(cfg.std), identity, test=streams.get("test"), split=split_record(members, how))


def split_tree(cfg: DictConfig, root: Path, mode: str, size: tuple[int, int], seed: int) -> list[Part]:
    """The tree's parts, training first: validation from val/, else held out of the training
    images by data.val_split; test from test/, else (when there is no val/ either) held out by
    data.test_split. A tree of train/ and val/ alone has no test split, and says so.

    A config of cnnbench 0.1 (no val_split) splits as that release did: train/ with val/ or test/
    as validation, or data.val_fraction held out by the run's seed, and no test split."""
    folders = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in folders:
        trees = {name: scan_class_folders(folder, mode, size) for name, folder in folders.items()}
        for name, files in trees.items():
            if files.classes != trees["train"].classes:
                raise CnnbenchError(f"{folders['train']} and {folders[name]} hold different class folders: "
                                    f"{trees['train'].classes} vs {files.classes}")
    elif folders.get("val") or folders.get("test"):
        raise CnnbenchError(f"data.root={root} has {' and '.join(f'{name}/' for name in folders)} but no train/ "
                            "folder beside it")
    else:
        trees = {"train": scan_class_folders(root, mode, size)}
    train = trees["train"]
    everything = list(range(len(train)))
    if cfg.get("val_split") is None:  # the 0.1 split
        held = trees.get("val") or trees.get("test")
        if held is not None:
            return [("train", train, everything), ("val", held, list(range(len(held))))]
        kept, val = stratified_split(train.targets, cfg.val_fraction, seed)
        return [("train", train, kept), ("val", copy.copy(train), val)]
    val_amount = cfg.val_fraction if cfg.get("val_fraction") is not None else cfg.val_split
    test_amount = cfg.get("test_split") or 0
    parts: list[Part] = []
    kept = everything
    if "test" in trees:
        parts.append(("test", trees["test"], list(range(len(trees["test"])))))
    elif "val" not in trees and test_amount:
        kept, test = held_out_of(train.targets, kept, test_amount, cfg.split_seed)
        parts.append(("test", copy.copy(train), test))  # the same files, with the evaluation transform
    else:
        log.warning("%s: no test split (it has %s): the run is scored on its validation split only; add a "
                    "test/ folder to score it on images nothing was chosen on", root,
                    "train/ and val/" if "val" in trees else "data.test_split=0")
    if "val" in trees:
        parts.append(("val", trees["val"], list(range(len(trees["val"])))))
    elif val_amount:
        # of all the tree's images when given as a fraction: 0.15 and 0.15 make 70/15/15
        share = val_amount * len(everything) / len(kept) if val_amount < 1 else val_amount
        kept, val = held_out_of(train.targets, kept, share, cfg.split_seed + 1)
        parts.append(("val", copy.copy(train), val))
    order = {"val": 0, "test": 1}
    return [("train", train, kept), *sorted(parts, key=lambda part: order[part[0]])]


def refuse_empty_parts(cfg: DictConfig, root: Path, parts: list[Part]) -> None:
    """Refuse, in one line naming each class's images, a split the tree is too small to fill: a
    part that would hold nothing scores nothing, or trains nothing."""
    train = parts[0][1]
    for name, _, indices in parts:
        if not indices:
            amount = {"val": "data.val_split", "test": "data.test_split"}.get(name, "data.train_limit")
            raise CnnbenchError(
                f"data.root={root}: the {SPLIT_WORDS[name]} split would be empty: the classes hold "
                f"{class_counts(train)} image(s), and {amount} holds out a class's share only where it "
                "keeps one of its images for training; add images, set "
                f"{amount} higher (a count), or split them yourself into train/, val/ and test/ folders")


def held_out_of(targets: list[int], among: list[int], amount: float, seed: int) -> tuple[list[int], list[int]]:
    """hold_out over the items `among` (indices into `targets`): (kept, held out), as indices."""
    kept, held = hold_out([targets[i] for i in among], amount, seed)
    return [among[i] for i in kept], [among[i] for i in held]


def stored_size(cfg: DictConfig, part: str, size: tuple[int, int]) -> tuple[int, int]:
    """The size a part's images are decoded and cached at: the training size, or with a
    random-resized crop, CROP_MARGIN times it for the training images (crops from finer pixels)."""
    if part == "train" and cfg.augment.get("resized_crop_scale"):
        return tuple(round(side * CROP_MARGIN) for side in size)
    return size


def decode_trees(cfg: DictConfig, parts: list[Part], mode: str, size: tuple[int, int],
                 device: torch.device) -> dict[tuple, tuple[Decoded, torch.Tensor, str]]:
    """Each tree the parts use, at each size they need it: its decoded images (from the cache, or
    decoded once now), the pixels where batches are gathered from, and where that is, in words.
    An unsplit tree serves every part."""
    cache_dir = Path(cfg.cache_dir or default_cache_dir()).expanduser() if cfg.get("cache", True) else None
    budget = memory_budget(cfg.get("memory_budget_gb"), device)
    trees: dict[tuple, tuple[Decoded, torch.Tensor, str]] = {}
    for name, files, _ in parts:
        key = (files.root, stored_size(cfg, name, size))
        if key not in trees:
            decoded = decoded_images(files.root, files.samples, mode, key[1], cache_dir)
            check_readable(decoded, cfg.bad_images)
            trees[key] = (decoded, *place(decoded, budget, device))
    return trees


def cached_loaders(cfg: DictConfig, parts: list[Part], trees: dict[tuple, tuple[Decoded, torch.Tensor, str]],
                   size: tuple[int, int], batch_size: int, seed: int,
                   device: torch.device) -> dict[str, MemoryLoader]:
    """In-memory loaders over the decoded images of each part (decode_trees)."""
    augment = Augment.from_config(cfg.augment)
    rank, world = process_rank()
    loaders = {}
    for name, files, indices in parts:
        training = name == "train"
        decoded, pixels, where = trees[files.root, stored_size(cfg, name, size)]
        rows = split_rows(decoded, files, indices)
        if not len(rows):
            raise CnnbenchError(f"data.root={files.root}: the {SPLIT_WORDS[name]} split is empty: none of its "
                                f"{len(indices)} image(s) could be read (data.bad_images=skip left them out); "
                                "replace them or add readable ones")
        log.info("%s: %s %s images of %dx%d, %s", files.root, f"{len(rows):,}", SPLIT_WORDS[name],
                 *stored_size(cfg, name, size), where)
        loader = MemoryLoader(pixels, decoded.labels, batch_size, mean=list(cfg.mean), std=list(cfg.std),
                              shuffle=training, seed=seed, augment=augment if training else None, size=size,
                              rows=rows, device=device, rank=rank, world=world)
        loader.files = [decoded.files[row] for row in rows.tolist()]
        loader.skipped = {path for path in decoded.unreadable if path in chosen(files, indices)}
        for path in sorted(loader.skipped):
            log.warning("skipping %s: not a readable image (%s)", path, decoded.unreadable[path])
        loaders[name] = loader
    return loaders


def duplicates_across(parts: list[Part], digest: Callable[[str], str | None]) -> dict[str, list[str]]:
    """The validation and test files whose content (`digest` of a file: its decoded pixels, or its
    bytes) equals a training file's, by part: exact duplicates, common in scraped photo folders,
    which a model has seen in training and so inflate the accuracy measured on them."""
    train = {digest(files.samples[i][0]) for name, files, indices in parts if name == "train" for i in indices}
    train.discard(None)
    found = {}
    for name, files, indices in parts:
        if name != "train":
            same = sorted(files.samples[i][0] for i in indices if digest(files.samples[i][0]) in train)
            if same:
                found[name] = same
    return found


def without_duplicates(parts: list[Part], duplicates: dict[str, list[str]]) -> list[Part]:
    """The parts with their validation and test images that copy training images left out."""
    return [(name, files, [i for i in indices if files.samples[i][0] not in set(duplicates.get(name, ()))])
            for name, files, indices in parts]


def file_digest(path: str) -> str | None:
    """A digest of a file's bytes (the DataLoader path, which decodes nothing ahead): byte-identical
    copies; None when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return hashlib.blake2b(file.read(), digest_size=16).hexdigest()
    except OSError:
        return None


def report_duplicates(duplicates: dict[str, list[str]], root: Path, dropped: bool) -> None:
    """One warning for the validation and test images that equal training images."""
    if duplicates:
        counts = " and ".join(f"{len(paths)} {SPLIT_WORDS[name]}" for name, paths in duplicates.items())
        first = next(iter(duplicates.values()))[0]
        what = "left out (data.drop_duplicates=true)" if dropped else (
            "they inflate the accuracy measured on them: data.drop_duplicates=true leaves them out")
        log.warning("%s: %s images are exact copies of training images (e.g. %s); %s (metrics.json: "
                    "split.how.duplicates_across_splits)", root, counts, os.path.relpath(first, root), what)


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


def other_images(cfg: DictConfig, recorded: dict[str, Any] | None, recorded_root: str | None) -> str | None:
    """Why the image folder `cfg` names holds other images than the ones a run recorded (its
    data identity, or for runs of earlier releases its data.root), in words; None when it holds the
    same ones, or `cfg` is not an image folder."""
    if cfg.get("name") != "imagefolder" or not cfg.get("root"):
        return None
    root = Path(cfg.root).expanduser().absolute()
    if not root.is_dir():
        return None  # the run says so itself, naming the folder
    if recorded and recorded.get("fingerprint"):
        now = tree_identity(root)
        if now["fingerprint"] == recorded["fingerprint"]:
            return None
        return (f"data.root={root} holds other images than the run trained on ({now['images']:,} image files "
                f"now, {recorded.get('images', 0):,} then, classes {', '.join(recorded.get('classes') or [])})")
    if recorded_root and Path(recorded_root) != root:
        return (f"data.root={root} is not the folder the run trained on ({recorded_root}), and the run, made by "
                "an earlier release, recorded nothing that tells two trees apart")
    return None
