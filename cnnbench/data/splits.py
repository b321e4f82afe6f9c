"""A dataset's splits: the `Data` a run gets (its training, validation and test batch streams,
classes and image shape), the `Batch` every stream yields, the stratified hold-out that makes the
validation (and an image folder's test) split, and the record of which images went where.

The protocol (README, "Validation and test"): everything a run chooses (best.pt, early stopping,
the averaged weights' pick, time to accuracy) looks at the validation split only; the test split
is scored once, at the end, on the chosen checkpoint."""

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    """What a run needs from its dataset: the batch streams and what the model must match."""

    train: Batches
    val: Batches | None  # None: no validation split (data.val_split=0): nothing is chosen
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]  # height, width of the batches the model sees
    mean: list[float]  # the normalisation the batches carry (to show or undo it)
    std: list[float]
    # what an image folder held (images.tree_identity and the classes), recorded by the run: a
    # resume or a sweep rerun onto other images is refused; None for the built-in datasets, whose
    # config says what they are
    identity: dict[str, Any] | None = None
    test: Batches | None = None  # None: the data has no test split (an image tree of train/ and val/)
    # which images each split holds (split_record): in the run folder's split.json, its digest in
    # metrics.json and the checkpoints, so that cnnbench-eval and a resume can tell the same split
    split: dict[str, Any] = field(default_factory=dict)

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


def _quotas(sizes: dict[int, int], count: int) -> dict[int, int]:
    """Each class's share of `count` items, for classes of `sizes` items: proportional, rounded so
    that the shares add up to `count` (largest remainders; ties to the lower class)."""
    total = sum(sizes.values())
    exact = {label: count * size / total for label, size in sizes.items()}
    quota = {label: math.floor(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda label: (quota[label] - exact[label], label))[:count - sum(quota.values())]:
        quota[label] += 1
    return quota


def hold_out(targets: Sequence[int], amount: float, seed: int) -> tuple[list[int], list[int]]:
    """The indices of `targets` as (kept, held out): `amount` of them held out, a fraction
    (0 < amount < 1) or a count (a whole number >= 1), every class in its share (stratified), chosen
    by `seed` alone; each class keeps at least one. Both lists in index order."""
    targets = [int(target) for target in targets]
    count = min(round(amount * len(targets)) if amount < 1 else int(amount), len(targets))
    by_class = _shuffled_by_class(targets, range(len(targets)), torch.Generator().manual_seed(seed))
    quota = _quotas({label: len(members) for label, members in by_class.items()}, count)
    kept, held = [], []
    for label, members in by_class.items():
        share = min(quota[label], len(members) - 1)  # never a class's last item
        held += members[:share]
        kept += members[share:]
    return sorted(kept), sorted(held)


def stratified_subset(targets: Sequence[int], indices: Sequence[int], count: int, seed: int) -> list[int]:
    """`count` of `indices`, each class keeping its share of them (rounded by largest remainders),
    drawn at random by `seed`: the first N files of an image folder would be its first classes only.
    Drawn from `indices` alone, after the split: the subset never moves an image between splits."""
    if count >= len(indices):
        return list(indices)
    by_class = _shuffled_by_class(targets, indices, torch.Generator().manual_seed(seed))
    quota = _quotas({target: len(members) for target, members in by_class.items()}, count)
    return sorted(index for target, members in by_class.items() for index in members[:quota[target]])


def split_record(members: dict[str, list], how: dict[str, Any],
                 listed: dict[str, list | str] | None = None) -> dict[str, Any]:
    """The record of a split: how many images each part holds, a digest of which ones (the rows
    of the dataset's files, or an image folder's files), what decided it, and the members (as
    `listed` says them, where a part is said shorter in words)."""
    text = json.dumps({name: members[name] for name in sorted(members)}, separators=(",", ":"))
    return {"counts": {name: len(part) for name, part in members.items()},
            "digest": hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16],
            "how": how, "members": {**members, **(listed or {})}}


def split_summary(split: dict[str, Any]) -> dict[str, Any]:
    """The record without its members: what metrics.json and a checkpoint keep."""
    return {key: value for key, value in split.items() if key != "members"}
