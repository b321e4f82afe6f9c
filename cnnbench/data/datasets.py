"""Reading the datasets from disk: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (python
batches, checked by content), random fake images; and the fixed pixel permutation of the lab."""

import gzip
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from cnnbench.data.cache import cached_splits, default_cache_dir
from cnnbench.data.splits import Batch
from cnnbench.errors import CnnbenchError

# A real batch is 30.7 MB (10,000 images of 3 x 32 x 32 bytes, their labels and file names).
MAX_CIFAR_BATCH_BYTES = 64 * 2**20
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# The four IDX files of MNIST and Fashion-MNIST (same names for both), by the dataset's own split
# (cnnbench holds its validation split out of "train": data/splits.py).
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# our name -> (torchvision's class and folder name, which also knows the download mirrors; the classes)
IDX_DATASETS = {
    "mnist": ("MNIST", ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                        "7 - seven", "8 - eight", "9 - nine"]),
    "fashion_mnist": ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                       "Shirt", "Sneaker", "Bag", "Ankle boot"]),
}


# The datasets this process has read, by their files (path, size, modification time): the runs of
# a sweep share one process (Hydra's basic launcher) and read each dataset once. Loaders never
# change these tensors in place. Two are kept: a sweep over data=mnist,cifar10 alternates.
_READ: OrderedDict[tuple, dict[str, Batch]] = OrderedDict()
KEEP_READ = 2


def remembered(cfg: DictConfig, files: list[Path], read: Callable[[], dict[str, Batch]]) -> dict[str, Batch]:
    """read()'s splits, or the ones this process read before from the same unchanged files, or
    the arrays an earlier run kept in the cache (data.cache, data.cache_dir)."""
    key = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    if key not in _READ:
        cache_dir = Path(cfg.get("cache_dir") or default_cache_dir()).expanduser() if cfg.get("cache", True) \
            else None
        _READ[key] = cached_splits(cfg.name, files, read, cache_dir)
        while len(_READ) > KEEP_READ:
            _READ.popitem(last=False)
    _READ.move_to_end(key)
    return dict(_READ[key])  # a new dict: callers replace splits (train_limit) without touching ours


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


def find_idx_folder(folders: list[Path]) -> Path | None:
    """The first of `folders` that holds all four IDX files (.gz or extracted), or None."""
    names = [name for pair in IDX_FILES.values() for name in pair]
    for folder in folders:
        if all((folder / name).exists() or (folder / f"{name}.gz").exists() for name in names):
            return folder
    return None


def idx_file(folder: Path, name: str) -> Path:
    """The IDX file `name` in `folder`: extracted if it is there, else the .gz."""
    return folder / name if (folder / name).exists() else folder / f"{name}.gz"


def load_idx_dataset(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """MNIST or Fashion-MNIST as uint8 tensors, from a local copy or a download."""
    folder_name, classes = IDX_DATASETS[cfg.name]
    root = Path(cfg.root).expanduser().absolute()
    own = root / folder_name  # torchvision's layout: root/MNIST/raw/...
    folders = [own / "raw", own, root] + [Path(d) for d in cfg.get("search_dirs") or []]
    folder = find_idx_folder(folders)
    if folder is None and cfg.download:
        _download(folder_name, cfg.name, root)
        folder = find_idx_folder(folders)
    if folder is None:
        raise CnnbenchError(
            f"{cfg.name}: files not found: expected {', '.join(IDX_FILES['train'] + IDX_FILES['test'])} "
            f"(.gz or extracted) in {own / 'raw'}, {root}"
            + "".join(f" or {d}" for d in cfg.get("search_dirs") or [])
            + "; set data.root=DIR to where they are, or data.download=true with internet access")
    def read() -> dict[str, Batch]:
        splits = {}
        for split, (images_name, labels_name) in IDX_FILES.items():
            images = read_idx(idx_file(folder, images_name))
            labels = read_idx(idx_file(folder, labels_name)).long()
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise CnnbenchError(f"{folder}: {images_name} holds {tuple(images.shape)} images but "
                                    f"{labels_name} holds {tuple(labels.shape)} labels")
            check_labels(labels, len(classes), idx_file(folder, labels_name))
            splits[split] = (images.unsqueeze(1), labels)  # add the channel axis
        return splits

    files = [idx_file(folder, name) for pair in IDX_FILES.values() for name in pair]
    return remembered(cfg, files, read), list(classes)


def _download(torchvision_class: str, name: str, root: Path) -> None:
    """Fetch a dataset into `root` with torchvision's downloader (which knows the mirrors)."""
    try:
        import torchvision  # here only: its import costs about 1.5 s (it pulls in torch._dynamo)

        getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)
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
        size = path.stat().st_size
        if size > MAX_CIFAR_BATCH_BYTES:  # unpickled whole into memory: say so before reading it
            raise CnnbenchError(f"{path} holds {size / 2**20:,.0f} MB; a CIFAR-10 batch holds about 30 MB "
                                "(10,000 images of 3x32x32): replace the file")
        with open(path, "rb") as file:
            entry = _ArraysOnly(file, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as error:
        raise CnnbenchError(f"{path} is not a readable CIFAR-10 batch ({error}); replace the file") from None
    data = entry.get(b"data") if isinstance(entry, dict) else None
    labels = entry.get(b"labels", entry.get(b"fine_labels")) if isinstance(entry, dict) else None
    # checked before anything is converted: a cast would wrap pixels above 255 and cut labels of 1.5
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = _kind(data)
        raise CnnbenchError(f"{path}: expected its b'data' to be N x 3072 pixels of uint8, found {found}; "
                            "replace the file")
    if not _integers(labels) or len(labels) != len(data):
        found = f"{len(labels)} labels" if _integers(labels) else _kind(labels)
        raise CnnbenchError(f"{path}: expected its b'labels' to be {len(data)} integers, one per image, "
                            f"found {found}; replace the file")
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    check_labels(labels, 10, path)
    return torch.from_numpy(data).view(-1, 3, 32, 32), labels


def _integers(values: object) -> bool:
    """Whether `values` is a list or array of integers (what a CIFAR-10 batch's labels are)."""
    if isinstance(values, np.ndarray):
        return values.ndim == 1 and values.dtype.kind in "iu"
    return isinstance(values, list | tuple) and all(
        isinstance(value, int | np.integer) and not isinstance(value, bool) for value in values)


def _kind(values: object) -> str:
    """What a batch holds where an array or list was expected, in words."""
    if isinstance(values, np.ndarray):
        return f"an array of {values.dtype} shaped {values.shape}"
    if isinstance(values, list | tuple):
        odd = next((value for value in values if not isinstance(value, int | np.integer)
                    or isinstance(value, bool)), None)
        return f"a list of {len(values)} holding {type(odd).__name__}" if odd is not None else \
            f"a list of {len(values)}"
    return "nothing" if values is None else type(values).__name__


def check_labels(labels: torch.Tensor, classes: int, path: Path) -> None:
    """Refuse labels outside 0..classes-1 in one line naming the file (the loss would index out of
    range in the first batch that holds one, or on a GPU stop the process)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise CnnbenchError(f"{path}: labels must be in 0..{classes - 1}, found {int(labels.min())}.."
                            f"{int(labels.max())}; replace the file")


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
        _download("CIFAR10", cfg.name, root)
        folder = next((c for c in candidates if all((c / n).exists() for n in names)), None)
    if folder is None:
        raise CnnbenchError(f"cifar10: files not found: expected {', '.join(names)} in "
                            f"{candidates[0]}; set data.root=DIR to the folder that holds "
                            "cifar-10-batches-py, or data.download=true with internet access")
    def read() -> dict[str, Batch]:
        train = [_read_cifar_batch(folder / name) for name in names[:5]]
        return {"train": (torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train])),
                "test": _read_cifar_batch(folder / "test_batch")}

    return remembered(cfg, [folder / name for name in names], read), CIFAR10_CLASSES


def make_fake(cfg: DictConfig, seed: int) -> tuple[dict[str, Batch], list[str]]:
    """Random images whose class sets their average pattern: learnable, fast, no files."""
    generator = torch.Generator().manual_seed(seed)
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    patterns = torch.rand((cfg.num_classes, *shape), generator=generator) * 255
    splits = {}
    # its own validation and test images, drawn like the training ones (num_val=0: none)
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val), ("test", cfg.get("num_test", 128))):
        labels = torch.randint(0, cfg.num_classes, (count,), generator=generator)
        noise = torch.randn((count, *shape), generator=generator) * 40
        if count:
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
