"""Reading the datasets from disk, each checked by its content (not by md5) and kept in one uint8
tensor per split: MNIST, Fashion-MNIST, KMNIST and EMNIST (IDX files), CIFAR-10 and CIFAR-100
(python pickles), SVHN (MATLAB files), STL-10 (raw bytes); random fake images; and the fixed pixel
permutation of the lab. Each is looked for on disk first, and downloaded with torchvision's class
only when data.download is on and no copy is found (README, "Offline data")."""

import gzip
import math
import pickle
import string
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from cnnbench.data.cache import cached_splits, default_cache_dir
from cnnbench.data.splits import Batch
from cnnbench.errors import CnnbenchError

# A real CIFAR file holds about 3,100 bytes an image (3 x 32 x 32 pixels, its labels and file name):
# a CIFAR-10 batch of 10,000 images is 30.7 MB, CIFAR-100's train file of 50,000 about 150 MB. A file
# is unpickled whole into memory, so one more than about twice that size is refused unread.
CIFAR_BYTES_PER_IMAGE = 3_100
MAX_CIFAR_BYTES_PER_IMAGE = 64 * 2**20 // 10_000  # 64 MB for a CIFAR-10 batch, 320 MB for CIFAR-100's train
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
# CIFAR-100's names as its `meta` file lists them (used when a copy has no meta file): data.labels=fine
# (100 classes) or coarse (the 20 superclasses, 5 fine classes each)
CIFAR100_CLASSES = {
    "fine": ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
             "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
             "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
             "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
             "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
             "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
             "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
             "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
             "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
             "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
             "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
             "worm"],
    "coarse": ["aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
               "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
               "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
               "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
               "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"],
}

# The four IDX files of MNIST, Fashion-MNIST and KMNIST (the same names for all three), by the
# dataset's own split (cnnbench holds its validation split out of "train": data/splits.py).
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
    # Kuzushiji-MNIST: ten cursive hiragana, by their romanised names
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
}
# EMNIST's classes by data.split, as torchvision's EMNIST.classes_split_dict has them: digits, then
# upper-case, then lower-case letters. bymerge and balanced fold the 15 letters whose two cases look
# alike (c i j k l m o p s u v w x y z) into the upper-case class; letters has one class per letter of
# either case (its files number them 1..26; torchvision keeps an unused class "N/A" for 0, we do not).
_EMNIST_FOLDED = set("cijklmopsuvwxyz")
_EMNIST_MERGED = [c for c in string.digits + string.ascii_uppercase + string.ascii_lowercase
                  if c not in _EMNIST_FOLDED]
EMNIST_CLASSES = {
    "balanced": _EMNIST_MERGED,
    "byclass": list(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "bymerge": _EMNIST_MERGED,
    "letters": list(string.ascii_lowercase),
    "digits": list(string.digits),
    "mnist": list(string.digits),
}

# SVHN's cropped-digit files (the 32x32 format), by the dataset's own split; "extra" joins training
# with data.svhn_extra
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_CLASSES = list(string.digits)

# STL-10's labelled images (5,000 train, 8,000 test; the 100,000 unlabelled ones are not read)
STL10_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
STL10_IMAGE_BYTES = 3 * 96 * 96


# The datasets this process has read, by their files (path, size, modification time): the runs of
# a sweep share one process (Hydra's basic launcher) and read each dataset once. Loaders never
# change these tensors in place. Two are kept: a sweep over data=mnist,cifar10 alternates.
_READ: OrderedDict[tuple, dict[str, Batch]] = OrderedDict()
KEEP_READ = 2


def remembered(cfg: DictConfig, files: list[Path], read: Callable[[], dict[str, Batch]],
               variant: str = "") -> dict[str, Batch]:
    """read()'s splits, or the ones this process read before from the same unchanged files, or
    the arrays an earlier run kept in the cache (data.cache, data.cache_dir). `variant`: what else
    decides the arrays read from those files (CIFAR-100's fine or coarse labels)."""
    key = (variant, *((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files))
    if key not in _READ:
        cache_dir = Path(cfg.get("cache_dir") or default_cache_dir()).expanduser() if cfg.get("cache", True) \
            else None
        name = f"{cfg.name}-{variant}" if variant else cfg.name
        _READ[key] = cached_splits(name, files, read, cache_dir)
        while len(_READ) > KEEP_READ:
            _READ.popitem(last=False)
    _READ.move_to_end(key)
    return dict(_READ[key])  # a new dict: callers replace splits (train_limit) without touching ours


def find_folder(cfg: DictConfig, folders: list[Path], names: list[str], fetch: Callable[[], None]) -> Path:
    """The first of `folders`, then of data.search_dirs, that holds every file of `names`. When none
    does and data.download is on, fetch() downloads them and the folders are looked in again."""
    folders = folders + [Path(d).expanduser() for d in cfg.get("search_dirs") or []]

    def first_complete() -> Path | None:
        # files: a data root may hold folders named train/ and test/ (an image tree), not CIFAR-100's files
        return next((place for place in folders if all((place / name).is_file() for name in names)), None)

    folder = first_complete()
    if folder is None and cfg.download:
        fetch()
        folder = first_complete()
    if folder is None:
        raise CnnbenchError(f"{cfg.name}: files not found: expected {', '.join(names)} in "
                            f"{' or '.join(str(place) for place in folders)}; set data.root=DIR to where "
                            "they are (README, 'Offline data'), or data.download=true with internet access")
    return folder


def _download(torchvision_class: str, name: str, root: Path, **part) -> None:
    """Fetch a dataset into `root` with torchvision's downloader (which knows the mirrors); `part`
    says which, in the class's own words (train=True; SVHN's split="test" is one file of three)."""
    try:
        import torchvision  # here only: its import costs about 1.5 s (it pulls in torch._dynamo)

        getattr(torchvision.datasets, torchvision_class)(str(root), download=True, **part)
    except Exception as error:  # torchvision raises URLError, RuntimeError, OSError...
        raise CnnbenchError(f"{name}: not found under {root} and the download failed ({_first_line(error)}); "
                            "put the files there (see README, 'Offline data') or set data.root") from None


def _first_line(error: Exception) -> str:
    """An exception's message, cut to its first line (or its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_labels(labels: torch.Tensor, classes: int, path: Path, first: int = 0) -> None:
    """Refuse labels outside first..first+classes-1 in one line naming the file (the loss would index
    out of range in the first batch that holds one, or on a GPU stop the process)."""
    if len(labels) and (labels.min() < first or labels.max() >= first + classes):
        raise CnnbenchError(f"{path}: labels must be in {first}..{first + classes - 1}, found "
                            f"{int(labels.min())}..{int(labels.max())}; replace the file")


# MNIST-like datasets: IDX files


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


def find_idx_folder(folders: list[Path], files: dict[str, tuple[str, str]] = IDX_FILES) -> Path | None:
    """The first of `folders` that holds all four IDX files of `files` (.gz or extracted), or None."""
    names = [name for pair in files.values() for name in pair]
    for folder in folders:
        if all((folder / name).exists() or (folder / f"{name}.gz").exists() for name in names):
            return folder
    return None


def idx_file(folder: Path, name: str) -> Path:
    """The IDX file `name` in `folder`: extracted if it is there, else the .gz."""
    return folder / name if (folder / name).exists() else folder / f"{name}.gz"


def load_idx_dataset(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """MNIST, Fashion-MNIST or KMNIST as uint8 tensors, from a local copy or a download."""
    folder_name, classes = IDX_DATASETS[cfg.name]
    return _load_idx(cfg, folder_name, ["raw"], IDX_FILES, classes, {"train": True})


def load_emnist(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """EMNIST's split data.split as uint8 tensors, upright (its files hold each image transposed),
    from a local copy or a download."""
    split = cfg.split
    files = {part: (f"emnist-{split}-{part}-images-idx3-ubyte", f"emnist-{split}-{part}-labels-idx1-ubyte")
             for part in ("train", "test")}
    # torchvision's EMNIST fetches every split at once (one 535 MB zip): `split` only names the one it opens
    download = {"split": split, "train": True}
    # raw/gzip (or gzip): where NIST's gzip.zip unpacks in raw/ (in EMNIST/); raw: where torchvision's
    # download leaves the files
    return _load_idx(cfg, "EMNIST", ["raw/gzip", "raw", "gzip"], files, EMNIST_CLASSES[split], download,
                     first_label=1 if split == "letters" else 0, transposed=True)


def _load_idx(cfg: DictConfig, folder_name: str, inside: list[str], files: dict[str, tuple[str, str]],
              classes: list[str], download: dict, first_label: int = 0, transposed: bool = False
              ) -> tuple[dict[str, Batch], list[str]]:
    """An IDX dataset's train and test splits, looked for in root/`folder_name`/`inside`, root/`folder_name`,
    root and data.search_dirs: labels numbered from `first_label` in the files become 0..classes-1;
    `transposed`: the files hold each image with its rows as columns."""
    root = Path(cfg.root).expanduser().absolute()
    own = root / folder_name  # torchvision's layout: root/MNIST/raw/...
    folders = [own / sub for sub in inside] + [own, root] + [Path(d) for d in cfg.get("search_dirs") or []]
    folder = find_idx_folder(folders, files)
    if folder is None and cfg.download:
        _download(folder_name, cfg.name, root, **download)
        folder = find_idx_folder(folders, files)
    names = [name for pair in files.values() for name in pair]
    if folder is None:
        raise CnnbenchError(
            f"{cfg.name}: files not found: expected {', '.join(names)} (.gz or extracted) in "
            f"{' or '.join(str(place) for place in folders)}; set data.root=DIR to where they are, or "
            "data.download=true with internet access")

    def read() -> dict[str, Batch]:
        splits = {}
        for split, (images_name, labels_name) in files.items():
            images = read_idx(idx_file(folder, images_name))
            labels = read_idx(idx_file(folder, labels_name)).long()
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise CnnbenchError(f"{folder}: {images_name} holds {tuple(images.shape)} images but "
                                    f"{labels_name} holds {tuple(labels.shape)} labels")
            check_labels(labels, len(classes), idx_file(folder, labels_name), first=first_label)
            if transposed:
                images = images.transpose(1, 2).contiguous()
            splits[split] = (images.unsqueeze(1), labels - first_label)  # add the channel axis
        return splits

    return remembered(cfg, [idx_file(folder, name) for name in names], read), list(classes)


# CIFAR-10 and CIFAR-100: python pickles


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR's python files that builds dicts, lists, bytes and NumPy arrays and
    nothing else: a pickle can name any function to call, and a data folder may be someone
    else's (a checkpoint's config names its data.root)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: it names {module}.{name}, and a CIFAR file "
                                         "holds only arrays and lists")
        return super().find_class(module, name)


def _unpickle_cifar(path: Path, what: str, max_bytes: int, typical: str) -> object:
    """What a CIFAR pickle holds, built by _ArraysOnly; a file over `max_bytes` is refused unread."""
    try:
        size = path.stat().st_size
        if size > max_bytes:  # unpickled whole into memory: say so before reading it
            raise CnnbenchError(f"{path} holds {size / 2**20:,.0f} MB; a {what} holds about {typical}: "
                                "replace the file")
        with open(path, "rb") as file:
            return _ArraysOnly(file, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as error:
        raise CnnbenchError(f"{path} is not a readable {what} ({error}); replace the file") from None


def _read_cifar_batch(path: Path, what: str = "CIFAR-10 batch", label_key: bytes = b"labels",
                      classes: int = 10, images: int = 10_000) -> Batch:
    """One CIFAR python file's images and its labels under `label_key` (CIFAR-100's files hold
    b'fine_labels' and b'coarse_labels'), checked by content; `images`: how many a real one holds."""
    typical = f"{images * CIFAR_BYTES_PER_IMAGE / 2**20:,.0f} MB ({images:,} images of 3x32x32)"
    entry = _unpickle_cifar(path, what, images * MAX_CIFAR_BYTES_PER_IMAGE, typical)
    data = entry.get(b"data") if isinstance(entry, dict) else None
    labels = entry.get(label_key) if isinstance(entry, dict) else None
    # checked before anything is converted: a cast would wrap pixels above 255 and cut labels of 1.5
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = _kind(data)
        raise CnnbenchError(f"{path}: expected its b'data' to be N x 3072 pixels of uint8, found {found}; "
                            "replace the file")
    if not _integers(labels) or len(labels) != len(data):
        found = f"{len(labels)} labels" if _integers(labels) else _kind(labels)
        raise CnnbenchError(f"{path}: expected its {label_key!r} to be {len(data)} integers, one per image, "
                            f"found {found}; replace the file")
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    check_labels(labels, classes, path)
    return torch.from_numpy(data).view(-1, 3, 32, 32), labels


def _integers(values: object) -> bool:
    """Whether `values` is a list or array of integers (what a CIFAR file's labels are)."""
    if isinstance(values, np.ndarray):
        return values.ndim == 1 and values.dtype.kind in "iu"
    return isinstance(values, list | tuple) and all(
        isinstance(value, int | np.integer) and not isinstance(value, bool) for value in values)


def _kind(values: object) -> str:
    """What a file holds where an array or list was expected, in words."""
    if isinstance(values, np.ndarray):
        return f"an array of {values.dtype} shaped {values.shape}"
    if isinstance(values, list | tuple):
        odd = next((value for value in values if not isinstance(value, int | np.integer)
                    or isinstance(value, bool)), None)
        return f"a list of {len(values)} holding {type(odd).__name__}" if odd is not None else \
            f"a list of {len(values)}"
    return "nothing" if values is None else type(values).__name__


def joined(batches: list[Batch]) -> Batch:
    """The images and labels of several files as one split (CIFAR-10's five batches, SVHN's train
    and extra files)."""
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def load_cifar10(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """CIFAR-10 from its python batches, checked by content rather than by md5.

    torchvision's CIFAR10 class rejects any batch whose md5 differs from the published one,
    even with identical pixels and labels, so the batches are read here instead.
    """
    root = Path(cfg.root).expanduser().absolute()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = find_folder(cfg, [root / "cifar-10-batches-py", root], names,
                         lambda: _download("CIFAR10", cfg.name, root, train=True))

    def read() -> dict[str, Batch]:
        train = [_read_cifar_batch(folder / name) for name in names[:5]]
        return {"train": joined(train),
                "test": _read_cifar_batch(folder / "test_batch")}

    return remembered(cfg, [folder / name for name in names], read), CIFAR10_CLASSES


def load_cifar100(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """CIFAR-100 from its python files with its fine (100) or coarse (20) labels, data.labels;
    checked by content rather than by md5, as CIFAR-10."""
    root = Path(cfg.root).expanduser().absolute()
    kind = cfg.labels
    folder = find_folder(cfg, [root / "cifar-100-python", root], ["train", "test"],
                         lambda: _download("CIFAR100", cfg.name, root, train=True))
    classes = len(CIFAR100_CLASSES[kind])

    def read() -> dict[str, Batch]:
        return {split: _read_cifar_batch(folder / split, f"CIFAR-100 {split} file", f"{kind}_labels".encode(),
                                         classes, images)
                for split, images in (("train", 50_000), ("test", 10_000))}

    splits = remembered(cfg, [folder / "train", folder / "test"], read, variant=kind)
    return splits, _cifar100_names(folder, kind)


def _cifar100_names(folder: Path, kind: str) -> list[str]:
    """CIFAR-100's fine or coarse class names: from its `meta` file, or as published when there is none."""
    path, names = folder / "meta", CIFAR100_CLASSES[kind]
    if not path.exists():
        return list(names)
    entry = _unpickle_cifar(path, "CIFAR-100 meta file", 2**20, "2 KB (the class names)")
    key = f"{kind}_label_names".encode()
    found = entry.get(key) if isinstance(entry, dict) else None
    if not (isinstance(found, list) and len(found) == len(names)
            and all(isinstance(name, bytes | str) and name for name in found)):
        raise CnnbenchError(f"{path}: expected its {key!r} to be {len(names)} class names, found "
                            f"{_kind(found)}; replace the file, or remove it to use the published names")
    return [name.decode("utf-8", "replace") if isinstance(name, bytes) else name for name in found]


# SVHN: MATLAB files


def load_svhn(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """SVHN's cropped digits (the 32x32 format) from its .mat files, checked by content rather than by
    md5; data.svhn_extra adds the 531,131 extra images to the training split."""
    root = Path(cfg.root).expanduser().absolute()
    parts = ["train", "test", "extra"] if cfg.get("svhn_extra") else ["train", "test"]
    names = [SVHN_FILES[part] for part in parts]

    def fetch() -> None:  # torchvision's SVHN fetches one file per split
        for part in parts:
            _download("SVHN", cfg.name, root / "SVHN", split=part)

    folder = find_folder(cfg, [root / "SVHN", root], names, fetch)

    def read() -> dict[str, Batch]:
        train = [_read_svhn_file(folder / SVHN_FILES[part]) for part in parts if part != "test"]
        return {"train": joined(train),
                "test": _read_svhn_file(folder / SVHN_FILES["test"])}

    return remembered(cfg, [folder / name for name in names], read), list(SVHN_CLASSES)


def _read_svhn_file(path: Path) -> Batch:
    """One SVHN .mat file: 'X' holds the images as 32 x 32 x 3 x N bytes (height, width, colour,
    image: MATLAB's order), 'y' one label per image in 1..10, where 10 is the digit 0."""
    # here only: scipy is a dependency anyway (the leaderboard's statistics), but scipy.io costs an import
    import scipy.io

    try:
        entry = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # a damaged file: ValueError, OSError, MatReadError, zlib.error...
        raise CnnbenchError(f"{path} is not a readable SVHN .mat file ({_first_line(error)}); "
                            "replace the file") from None
    images, labels = entry.get("X"), entry.get("y")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[:3] != (32, 32, 3):
        raise CnnbenchError(f"{path}: expected its 'X' to be 32 x 32 x 3 x N pixels of uint8, found "
                            f"{_kind(images)}; replace the file")
    count = images.shape[3]
    # N x 1 as MATLAB saves a column; whole numbers of any type (a copy saved from MATLAB may hold doubles)
    if not isinstance(labels, np.ndarray) or labels.size != count or labels.ndim > 2 \
            or labels.dtype.kind not in "iuf" or not np.array_equal(labels, np.round(labels)):
        raise CnnbenchError(f"{path}: expected its 'y' to be {count} whole-number labels, one per image, "
                            f"found {_kind(labels)}; replace the file")
    labels = torch.as_tensor(labels.reshape(-1).astype(np.int64))
    check_labels(labels, 10, path, first=1)
    # to N x C x H x W, as torchvision's SVHN reads them; and the digit 0's label 10 becomes 0
    return torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1))), labels % 10


# STL-10: raw bytes


def load_stl10(cfg: DictConfig) -> tuple[dict[str, Batch], list[str]]:
    """STL-10's labelled images (96 x 96) from its binary files, checked by content rather than by md5."""
    root = Path(cfg.root).expanduser().absolute()
    names = [name for pair in STL10_FILES.values() for name in pair]
    folder = find_folder(cfg, [root / "stl10_binary", root], names,
                         lambda: _download("STL10", cfg.name, root, split="train"))

    def read() -> dict[str, Batch]:
        return {split: _read_stl10(folder / images, folder / labels)
                for split, (images, labels) in STL10_FILES.items()}

    return remembered(cfg, [folder / name for name in names], read), _stl10_names(folder)


def _read_bytes(path: Path) -> np.ndarray:
    """A whole file as an array of bytes."""
    try:
        return np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise CnnbenchError(f"cannot read {path}: {error}") from None


def _read_stl10(images_path: Path, labels_path: Path) -> Batch:
    """One STL-10 split: images of 3 x 96 x 96 bytes, each colour plane stored column by column
    (MATLAB's order), and one label byte per image in 1..10."""
    pixels = _read_bytes(images_path)
    if len(pixels) % STL10_IMAGE_BYTES:
        raise CnnbenchError(f"{images_path} is truncated or damaged: {len(pixels):,} bytes is not a whole "
                            f"number of 3x96x96 images ({STL10_IMAGE_BYTES:,} bytes each); replace the file")
    count = len(pixels) // STL10_IMAGE_BYTES
    labels = torch.from_numpy(_read_bytes(labels_path).astype(np.int64))
    if len(labels) != count:
        raise CnnbenchError(f"{labels_path} holds {len(labels):,} labels but {images_path.name} holds "
                            f"{count:,} images; replace the file")
    check_labels(labels, 10, labels_path, first=1)
    # rows and columns swapped back, as torchvision's STL10 reads them
    images = torch.from_numpy(pixels).view(count, 3, 96, 96).transpose(2, 3).contiguous()
    return images, labels - 1


def _stl10_names(folder: Path) -> list[str]:
    """STL-10's class names: from its class_names.txt, or as published when there is none."""
    path = folder / "class_names.txt"
    if not path.exists():
        return list(STL10_CLASSES)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
    except OSError as error:
        raise CnnbenchError(f"cannot read {path}: {error}") from None
    if len(names) != len(STL10_CLASSES):
        raise CnnbenchError(f"{path}: expected {len(STL10_CLASSES)} class names, one a line, found "
                            f"{len(names)}; replace the file, or remove it to use the published names")
    return names


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
