"""The DataLoader path (`data.loader=torch`, and image folders): per-sample transforms in worker
processes, with the same shuffle, augmentation and sharding rules as the in-memory loader, so a
run resumes exactly whichever path it takes. torchvision is imported only here, and only when used:
its import pulls in torch._dynamo and costs a run about 1.5 s."""

import logging
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from cnnbench.data.images import image_problem
from cnnbench.data.memory import epoch_seed, process_rank, shard, shard_size
from cnnbench.data.splits import Batch
from cnnbench.errors import CnnbenchError

log = logging.getLogger("cnnbench")


class TensorImages(Dataset):
    """Per-sample access to uint8 image tensors, for the DataLoader path on the small datasets."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def sample_transform(cfg: DictConfig, train: bool, size: tuple[int, int],
                     native: tuple[int, int] | None = None):
    """Per-sample transforms for the DataLoader path (a torchvision v2.Compose): the same steps
    the memory path batches.

    `native` is the stored images' size when they all share one (crop there, resize last, as
    MemoryLoader does); without it (ImageFolder) images are resized to `size` first.
    """
    from torchvision.transforms import v2  # here only: see the module's docstring

    crop_size = native or size
    steps = [v2.ToImage()]
    scale = cfg.augment.get("resized_crop_scale")  # .get: configs saved before the key existed
    if train and scale:  # a random box of the decoded image, resized to the training size
        ratio = tuple(cfg.augment.get("resized_crop_ratio") or (3 / 4, 4 / 3))
        steps.append(v2.RandomResizedCrop(size, scale=tuple(scale), ratio=ratio, antialias=True))
        native = None  # the crop resized already
    elif native is None:
        steps.append(v2.Resize(size, antialias=True))
    if train and cfg.augment.crop_padding:
        steps.append(v2.RandomCrop(crop_size, padding=cfg.augment.crop_padding))
    if train and cfg.augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if train and cfg.augment.get("policy"):  # .get: configs saved before the key existed
        steps.append(policy_transform(v2, cfg.augment))
    if train and cfg.augment.get("color_jitter"):  # .get: configs saved before the key existed
        # brightness, contrast and saturation each scaled by its own random factor in [1-s, 1+s]
        strength = cfg.augment.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    if native is not None and native != size:
        steps.append(v2.Resize(size, antialias=False))  # bilinear on floats, as MemoryLoader
    if train and cfg.augment.get("random_erasing"):  # on the normalised image, as MemoryLoader
        steps.append(v2.RandomErasing(cfg.augment.random_erasing, scale=tuple(cfg.augment.erasing_scale),
                                      ratio=tuple(cfg.augment.erasing_ratio),
                                      value="random" if cfg.augment.erasing_value == "noise" else 0.0))
    return v2.Compose(steps)


def policy_transform(transforms, augment: DictConfig):
    """torchvision's per-image transform for `augment.policy`, from `transforms` (torchvision's v2
    module, or the v1 one the course notebooks use)."""
    policy = augment.policy
    if policy == "randaugment":
        return transforms.RandAugment(augment.get("policy_ops", 2), augment.get("policy_magnitude", 9))
    if policy == "trivialaugment":
        return transforms.TrivialAugmentWide()
    # autoaugment_cifar10, _svhn, _imagenet
    return transforms.AutoAugment(transforms.AutoAugmentPolicy(policy.removeprefix("autoaugment_")))


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
        order, seeds = (shard(items, self.rank, self.world, self.shuffle)[self.start:]
                        for items in (order, seeds))
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

    def smallest_batch(self) -> int:
        """The fewest images a batch of an epoch holds: the last one, when it is not dropped
        (unreadable images left out may leave fewer)."""
        count = len(self.sampler)
        return self.batch_size if self.drop_last else count - (len(self) - 1) * self.batch_size

    @property
    def files(self) -> list[str] | None:
        """The image files this loader serves, in order (None when its images are not files)."""
        samples = getattr(self.dataset.dataset, "samples", None)
        return None if samples is None else [samples[index][0] for index in self.dataset.indices]

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


def data_loader(dataset: EpochSamples, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                device: torch.device, bad_images: str = "error") -> EpochDataLoader:
    """A DataLoader over `dataset` with the in-memory loader's shuffle, augmentation and sharding
    rules (see _EpochSampler)."""
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
