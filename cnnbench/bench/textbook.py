"""The course notebooks' way, for the benchmarks to measure cnnbench against: torchvision's dataset
classes with per-sample PIL transforms, and the notebooks' whole training script
(`python -m cnnbench.bench.textbook --data-root DIR --epochs N`)."""

import argparse
import gzip
import tempfile
from pathlib import Path

import torch
import torchvision
from omegaconf import DictConfig
from torchvision import transforms

from cnnbench.data.datasets import IDX_FILES, find_idx_folder, idx_file
from cnnbench.data.loader import policy_transform


class _CIFAR10Copy(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10, minus its md5 check (valid copies here have other md5s)."""

    def _check_integrity(self) -> bool:
        return True


def torchvision_dataset(cfg: DictConfig, scratch: Path, train: bool = True) -> torch.utils.data.Dataset:
    """The torchvision dataset class the notebooks use, with their per-sample transforms."""
    normalize = [transforms.ToTensor(), transforms.Normalize(list(cfg.data.mean), list(cfg.data.std))]
    if cfg.data.name == "cifar10":
        return _CIFAR10Copy(cfg.data.root, train=train, transform=transforms.Compose(
            (pil_augmentation(cfg.data.augment) if train else []) + normalize))
    # torchvision's (Fashion)MNIST reads extracted files from root/<Class>/raw: unpack ours there.
    dataset_class = torchvision.datasets.FashionMNIST if cfg.data.name == "fashion_mnist" \
        else torchvision.datasets.MNIST
    root = Path(cfg.data.root)
    own = root / dataset_class.__name__
    folder = find_idx_folder([own / "raw", own, root] + [Path(d) for d in cfg.data.search_dirs])
    raw = scratch / dataset_class.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in (n for pair in IDX_FILES.values() for n in pair):
        source = idx_file(folder, name)
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rb") as file:
            (raw / name).write_bytes(file.read())
    return dataset_class(str(scratch), train=train, transform=transforms.Compose(normalize))


def pil_augmentation(augment: DictConfig) -> list:
    """The per-sample PIL transforms a notebook writes for CIFAR-10's augmentation: the random crop
    and flip, and the run's automatic policy (torchvision's, per image)."""
    steps = []
    if augment.crop_padding:
        steps.append(transforms.RandomCrop(32, padding=augment.crop_padding))
    if augment.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    if augment.get("policy"):
        steps.append(policy_transform(transforms, augment))
    return steps


def textbook(data_root: str, epochs: int, limit: int | None) -> None:
    """The course notebooks' whole script: torchvision's dataset, per-sample ToTensor/Normalize in
    2 DataLoader workers, `.item()` every batch, test accuracy after each epoch."""
    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, Subset

    from cnnbench.models import get_model

    cfg = OmegaConf.create({"data": {"name": "fashion_mnist", "root": data_root, "mean": [0.2860],
                                     "std": [0.3530], "search_dirs": ["/usr/share/datasets/fashion-mnist"]}})
    with tempfile.TemporaryDirectory() as folder:
        train_set = torchvision_dataset(cfg, Path(folder))
        test_set = torchvision_dataset(cfg, Path(folder), train=False)
        if limit:
            train_set = Subset(train_set, range(limit))
        train_loader = DataLoader(train_set, batch_size=256, shuffle=True, num_workers=2)
        test_loader = DataLoader(test_set, batch_size=256, num_workers=2)
        torch.manual_seed(0)
        model = get_model("lenet", num_classes=10, in_channels=1, image_size=[28, 28])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_function = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for images, labels in train_loader:
                optimizer.zero_grad()
                loss = loss_function(model(images), labels)
                loss.backward()
                optimizer.step()
                loss.item()
            model.eval()
            correct = 0
            with torch.no_grad():
                for images, labels in test_loader:
                    correct += (model(images).argmax(1) == labels).sum().item()
            print(f"test acc {correct / len(test_set):.4f}")


if __name__ == "__main__":  # the textbook script, run as its own process by process.py's (d)
    options = argparse.ArgumentParser()
    options.add_argument("--data-root")
    options.add_argument("--epochs", type=int)
    options.add_argument("--limit", type=int)
    known = options.parse_args()
    textbook(known.data_root, known.epochs, known.limit)
