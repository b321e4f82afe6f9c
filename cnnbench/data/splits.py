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

    def smallest_batch(self) -> int:
        """The fewest images a batch of an epoch holds (BatchNorm cannot train on one)."""


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


def _shuffled_by_class(targets: Sequence[int], indices: Sequence[int], generator: torch.Generator
                       ) -> dict[int, list[int]]:
    """`indices` grouped by their class in `targets`, each class's in a random order of `generator`."""
    by_class: dict[int, list[int]] = {}
    for index in indices:
        by_class.setdefault(targets[index], []).append(index)
    return {target: [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
            for target, members in sorted(by_class.items())}


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into train/val keeping each class's share; at least one of each per class."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for shuffled in _shuffled_by_class(targets, range(len(targets)), generator).values():
        n_val = min(max(1, round(len(shuffled) * val_fraction)), len(shuffled) - 1)
        val += shuffled[:n_val]
        train += shuffled[n_val:]
    return sorted(train), sorted(val)


def stratified_subset(targets: Sequence[int], indices: Sequence[int], count: int, seed: int) -> list[int]:
    """`count` of `indices`, each class keeping its share of them (rounded by largest remainders),
    drawn at random by `seed`: the first N files of an image folder would be its first classes only.
    Drawn from `indices` alone, after the split: the subset never moves an image between splits."""
    if count >= len(indices):
        return list(indices)
    by_class = _shuffled_by_class(targets, indices, torch.Generator().manual_seed(seed))
    exact = {target: count * len(members) / len(indices) for target, members in by_class.items()}
    quota = {target: int(share) for target, share in exact.items()}
    by_remainder = sorted(exact, key=lambda target: (quota[target] - exact[target], target))
    for target in by_remainder[:count - sum(quota.values())]:
        quota[target] += 1
    return sorted(index for target, members in by_class.items() for index in members[:quota[target]])
