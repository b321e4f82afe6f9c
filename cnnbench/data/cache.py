"""The decoded-image cache of an image folder: each image decoded once, converted and resized as
training sees it, and kept as raw uint8 pixels with its label. Later runs, every run of a sweep,
cnnbench-eval and other machines that share the cache folder read pixels instead of decoding.

One cache is a folder `<cache_dir>/<tree>-<key>/` holding `pixels.u8` (N x C x H x W bytes) and
`index.json` (shape, labels, class names, files, unreadable files, a digest of sampled blocks).
The key is a hash of everything that decides those bytes: the files with their sizes and
modification times, the size, greyscale or colour, and the decoding rules (DECODER), so a change
to any of them makes another cache and none is ever stale. The key and the index name the files
by their paths inside the tree, so the cache serves the tree wherever it is: moved, mounted
elsewhere, or reached through a symbolic link. A cache is written in a temporary
folder and renamed into place, under a lock that makes a second process wait for the first
instead of decoding too; a damaged one is found by its size and digest and decoded again.
"""

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cnnbench.data.images import IMAGE_ERRORS, image_problem, open_image
from cnnbench.data.splits import Batch
from cnnbench.errors import CnnbenchError
from cnnbench.files import NO_FOLLOW, locked, read_plain, removed_on_exit, temporary_name
from cnnbench.runtime.host import HOST, cpu_cores, process_exists

log = logging.getLogger("cnnbench")

T = TypeVar("T")

# What turns a file into stored pixels; change it when open_image or the resize below changes.
DECODER = "open_image+interpolate(bilinear,antialias)/2"  # /2: with each image's pixel digest
CHUNK = 64  # images a worker process decodes per task
# What cached_splits calls a dataset's own splits (0.1.0 called the test split "val")
SPLIT_NAMES = "train+test"


@dataclass
class Decoded:
    """An image tree's pixels and labels, in the order of its files."""

    pixels: torch.Tensor  # uint8 N x C x H x W: memory-mapped from the cache, or in memory
    labels: torch.Tensor  # int64 N
    files: list[str]  # the decoded files, one per row
    unreadable: dict[str, str]  # file -> why it could not be decoded (left out of the rows)
    digests: list[str]  # a digest of each decoded file's pixels at its own size: equal images, found
    folder: Path | None  # the cache folder (None: decoded in memory, data.cache=false)


def default_cache_dir() -> Path:
    """$CNNBENCH_CACHE, else $XDG_CACHE_HOME/cnnbench, else ~/.cache/cnnbench."""
    if os.environ.get("CNNBENCH_CACHE"):
        return Path(os.environ["CNNBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnbench"


def cache_key(root: Path, files: Sequence[str], mode: str, size: tuple[int, int]) -> str:
    """A hash of everything that decides the cached bytes (paths relative to the tree's root, so
    another machine that mounts the tree elsewhere finds the same cache)."""
    digest = hashlib.sha256(json.dumps([DECODER, mode, list(size)]).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(os.fsencode(f"\0{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}"))
    return digest.hexdigest()[:24]


def decoded_images(root: Path, samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int],
                   cache_dir: Path | None) -> Decoded:
    """The pixels of every sample (path, label) under `root`: from the cache when it holds them,
    else decoded now (all cores) and, with a cache_dir, written there for later runs."""
    def in_memory() -> Decoded:
        return Decoded(*decode(samples, mode, size, into=None), folder=None)

    if cache_dir is None:
        return in_memory()
    files = [path for path, _ in samples]
    # named after the tree's real folder: a link to it finds the same cache
    name = root.resolve().name or "images"
    folder = Path(cache_dir) / f"{name}-{cache_key(root, files, mode, size)}"
    return cached(folder, build=lambda temporary: finish(temporary, root, *decode(
                      samples, mode, size, into=temporary / "pixels.u8", cache=folder)),
                  load=lambda folder: load(folder, root), in_memory=in_memory, what=f"decoding {root}")


def cached(folder: Path, build: Callable[[Path], None], load: Callable[[Path], T],
           in_memory: Callable[[], T], what: str) -> T:
    """load(folder); `build` fills a new folder first when there is none or it is damaged.

    The folder is built beside its place and renamed there (readers never see half of one),
    under a lock that makes a second process wait for the first instead of building too; a
    damaged one (load raises DamagedCache) is said in one warning and built again; when the
    cache folder cannot be written (read-only, full), in_memory() serves this run. A folder half
    built is deleted however the build ends (an error, Ctrl-C, SIGTERM), and one that a killed
    process of this host left is deleted by the next build."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with locked(folder.with_name(folder.name + ".lock"),
                    waiting=f"waiting for another process to finish {what} into {folder}"):
            if folder.is_dir():
                try:
                    return load(folder)
                except DamagedCache as why:
                    log.warning("the cache %s is damaged (%s): building it again", folder, why)
                    shutil.rmtree(folder, ignore_errors=True)
            remove_abandoned(folder)
            temporary = temporary_name(folder)
            temporary.mkdir()  # exclusively, under a name nobody can plant a link at beforehand
            with removed_on_exit(temporary):
                build(temporary)
                os.replace(temporary, folder)
            return load(folder)
    except OSError as error:
        log.warning("cannot use the cache in %s (%s); %s in memory for this run only (set "
                    "data.cache_dir to a writable folder with room)", folder.parent, error.strerror or error,
                    what)
        return in_memory()


def remove_abandoned(folder: Path) -> None:
    """Delete the half-built copies of `folder` that processes of this host which no longer exist
    left (killed outright: nothing of theirs could clean up)."""
    for path in folder.parent.glob(f".{glob.escape(folder.name)}.{glob.escape(HOST)}.*.tmp"):
        pid = path.name[len(f".{folder.name}.{HOST}."):].split(".")[0]
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def cached_splits(name: str, files: Sequence[Path], read: Callable[[], dict[str, Batch]],
                  cache_dir: Path | None) -> dict[str, Batch]:
    """A dataset's splits as read() reads them from `files` (MNIST's .gz files, CIFAR-10's
    pickles), kept as raw arrays in `cache_dir` so that later runs load them in milliseconds
    instead of decompressing or unpickling for a quarter of a second. Keyed, as the image cache,
    by the files' paths, sizes and modification times."""
    if cache_dir is None:
        return read()
    # SPLIT_NAMES: a cache of another release names its arrays otherwise, and is not this one's
    digest = hashlib.sha256(f"{DECODER}/{SPLIT_NAMES}".encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"\0{Path(path).absolute()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    folder = Path(cache_dir) / f"{name}-{digest.hexdigest()[:24]}"

    def build(temporary: Path) -> None:
        index = {}
        for split, (images, labels) in read().items():
            for part, tensor in (("images", images), ("labels", labels)):
                np.save(temporary / f"{split}_{part}.npy", tensor.numpy())
                index[f"{split}_{part}"] = sampled_digest(temporary / f"{split}_{part}.npy")
        (temporary / "index.json").write_text(json.dumps(index))

    def load_splits(folder: Path) -> dict[str, Batch]:
        refuse_links_in(folder)
        try:
            index = json.loads(read_plain(folder / "index.json"))
            if any(sampled_digest(folder / f"{part}.npy") != digest for part, digest in index.items()):
                raise DamagedCache("an array does not match its digest")
            arrays = {part: torch.from_numpy(np.load(folder / f"{part}.npy")) for part in index}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DamagedCache(str(error)) from None
        return {split: (arrays[f"{split}_images"], arrays[f"{split}_labels"])
                for split in sorted({part.rsplit("_", 1)[0] for part in arrays})}

    return cached(folder, build, load_splits, in_memory=read, what=f"reading {name}")


def decode(samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int], into: Path | None,
           cache: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str], dict[str, str], list[str]]:
    """Decode every sample with all cores, into the file `into` (memory-mapped, so a tree bigger
    than memory can be cached; for the cache folder `cache`) or into memory: pixels, labels, files,
    the unreadable ones, and each decoded file's pixel digest."""
    channels = 1 if mode == "L" else 3
    shape = (len(samples), channels, *size)
    cores = cpu_cores()
    where = f"into the cache {cache or into.parent}" if into else "in memory (data.cache=false)"
    log.info("decoding %s images once, at %dx%d, %s, with %d processes", f"{len(samples):,}", *size,
             where, cores)
    pixels = mapped_file(into, shape) if into else np.empty(shape, np.uint8)
    decoded = np.zeros(len(samples), dtype=bool)
    digests = [""] * len(samples)
    unreadable: dict[str, str] = {}
    chunks = [range(start, min(start + CHUNK, len(samples))) for start in range(0, len(samples), CHUNK)]
    tasks = [[samples[row][0] for row in chunk] for chunk in chunks]
    # fork: workers start at once with the parent's modules; one torch thread each (OpenMP cannot
    # be used after a fork, and a worker per core is parallel enough)
    with ProcessPoolExecutor(cores, mp_context=get_context("fork"), initializer=torch.set_num_threads,
                             initargs=(1,)) as pool, \
            tqdm(total=len(samples), desc="decoding images", unit="img", leave=False, disable=None) as bar:
        results = pool.map(_decode_files, tasks, [mode] * len(tasks), [tuple(size)] * len(tasks))
        try:
            for chunk, chunk_results in zip(chunks, results, strict=True):
                for row, result in zip(chunk, chunk_results, strict=True):
                    if isinstance(result, str):
                        unreadable[samples[row][0]] = result
                    else:
                        pixels[row], digests[row] = result
                        decoded[row] = True
                bar.update(len(chunk))
        except BaseException:
            # an error, Ctrl-C, SIGTERM: the chunks not started are dropped, the workers end once
            # their chunk is done (waited for here: a shutdown without waiting leaves them behind)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    rows = np.flatnonzero(decoded)
    for new, old in enumerate(rows):  # close the gaps unreadable files left (rows only move up)
        if new != old:
            pixels[new] = pixels[old]
    if into:
        pixels.flush()
    labels = torch.tensor([samples[row][1] for row in rows], dtype=torch.long)
    return (torch.from_numpy(pixels[:len(rows)]), labels, [samples[row][0] for row in rows], unreadable,
            [digests[row] for row in rows])


def mapped_file(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new file of `shape` uint8 pixels, memory-mapped for writing, its disk space allocated
    first: np.memmap alone makes a sparse file, and a write into it on a full disk kills the
    process with SIGBUS; allocated, a full disk is an OSError (ENOSPC) here, before any decoding."""
    size = int(np.prod(shape))
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o644)
    with os.fdopen(descriptor, "r+b") as file:
        if size:
            allocate(file, size)
        return np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)


def allocate(file: BinaryIO, size: int) -> None:
    """Reserve `size` bytes of disk for the file: posix_fallocate, or where the platform or the
    file system has none (macOS, some network file systems), write zeros (the same guarantee, at
    the cost of writing the file once more)."""
    try:
        os.posix_fallocate(file.fileno(), 0, size)
        return
    except AttributeError:  # not on this platform
        pass
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise  # ENOSPC, EFBIG: the disk (or the process's file size limit) has no room
    zeros = bytes(1 << 24)
    for start in range(0, size, len(zeros)):
        file.write(zeros[:min(len(zeros), size - start)])
    file.flush()


def _decode_files(paths: list[str], mode: str, size: tuple[int, int]) -> list[tuple[np.ndarray, str] | str]:
    # In a worker: each image as training sees it with a digest of its decoded pixels at its own
    # size (equal images across splits are found by it, whatever size each split is stored at),
    # or why it could not be read.
    results: list[tuple[np.ndarray, str] | str] = []
    for path in paths:
        try:
            image = np.ascontiguousarray(open_image(path, mode))
        except IMAGE_ERRORS:
            results.append(image_problem(path) or "could not be read")
            continue
        digest = hashlib.blake2b(repr(image.shape).encode() + image.tobytes(), digest_size=16).hexdigest()
        results.append((resize(image, size).numpy(), digest))
    return results


def resize(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """H x W (x C) uint8 pixels as C x H x W at `size`: bilinear with antialiasing, on the uint8
    values, exactly as torchvision's v2.Resize does it on the DataLoader path."""
    pixels = torch.from_numpy(image.copy())
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    return F.interpolate(pixels[None], size=tuple(size), mode="bilinear", antialias=True,
                         align_corners=False)[0]


class DamagedCache(Exception):
    """A cache folder whose files do not agree with each other."""


def refuse_links_in(folder: Path) -> None:
    """DamagedCache when a file of the cache folder is a link: cnnbench never makes one, and a shared
    cache folder may hold one planted to make a run read (or a rebuild replace) a file elsewhere."""
    links = sorted(path.name for path in folder.iterdir() if path.is_symlink())
    if links:
        raise DamagedCache(f"{', '.join(links)}: a symbolic link, not a file cnnbench wrote")


def finish(folder: Path, root: Path, pixels: torch.Tensor, labels: torch.Tensor, files: list[str],
           unreadable: dict[str, str], digests: list[str]) -> None:
    """Complete a cache folder whose pixels.u8 decode() wrote: cut the file to the decoded rows
    (unreadable files leave fewer), flush it to disk, and write the index with the digest that
    every later load checks; files named by their paths inside `root`, the tree."""
    path = folder / "pixels.u8"
    with open(path, "r+b") as file:
        file.truncate(pixels.numel())
        os.fsync(file.fileno())
    inside = {path: os.path.relpath(path, root) for path in [*files, *unreadable]}
    index = {"decoder": DECODER, "shape": list(pixels.shape), "labels": labels.tolist(),
             "files": [inside[path] for path in files], "unreadable": {inside[path]: why for path, why in
                                                                       unreadable.items()},
             "paths": "relative", "digests": digests, "digest": sampled_digest(path)}
    (folder / "index.json").write_text(json.dumps(index))


def load(folder: Path, root: Path) -> Decoded:
    """A cache folder's pixels (memory-mapped) and index, its files as paths under `root` (the tree,
    wherever it is now); DamagedCache when they disagree."""
    refuse_links_in(folder)
    try:
        index = json.loads(read_plain(folder / "index.json"))
        shape, labels, files, digests = index["shape"], index["labels"], index["files"], index["digests"]
        unreadable = index.get("unreadable", {})
        size = (folder / "pixels.u8").stat().st_size
        if index.get("paths") != "relative":
            # an earlier cnnbench's index: the absolute paths the tree had then, right only
            # where it still is
            if not all(str(path).startswith(f"{root}{os.sep}") for path in [*files, *unreadable]):
                raise DamagedCache(f"its index names the files where the tree was then, not under {root}")
            files = [os.path.relpath(path, root) for path in files]
            unreadable = {os.path.relpath(path, root): why for path, why in unreadable.items()}
        files = [os.path.join(root, path) for path in files]
        unreadable = {os.path.join(root, path): why for path, why in unreadable.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedCache(f"index.json: {error}") from None
    if size != int(np.prod(shape)) or not len(labels) == len(files) == len(digests) == shape[0]:
        raise DamagedCache(f"pixels.u8 holds {size:,} bytes, the index says {shape}")
    if sampled_digest(folder / "pixels.u8") != index.get("digest"):
        raise DamagedCache("pixels.u8 does not match its digest")
    # copy-on-write: a writable view for torch, and nothing is ever written through it
    pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="c", shape=tuple(shape)) if size else \
        np.zeros(shape, dtype=np.uint8)
    return Decoded(torch.from_numpy(pixels), torch.tensor(labels, dtype=torch.long), files, unreadable,
                   digests, folder)


def sampled_digest(path: Path, blocks: int = 64, block: int = 1 << 16) -> str:
    """A hash of the file's size and of `blocks` evenly spaced blocks: finds truncation and most
    damage in milliseconds, however big the cache."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as file:
        for offset in sorted({size * i // blocks for i in range(blocks)}):
            file.seek(offset)
            digest.update(file.read(block))
    return digest.hexdigest()


def check_readable(decoded: Decoded, bad_images: str) -> None:
    """data.bad_images=error: the first unreadable image stops the run, named."""
    if decoded.unreadable and bad_images == "error":
        path, problem = next(iter(decoded.unreadable.items()))
        raise CnnbenchError(f"{path}: not a readable image ({problem}); replace or delete it, "
                            "or set data.bad_images=skip to leave such files out")
