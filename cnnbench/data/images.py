"""Image files: which files in a folder are images, decoding any of them the way training and
cnnbench-predict both see it, scanning a class-folder tree, and its stratified split."""

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnbench.errors import CnnbenchError

log = logging.getLogger("cnnbench")

# Image files by extension: the ones torchvision's ImageFolder reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
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


def find_image_files(folder: Path, ignored: Counter | None = None) -> list[str]:
    """Every image file under `folder`, sub-folders included, in sorted order; what is left out
    (hidden files and folders, other extensions) is counted in `ignored` by extension or "hidden"."""
    ignored = Counter() if ignored is None else ignored
    found = []
    for parent, folders, files in os.walk(folder, followlinks=True):
        ignored["hidden"] += sum(_hidden(name) for name in folders)
        folders[:] = sorted(name for name in folders if not _hidden(name))  # walk these, in order
        for name in sorted(files):
            extension = os.path.splitext(name)[1].lower()
            if _hidden(name):
                ignored["hidden"] += 1
            elif extension in IMAGE_EXTENSIONS:
                found.append(os.path.join(parent, name))
            else:
                ignored[extension or "no extension"] += 1
    return found


def tree_identity(root: Path) -> dict[str, Any]:
    """What an image tree holds, to tell it from another: a fingerprint of every image file's path
    under `root` and its size, and their count. (Not the modification times: a copy of the tree
    made elsewhere is the same data.)"""
    files = find_image_files(root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{os.path.relpath(path, root)}\0{os.stat(path).st_size}\0".encode("utf-8", "surrogateescape"))
    return {"fingerprint": digest.hexdigest()[:16], "images": len(files)}


class ImageFiles(Dataset):
    """The images under `root/<class>/` (sub-folders included), labelled by class folder.

    Like torchvision's ImageFolder, with three differences: hidden files and folders are never
    data (ImageFolder makes `.ipynb_checkpoints` a class), what is left out is counted in
    `ignored` so it can be said, and a file that cannot be decoded comes back as a marker
    (label -1 - its index) for the loader to report or skip, not as a crashed worker process.
    """

    def __init__(self, root: Path, mode: str, size: tuple[int, int]) -> None:
        self.root, self.mode = root, mode
        self.transform = None  # set by the loader: decoded image -> tensor
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
        return find_image_files(folder, self.ignored)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = open_image(path, self.mode)
        except IMAGE_ERRORS:
            return self.blank, -1 - index
        return self.transform(image), label


def scan_class_folders(folder: Path, mode: str, size: tuple[int, int]) -> ImageFiles:
    files = ImageFiles(folder, mode, size)
    if not files.classes:
        raise CnnbenchError(f"data.root={folder} holds no class folders; expected "
                            f"{folder}/<class name>/<image files>")
    ignored = +files.ignored  # without the zero counts the scan leaves (a tree with nothing to leave out)
    if ignored:
        hidden = ignored.pop("hidden", 0)
        others = ", ".join(f"{count} {extension}" for extension, count in sorted(ignored.items()))
        said = [f"{sum(ignored.values())} files that are not images by extension ({others})"] \
            if ignored else []
        said += [f"{hidden} hidden files or folders"] if hidden else []
        log.warning("%s: left out %s", folder, " and ".join(said))
    return files
