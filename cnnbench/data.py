"""Datasets: find them on disk, load them, and serve normalised batches to the training loop.

Two ways to serve batches, chosen by `data.loader`:
- `memory` (MNIST, Fashion-MNIST, CIFAR-10, fake): the whole split is one uint8 tensor on the
  training device; each batch is gathered, augmented, converted and normalised there. Per-sample
  PIL transforms in a DataLoader cost about as much as LeNet's whole compute on a 2-core CPU.
- `torch`: a standard DataLoader with per-sample transforms and worker processes, for
  ImageFolder trees that need decoding from disk (and for comparison on the small datasets).
"""

import copy
import gzip
import logging
import math
import os
import pickle
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cnnbench.errors import CnnbenchError

log = logging.getLogger("cnnbench")

Batch = tuple[torch.Tensor, torch.Tensor]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# The four IDX files of MNIST and Fashion-MNIST (same names for both), by split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DATASETS = {  # our name -> torchvision class (its folder name and download mirrors)
    "mnist": torchvision.datasets.MNIST,
    "fashion_mnist": torchvision.datasets.FashionMNIST,
}


@dataclass
class Data:
    """What a run needs from its dataset: the two batch streams and what the model must match."""

    train: "MemoryLoader | DataLoader"
    val: "MemoryLoader | DataLoader"
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]  # height, width of the batches the model sees
    mean: list[float]  # the normalisation the batches carry (to show or undo it)
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class MemoryLoader:
    """Batches from one uint8 image tensor held on the training device.

    Augmentation draws its own random numbers for every image (torchvision's v2 random
    transforms draw one set per call, which on a batch means one crop for all images).
    Batches are float32 in the model's layout; the stored images stay uint8 (4x less memory).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool, seed: int = 0,
                 crop_padding: int = 0, hflip: bool = False,
                 resize: tuple[int, int] | None = None, rank: int = 0, world: int = 1) -> None:
        self.images, self.labels = images, labels  # uint8 N x C x H x W, int64 N
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world  # distributed training: this process's shard
        self.crop_padding, self.hflip, self.resize = crop_padding, hflip, resize
        # (x / 255 - mean) / std as one multiply-add per pixel
        std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_t)
        self.shift = -torch.tensor(mean, device=images.device).view(1, -1, 1, 1) / std_t
        self.epoch, self.start = 0, 0
        # Training drops the last partial batch (a batch of 1 breaks BatchNorm); evaluation keeps all.
        self.drop_last = shuffle and shard_size(len(labels), rank, world, shuffle) > batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch whose shuffle and augmentation to replay (deterministic per seed and
        epoch), and the batch to start at (a run resumed from a mid-epoch checkpoint)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        count = shard_size(len(self.labels), self.rank, self.world, self.shuffle) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self) -> Iterator[Batch]:
        device = self.images.device
        # One generator per epoch: resuming at any epoch replays exactly the same batches.
        generator = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, self.epoch))
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=generator, device=device)
        else:
            order = torch.arange(count, device=device)
        if self.world > 1:
            # Every process drew the same order, so their shards are disjoint; each then draws
            # its own augmentation (the same crops on every shard would correlate them).
            order = shard(order, self.rank, self.world, self.shuffle)
            generator.manual_seed(epoch_seed(self.seed, self.epoch) + 7919 * (self.rank + 1))
        for batch in range(len(self)):
            index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            augment = self.crop_padding or self.hflip
            if batch < self.start:
                # Skipped, but its random draws are made, so the batches after it get the crops
                # and flips an uninterrupted epoch gives them.
                if augment:
                    crop_flip_draws(len(index), self.crop_padding, self.hflip, generator)
                continue
            # index_select, not images[index]: 30x faster for a batch of rows on a 2-core CPU
            images = self.images.index_select(0, index)
            if augment:
                images = random_crop_flip(images, self.crop_padding, self.hflip, generator)
            images = images.float().mul_(self.scale).add_(self.shift)  # in place: one buffer
            if self.resize and tuple(images.shape[-2:]) != self.resize:
                images = F.interpolate(images, size=self.resize, mode="bilinear", align_corners=False)
            yield images, self.labels.index_select(0, index)


class OneBatch:
    """The same batch every epoch: for checking that a model can memorise it (debug=overfit)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Nothing to reshuffle."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Batch]:
        yield self.batch


def shard_size(count: int, rank: int, world: int, equal: bool) -> int:
    """How many of `count` items process `rank` of `world` gets (see shard)."""
    return count // world if equal else len(range(rank, count, world))


def shard(items, rank: int, world: int, equal: bool):
    """Every world-th item from `rank` on; `equal`: cut so every process gets as many (training
    steps must match across processes, or the gradient all-reduce waits forever)."""
    end = (len(items) // world) * world if equal else len(items)
    return items[rank:end:world]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible random seed for each (run seed, epoch) pair."""
    return seed * 1_000_003 + epoch


def crop_flip_draws(count: int, padding: int, hflip: bool, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random numbers random_crop_flip draws for `count` images: window top, left, flip."""
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    flip = torch.rand(count, 1, generator=generator, device=device) < 0.5 if hflip else None
    return top, left, flip


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool,
                     generator: torch.Generator) -> torch.Tensor:
    """Per image: a random crop of the original size from the zero-padded image, and a random
    left-right flip (half of the images), as ONE gather over the batch.

    Every output pixel is read from index (window start + row offset + column offset); a
    flipped image reads its columns right to left. One gather beat a crop gather followed by a
    flipped copy by about 2x on a 2-core CPU.
    """
    count, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    padded_width = width + 2 * padding
    top, left, flip = crop_flip_draws(count, padding, hflip, generator)
    columns = torch.arange(width, device=device).expand(count, width)
    if hflip:
        columns = torch.where(flip, width - 1 - columns, columns)
    rows = torch.arange(height, device=device).view(1, height, 1) * padded_width
    index = (top * padded_width + left).view(count, 1, 1) + rows + columns.view(count, 1, width)
    # The index is shared by all channels (expand is a view), and never leaves the padded image.
    index = index.view(count, 1, height * width).expand(count, channels, -1)
    return padded.flatten(2).gather(2, index).view(count, channels, height, width)


class TensorImages(Dataset):
    """Per-sample access to uint8 image tensors, for the DataLoader path on the small datasets."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def sample_transform(cfg: DictConfig, train: bool, size: tuple[int, int],
                     native: tuple[int, int] | None = None) -> v2.Compose:
    """Per-sample transforms for the DataLoader path: the same steps the memory path batches.

    `native` is the stored images' size when they all share one (crop there, resize last, as
    MemoryLoader does); without it (ImageFolder) images are resized to `size` first.
    """
    crop_size = native or size
    steps: list[v2.Transform] = [v2.ToImage()]
    if native is None:
        steps.append(v2.Resize(size, antialias=True))
    if train and cfg.augment.crop_padding:
        steps.append(v2.RandomCrop(crop_size, padding=cfg.augment.crop_padding))
    if train and cfg.augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if train and cfg.augment.get("color_jitter"):  # .get: configs saved before the key existed
        # brightness, contrast and saturation each scaled by its own random factor in [1-s, 1+s]
        strength = cfg.augment.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    if native is not None and native != size:
        steps.append(v2.Resize(size, antialias=False))  # bilinear on floats, as MemoryLoader
    return v2.Compose(steps)


# ---------------------------------------------------------------- reading datasets from disk

def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (the MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise CnnbenchError(f"cannot read {path}: {error}") from None
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then one big-endian 32-bit size per dimension.
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise CnnbenchError(f"{path} is not an IDX file of unsigned bytes (bad header)")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(shape):
        raise CnnbenchError(f"{path} is truncated or damaged: header says {shape}, "
                            f"found {len(body)} bytes of data; replace the file")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _find_idx_folder(folders: list[Path]) -> Path | None:
    names = [name for pair in IDX_FILES.values() for name in pair]
    for folder in folders:
        if all((folder / name).exists() or (folder / f"{name}.gz").exists() for name in names):
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).exists() else folder / f"{name}.gz"


def load_idx_dataset(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """MNIST or Fashion-MNIST as uint8 tensors, from a local copy or a download."""
    dataset_class = IDX_DATASETS[cfg.name]
    root = Path(cfg.root).expanduser().absolute()
    own = root / dataset_class.__name__  # torchvision's layout: root/MNIST/raw/...
    folders = [own / "raw", own, root] + [Path(d) for d in cfg.get("search_dirs") or []]
    folder = _find_idx_folder(folders)
    if folder is None and cfg.download:
        _download(lambda: dataset_class(str(root), train=True, download=True), cfg.name, root)
        folder = _find_idx_folder(folders)
    if folder is None:
        raise CnnbenchError(
            f"{cfg.name}: files not found: expected {', '.join(IDX_FILES['train'] + IDX_FILES['val'])} "
            f"(.gz or extracted) in {own / 'raw'}, {root}"
            + "".join(f" or {d}" for d in cfg.get("search_dirs") or [])
            + "; set data.root=DIR to where they are, or data.download=true with internet access")
    splits = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images = read_idx(_idx_file(folder, images_name))
        labels = read_idx(_idx_file(folder, labels_name)).long()
        if images.ndim != 3 or len(images) != len(labels):
            raise CnnbenchError(f"{folder}: {images_name} holds {tuple(images.shape)} images but "
                                f"{labels_name} holds {len(labels)} labels")
        splits[split] = (images.unsqueeze(1), labels)  # add the channel axis
    return splits, [str(name) for name in dataset_class.classes]


def _download(fetch, name: str, root: Path) -> None:
    try:
        fetch()
    except Exception as error:  # torchvision raises URLError, RuntimeError, OSError...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnnbenchError(f"{name}: not found under {root} and the download failed ({first_line}); "
                            "put the files there (see README, 'Offline data') or set data.root") from None


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR-10's batches that builds dicts, lists, bytes and NumPy arrays and
    nothing else: a pickle can name any function to call, and a data folder may be someone
    else's (a checkpoint's config names its data.root)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: it names {module}.{name}, and a CIFAR-10 batch "
                                         "holds only arrays and lists")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> Batch:
    try:
        with open(path, "rb") as file:
            entry = _ArraysOnly(file, encoding="bytes").load()
        data, labels = entry[b"data"], entry.get(b"labels", entry.get(b"fine_labels"))
        images = torch.as_tensor(data, dtype=torch.uint8)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as error:
        raise CnnbenchError(f"{path} is not a readable CIFAR-10 batch ({error}); replace the file") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise CnnbenchError(f"{path}: expected N x 3072 pixels and N labels, found "
                            f"{tuple(images.shape)} and {len(labels)} labels")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise CnnbenchError(f"{path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return images.view(-1, 3, 32, 32), labels


def load_cifar10(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """CIFAR-10 from its python batches, checked by content rather than by md5.

    torchvision's CIFAR10 class rejects any batch whose md5 differs from the published one,
    even with identical pixels and labels, so the batches are read here instead.
    """
    root = Path(cfg.root).expanduser().absolute()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    candidates = [root / "cifar-10-batches-py", root]
    folder = next((c for c in candidates if all((c / n).exists() for n in names)), None)
    if folder is None and cfg.download:
        _download(lambda: torchvision.datasets.CIFAR10(str(root), train=True, download=True),
                  cfg.name, root)
        folder = next((c for c in candidates if all((c / n).exists() for n in names)), None)
    if folder is None:
        raise CnnbenchError(f"cifar10: files not found: expected {', '.join(names)} in "
                            f"{candidates[0]}; set data.root=DIR to the folder that holds "
                            "cifar-10-batches-py, or data.download=true with internet access")
    train = [_read_cifar_batch(folder / name) for name in names[:5]]
    splits = {"train": (torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train])),
              "val": _read_cifar_batch(folder / "test_batch")}
    return splits, CIFAR10_CLASSES


def make_fake(cfg: DictConfig, seed: int) -> tuple[dict[str, Batch], list[str]]:
    """Random images whose class sets their average pattern: learnable, fast, no files."""
    generator = torch.Generator().manual_seed(seed)
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    patterns = torch.rand((cfg.num_classes, *shape), generator=generator) * 255
    splits = {}
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        labels = torch.randint(0, cfg.num_classes, (count,), generator=generator)
        noise = torch.randn((count, *shape), generator=generator) * 40
        splits[split] = ((patterns[labels] + noise).clamp(0, 255).to(torch.uint8), labels)
    return splits, [f"class_{i}" for i in range(cfg.num_classes)]


def pixel_permutation(height: int, width: int, seed: int) -> torch.Tensor:
    """A random order of the height x width pixel positions, fixed by `seed`."""
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Move every pixel of N x C x H x W images to a new place: output pixel i is input pixel
    permutation[i], in every channel and image alike; `permutation.argsort()` undoes it."""
    count, channels, height, width = images.shape
    return images.flatten(2).index_select(2, permutation).view(count, channels, height, width)


# ---------------------------------------------------------------- ImageFolder trees

# Image files by extension, as torchvision's ImageFolder (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp).
IMAGE_EXTENSIONS = torchvision.datasets.folder.IMG_EXTENSIONS
# What PIL raises for a file it cannot decode: truncated or not an image at all (OSError,
# which UnidentifiedImageError is), a damaged header (SyntaxError, ValueError), a decompression bomb.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_image(path: str | Path, mode: str) -> Image.Image:
    """Decode an image file into `mode` ("L" or "RGB"), whatever mode the file has: for training
    on an image folder and for cnnbench-predict alike, so both see the same pixels."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: PIL's convert("L") clips at 255 instead of scaling, so scale here.
            pixels = np.asarray(image, dtype=np.float64)
            top = 65535 if image.mode.startswith("I;16") or pixels.max() > 255 else 255
            image = Image.fromarray((pixels * (255 / top)).round().clip(0, 255).astype(np.uint8))
        return image.convert(mode)  # palette, RGBA, CMYK and greyscale files all become `mode`


def image_problem(path: str) -> str:
    """Why PIL cannot decode `path` (one line), or "" when it can."""
    try:
        open_image(path, "RGB")
    except IMAGE_ERRORS as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ""


def _hidden(name: str) -> bool:
    # .DS_Store, .ipynb_checkpoints, editors' .swp files: never data
    return name.startswith(".")


class ImageFiles(Dataset):
    """The images under `root/<class>/` (sub-folders included), labelled by class folder.

    Like torchvision's ImageFolder, with three differences: hidden files and folders are never
    data (ImageFolder makes `.ipynb_checkpoints` a class), what is left out is counted in
    `ignored` so it can be said, and a file that cannot be decoded comes back as a marker
    (label -1 - its index) for the loader to report or skip, not as a crashed worker process.
    """

    def __init__(self, root: Path, mode: str, size: tuple[int, int]) -> None:
        self.mode = mode
        self.transform: v2.Transform | None = None
        self.ignored: Counter[str] = Counter()  # extension (or "hidden") -> files left out
        entries = sorted(root.iterdir())
        self.ignored["hidden"] += sum(_hidden(entry.name) for entry in entries)
        self.classes = [entry.name for entry in entries if entry.is_dir() and not _hidden(entry.name)]
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            found = self._find_images(root / name)
            if not found:
                raise CnnbenchError(f"data.root: class folder {root / name} holds no image files "
                                    f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
            self.samples += [(path, label) for path in found]
        self.targets = [label for _, label in self.samples]
        # What an undecodable image is replaced by until the loader drops it: the transform's shape.
        self.blank = torch.zeros(1 if mode == "L" else 3, *size)

    def _find_images(self, folder: Path) -> list[str]:
        found = []
        for parent, folders, files in os.walk(folder, followlinks=True):
            self.ignored["hidden"] += sum(_hidden(name) for name in folders)
            folders[:] = sorted(name for name in folders if not _hidden(name))  # walk these, in order
            for name in sorted(files):
                extension = os.path.splitext(name)[1].lower()
                if _hidden(name):
                    self.ignored["hidden"] += 1
                elif extension in IMAGE_EXTENSIONS:
                    found.append(os.path.join(parent, name))
                else:
                    self.ignored[extension or "no extension"] += 1
        return found

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = open_image(path, self.mode)
        except IMAGE_ERRORS:
            return self.blank, -1 - index
        return self.transform(image), label


def _image_files(folder: Path, mode: str, size: tuple[int, int]) -> ImageFiles:
    files = ImageFiles(folder, mode, size)
    if not files.classes:
        raise CnnbenchError(f"data.root={folder} holds no class folders; expected "
                            f"{folder}/<class name>/<image files>")
    if files.ignored:
        hidden = files.ignored.pop("hidden", 0)
        others = ", ".join(f"{count} {extension}" for extension, count in sorted(files.ignored.items()))
        said = [f"{sum(files.ignored.values())} files that are not images by extension ({others})"] \
            if files.ignored else []
        said += [f"{hidden} hidden files or folders"] if hidden else []
        log.warning("%s: left out %s", folder, " and ".join(said))
    return files


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into train/val keeping each class's share; at least one of each per class."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    train, val = [], []
    for target in sorted(by_class):
        indices = by_class[target]
        shuffled = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        n_val = min(max(1, round(len(indices) * val_fraction)), len(indices) - 1)
        val += shuffled[:n_val]
        train += shuffled[n_val:]
    return sorted(train), sorted(val)


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


class EpochSamples(Dataset):
    """The items `indices` of `dataset`, each loaded under the random seed _EpochSampler gives it."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]):
        position, seed = item
        # The transform's random crop and flip draw from this seed alone, so they do not depend on
        # which worker process loads the item; fork_rng leaves this process's generator as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[self.indices[position]]


class _EpochSampler(torch.utils.data.Sampler):
    """Shuffles (when training) with a seed per epoch, so a resumed run replays the same order;
    gives each item a seed for its augmentation; hands each distributed process its own shard."""

    def __init__(self, count: int, seed: int, shuffle: bool, rank: int, world: int) -> None:
        self.count, self.seed, self.shuffle, self.rank, self.world = count, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Replay epoch `epoch`, from its item number `start` on."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return shard_size(self.count, self.rank, self.world, self.shuffle)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.count, generator=generator) if self.shuffle else torch.arange(self.count)
        seeds = torch.randint(2**62, (self.count,), generator=generator)
        order, seeds = (shard(items, self.rank, self.world, self.shuffle)[self.start:] for items in (order, seeds))
        return zip(order.tolist(), seeds.tolist())


class EpochDataLoader(DataLoader):
    """A DataLoader whose shuffle order is chosen by `set_epoch`, like MemoryLoader's, and which
    stops at (`bad_images` error) or leaves out (skip) images its dataset could not decode."""

    def __init__(self, *args, bad_images: str = "error", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_images = bad_images
        self.skipped: set[str] = set()  # paths left out, for metrics.json

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch whose shuffle order to replay, and the batch to start at."""
        self.sampler.set_epoch(epoch, start * self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in super().__iter__():
            bad = labels < 0  # ImageFiles' marker: -1 - index
            if bad.any():
                files = self.dataset.dataset
                for label in labels[bad].tolist():
                    self._bad_image(files.samples[-1 - label][0])
                images, labels = images[~bad], labels[~bad]
                if not len(labels):
                    continue
            yield images, labels

    def _bad_image(self, path: str) -> None:
        problem = image_problem(path) or "could not be read"
        if self.bad_images == "error":
            raise CnnbenchError(f"{path}: not a readable image ({problem}); replace or delete it, "
                                "or set data.bad_images=skip to leave such files out")
        if path not in self.skipped:
            log.warning("skipping %s: not a readable image (%s)", path, problem)
            self.skipped.add(path)


def _data_loader(dataset: EpochSamples, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                 device: torch.device, bad_images: str = "error") -> EpochDataLoader:
    rank, world = process_rank()
    sampler = _EpochSampler(len(dataset), seed, shuffle, rank, world)
    return EpochDataLoader(
        dataset, batch_size=batch_size, sampler=sampler, bad_images=bad_images,
        drop_last=shuffle and len(sampler) > batch_size,  # as MemoryLoader: no batch of 1 in training
        num_workers=num_workers, persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
        # its own generator: drawing worker seeds from torch's global one would change the
        # training's random numbers (dropout) with the loader, and break exact resume
        generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- entry point

def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by torchrun with several."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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
