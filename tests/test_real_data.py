"""The real datasets: Fashion-MNIST from the Debian package, MNIST and CIFAR-10 from ../shared/data."""

import hashlib

import pytest
import torch

from cnnbench.data import build_data
from cnnbench.train import train

from conftest import FASHION_MNIST_SYSTEM, SHARED_DATA

pytestmark = pytest.mark.slow


def require(path):
    # Not a skip: CI installs these, and a machine without them must say so, not pass quietly.
    assert path.exists(), (f"{path} is missing: see README 'Offline data' "
                           "(apt-get install dataset-fashion-mnist; ../shared/data)")


def test_lenet_learns_real_fashion_mnist_from_the_debian_package(compose_config, tmp_path):
    require(FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz")
    # An empty data root: the files must be found in the package's folder, with no download.
    cfg = compose_config("data=fashion_mnist", f"data.root={tmp_path / 'empty'}", "data.download=false",
                         "data.train_limit=5000", "batch_size=64", "optimizer=adam", "epochs=1",
                         "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["final_val_acc"] > 0.6  # chance is 0.10; the full default run reaches 0.90


def test_lenet_learns_real_mnist(compose_config, tmp_path):
    require(SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    cfg = compose_config("data=mnist", f"data.root={SHARED_DATA}", "data.download=false",
                         "data.train_limit=5000", "batch_size=64", "optimizer=adam", "epochs=1",
                         "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["final_val_acc"] > 0.7  # chance is 0.10


def test_real_cifar10_loads_exactly_despite_its_md5s(compose_config):
    require(SHARED_DATA / "cifar-10-batches-py" / "data_batch_1")
    cfg = compose_config("data=cifar10", f"data.root={SHARED_DATA}", "data.download=false")
    data = build_data(cfg.data, batch_size=256, seed=0, device=torch.device("cpu"))
    # sha256 of the decoded arrays in torchvision's NHWC layout, from ../shared/data/SOURCES.md
    expected = {"train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
                "val": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04"}
    for split, loader in (("train", data.train), ("val", data.val)):
        pixels = loader.images.permute(0, 2, 3, 1).contiguous().numpy().tobytes()
        assert hashlib.sha256(pixels).hexdigest() == expected[split]
    assert data.train.labels.bincount().tolist() == [5000] * 10
    assert data.val.labels.bincount().tolist() == [1000] * 10
