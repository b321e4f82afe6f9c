"""The in-memory loader: a whole split as one uint8 tensor on the training device, each batch
gathered, augmented, converted and normalised there (per-sample PIL transforms in a DataLoader
cost about as much as LeNet's whole compute on a 2-core CPU)."""

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from cnnbench.data.augment import Augment
from cnnbench.data.splits import Batch
from cnnbench.runtime.device import to_device


class MemoryLoader:
    """Batches from one uint8 image tensor: on the training device, or memory-mapped from a file
    on disk (an image-folder cache too big for the device), each batch then moved to the device.

    Augmentation draws its own random numbers for every image (augment.py). Batches are float32,
    normalised, `size` high and wide; the stored images stay uint8 (4x less memory).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool, seed: int = 0,
                 augment: Augment | None = None, size: tuple[int, int] | None = None,
                 rows: torch.Tensor | None = None, device: torch.device | None = None,
                 rank: int = 0, world: int = 1) -> None:
        self.images = images  # uint8 N x C x H x W, on `device` or on the CPU (memory-mapped)
        self.rows = rows  # the rows of `images` this loader serves (a split of a shared cache); None: all
        self.labels = labels if rows is None else labels.index_select(0, rows.to(labels.device))
        self.device = device or images.device
        self.labels = self.labels.to(self.device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world  # distributed training: this process's shard
        self.augment = augment if augment and augment.active else None
        self.size = tuple(size or images.shape[-2:])
        # (x / 255 - mean) / std as one multiply-add per pixel
        std_t = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_t)
        self.shift = -torch.tensor(mean, device=self.device).view(1, -1, 1, 1) / std_t
        self.epoch, self.start = 0, 0
        self.skipped: set[str] = set()  # image files left out as unreadable (data.bad_images=skip)
        self.files: list[str] | None = None  # an image folder's files, one per served image
        # Training drops the last partial batch (a batch of 1 breaks BatchNorm); evaluation keeps all.
        self.drop_last = shuffle and shard_size(len(self.labels), rank, world, shuffle) > batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch whose shuffle and augmentation to replay (deterministic per seed and
        epoch), and the batch to start at (a run resumed from a mid-epoch checkpoint)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        count = shard_size(len(self.labels), self.rank, self.world, self.shuffle) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def smallest_batch(self) -> int:
        """The fewest images a batch of an epoch holds: the last one, when it is not dropped."""
        count = shard_size(len(self.labels), self.rank, self.world, self.shuffle)
        return self.batch_size if self.drop_last else count - (len(self) - 1) * self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        device = self.device
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
        height, width = self.images.shape[-2:]
        for batch in range(len(self)):
            index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            draws = self.augment.draw(len(index), height, width, generator, self.size) if self.augment else {}
            if batch < self.start:
                # Skipped, but its random numbers were drawn: the batches after it get the crops
                # and flips an uninterrupted epoch gives them.
                continue
            images = self.gather(index)
            images = self.augment.apply(images, draws, self.size) if self.augment else images.float()
            images = images.mul_(self.scale).add_(self.shift)  # in place: one buffer
            if tuple(images.shape[-2:]) != self.size:
                images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
            if self.augment:  # random erasing works on the normalised images, as torchvision's
                images = self.augment.erase(images, draws)
            yield images, self.labels.index_select(0, index)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images at positions `index` of this loader's rows, on the training device."""
        if self.rows is not None:
            index = self.rows.index_select(0, index.to(self.rows.device))
        # index_select, not images[index]: 30x faster for a batch of rows on a 2-core CPU
        return to_device(self.images.index_select(0, index.to(self.images.device)), self.device)


class OneBatch:
    """The same batch every epoch: for checking that a model can memorise it (debug=overfit)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Nothing to reshuffle."""

    def __len__(self) -> int:
        return 1

    def smallest_batch(self) -> int:
        """The one batch's size."""
        return len(self.batch[1])

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


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by torchrun with several."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
