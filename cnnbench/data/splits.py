"""A dataset's splits: the `Data` a run gets (its batch streams, classes and image shape), the
`Batch` every stream yields, and the stratified split of labelled items."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

# (images N x C x H x W, labels N): what every loader yields, and what a dataset's split holds
Batch = tuple[torch.Tensor, torch.Tensor]


class Batches(Protocol):
    """A stream of batches a run reads: memory.MemoryLoader, loader.EpochDataLoader, memory.OneBatch."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Replay epoch `epoch`'s order and augmentation, from its batch `start` on."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


@dataclass
class Data:
    """What a run needs from its dataset: the two batch streams and what the model must match."""

    train: Batches
    val: Batches
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]  # height, width of the batches the model sees
    mean: list[float]  # the normalisation the batches carry (to show or undo it)
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
