"""Fixtures that write small datasets in the real on-disk formats, and compose run configs."""

import gzip
import importlib
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The project's real datasets (MNIST, CIFAR-10) live in ../shared beside the checkout.
SHARED_DATA = Path(os.environ.get("CNNBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
# How to get each real dataset, for the tests that need one (README "Tests").
GET_FASHION_MNIST = "apt-get install dataset-fashion-mnist (Debian/Ubuntu; README 'Offline data')"
GET_SHARED_DATA = ("put MNIST (MNIST/raw/*-ubyte.gz) and CIFAR-10 (cifar-10-batches-py/) in ../shared/data "
                   "beside the checkout, or point CNNBENCH_SHARED_DATA at a folder holding them "
                   "(README 'Tests')")


def in_ci() -> bool:
    """Whether this is CI (the CI variable set and not empty; .ci/run sets it): there everything the
    tests need is installed, so whatever is missing is a failure, never a skip."""
    return bool(os.environ.get("CI"))


def require(present: bool, what: str, how: str) -> None:
    """Skip the calling test, saying how to get `what`, when it is missing; in CI, fail instead."""
    if present:
        return
    message = f"{what} is missing: {how}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, and CI must provide it)", pytrace=False)
    pytest.skip(message)


def require_data(path: Path, how: str) -> None:
    """require() for a dataset file or folder at `path`."""
    require(path.exists(), str(path), how)


def require_module(name: str, how: str):
    """The module `name`, imported; require() when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"the Python module {name}", how)


def progress(checkpoint: dict):
    """A checkpoint's saved progress (epoch, step, best accuracy, history...) as the run state."""
    from cnnbench.engine.state import RunState

    return RunState.from_checkpoint(checkpoint)


# A run of a few seconds: 256 fake 8x8 images, an MLP, 2 epochs of 16 steps (batch 16)
SMALL_RUN = ["data=fake", "data.num_train=256", "data.num_val=64", "data.num_test=64", "data.in_channels=1",
             "data.image_size=8", "data.mean=[0.5]", "data.std=[0.25]", "model=mlp", "model.hidden=[16]",
             "batch_size=16", "epochs=2", "device=cpu"]


def assert_resumes_exactly(compose_config, overrides: list[str], folder: Path) -> dict:
    """A run stopped by SIGTERM in its second epoch and resumed ends as one never stopped: the same
    history, the same weights. Returns the resumed run's metrics."""
    from fault_injection import faults_at

    from cnnbench.engine.checkpoint import load_checkpoint
    from cnnbench.engine.train import train
    from cnnbench.errors import Interrupted

    uninterrupted = train(compose_config(*overrides), folder / "straight")
    with faults_at("term", "train-batch:22"), pytest.raises(Interrupted):
        train(compose_config(*overrides), folder / "run")
    stopped = progress(load_checkpoint(folder / "run" / "last.pt"))
    assert stopped.epoch == 1 and stopped.step > 0  # inside epoch 2
    resumed = train(compose_config(*overrides), folder / "run", resume_from=True)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[r[k] for k in keys] for r in resumed["history"]] == \
        [[r[k] for k in keys] for r in uninterrupted["history"]]
    mine, theirs = (load_checkpoint(folder / name / "last.pt")["model"] for name in ("run", "straight"))
    assert all(torch.equal(mine[key], theirs[key]) for key in theirs)
    return resumed


def learnable_images(count: int, num_classes: int, shape: tuple[int, ...], seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose class sets a bright block's position: easy to learn, not trivial."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % num_classes
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, *shape), generator=generator, dtype=torch.uint8)
    height, width = shape[-2:]
    block = max(2, height // 4)
    for index, label in enumerate(labels.tolist()):
        top = (label * block) % (height - block)
        left = (label * 3 * block // 2) % (width - block)
        images[index, ..., top:top + block, left:left + block] = 220
    return images, labels


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write uint8 data as an IDX file (gzip-compressed when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.contiguous().numpy().tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_idx_dataset(folder: Path, train: int = 600, test: int = 200, gz: bool = True) -> Path:
    """The four MNIST-format files, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = learnable_images(count, 10, (28, 28), seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels.to(torch.uint8))
    return folder


def write_cifar10(folder: Path, per_batch: int = 100, test: int = 100) -> Path:
    """CIFAR-10 python batches (5 train + test + meta) in `folder`/cifar-10-batches-py."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        count = test if name == "test_batch" else per_batch
        images, labels = learnable_images(count, 10, (3, 32, 32), seed)
        entry = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": images.reshape(count, -1).numpy(),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(count)]}
        with open(batches / name, "wb") as file:
            pickle.dump(entry, file)
    with open(batches / "batches.meta", "wb") as file:
        pickle.dump({b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072}, file)
    return folder


def write_image_folder(folder: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"),
                       per_class: int = 10, size: tuple[int, int] = (40, 48)) -> Path:
    """An ImageFolder tree of PNGs: folder/<class>/<n>.png, in RGB, greyscale and RGBA."""
    modes = ("RGB", "L", "RGBA")  # ImageFolder trees in the wild mix them
    band = size[0] // len(classes)
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(label)
        for index in range(per_class):
            pixels = torch.randint(0, 60, (*size, 3), generator=generator, dtype=torch.uint8)
            pixels[label * band:(label + 1) * band] = 230  # each class brightens its own band
            Image.fromarray(pixels.numpy()).convert(modes[index % 3]).save(folder / name / f"{index}.png")
    return folder


def torchvision_model(architecture: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's own `architecture` (resnet18, vgg11_bn, densenet121...) with random weights, and
    random BatchNorm statistics and affine parameters (at their defaults BatchNorm is about the
    identity, and a mix-up of its tensors would go unseen), in eval mode."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(architecture, weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def torchvision_cache_file(architecture: str, torch_home: Path) -> Path:
    """Where torchvision's weight API keeps `architecture`'s default ImageNet weights under
    TORCH_HOME: hub/checkpoints/<the file name of the weights' URL>."""
    from torchvision.models import get_model_weights

    return torch_home / "hub" / "checkpoints" / Path(get_model_weights(architecture).DEFAULT.url).name


def write_torchvision_weights(architecture: str, path: Path, seed: int = 0) -> Path:
    """A torchvision `architecture`'s state dict (torchvision_model) saved at `path`, as a user's
    torch.save(model.state_dict(), path) or torchvision's cache holds one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision_model(architecture, seed).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory) -> Path:
    """torchvision's ResNet-18 with random weights, saved as a state-dict file (model.weights=PATH)."""
    return write_torchvision_weights("resnet18", tmp_path_factory.mktemp("weights") / "resnet18.pth")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch, resnet18_weights: Path) -> Path:
    """TORCH_HOME for this test, holding ResNet-18's weights where torchvision's weight API caches
    them (model.weights=imagenet then reads them from there, without the network)."""
    home = tmp_path / "torch-home"
    cached = torchvision_cache_file("resnet18", home)
    cached.parent.mkdir(parents=True)
    cached.symlink_to(resnet18_weights)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    """A data root holding MNIST in torchvision's layout: root/MNIST/raw/*.gz."""
    write_idx_dataset(tmp_path / "data" / "MNIST" / "raw")
    return tmp_path / "data"


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A data root holding small CIFAR-10 batches whose md5s are not torchvision's."""
    return write_cifar10(tmp_path / "data")


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """An unsplit ImageFolder tree with three classes of non-square PNGs."""
    return write_image_folder(tmp_path / "images")


@pytest.fixture(autouse=True, scope="session")
def _image_cache(tmp_path_factory):
    """Image-folder caches go to a folder of this test session's (also in the runs tests start as
    processes), never to the user's ~/.cache/cnnbench."""
    folder = tmp_path_factory.mktemp("image-cache")
    old = os.environ.get("CNNBENCH_CACHE")
    os.environ["CNNBENCH_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("CNNBENCH_CACHE", None)
    else:
        os.environ["CNNBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def compose_config():
    """compose_config(*overrides) -> the run config Hydra would build from those overrides."""
    def _compose(*overrides: str):
        with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    return _compose
