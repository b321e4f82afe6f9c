"""CIFAR-100, SVHN, STL-10, KMNIST and EMNIST: each written small in its real on-disk format, loaded
through build_data, checked for shape, label mapping, image orientation and class names; damaged
files end in one line naming them; and one short run of each."""

import math
import pickle
import string
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import learnable_images, write_idx, write_idx_dataset

from cnnbench.config.checks import check_config
from cnnbench.config.shapes import input_shape, training_images
from cnnbench.data import build_data, read_idx
from cnnbench.data import datasets
from cnnbench.data.datasets import CIFAR100_CLASSES, STL10_CLASSES
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError

CPU = torch.device("cpu")
# an image that a transpose, a flip or a swap of channels changes: its values rise along each row, then
# down the rows and across the channels
ASYMMETRIC = (torch.arange(3 * 32 * 32) % 251).to(torch.uint8).view(3, 32, 32)


def load(compose_config, *overrides, batch_size=16):
    cfg = compose_config(*overrides, "data.download=false")
    return build_data(cfg.data, batch_size=batch_size, seed=0, device=CPU)


def one_line_error(function) -> str:
    """The CnnbenchError `function()` raises, checked to be one line."""
    with pytest.raises(CnnbenchError) as error:
        function()
    assert "\n" not in str(error.value)
    return str(error.value)


# writers of each format


def write_cifar100(root: Path, train: int = 60, test: int = 40, meta: bool = True) -> Path:
    """CIFAR-100's train and test pickles (and meta) in root/cifar-100-python: fine labels 0..99, coarse
    labels fine // 5; the first test image is ASYMMETRIC."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, count) in enumerate((("train", train), ("test", test))):
        images, fine = learnable_images(count, 100, (3, 32, 32), seed)
        if name == "test":
            images[0] = ASYMMETRIC
        entry = {b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
                 b"batch_label": name.encode(), b"fine_labels": fine.tolist(),
                 b"coarse_labels": (fine // 5).tolist(), b"data": images.reshape(count, -1).numpy()}
        (folder / name).write_bytes(pickle.dumps(entry))
    if meta:
        names = {b"fine_label_names": [f"fine {i}".encode() for i in range(100)],
                 b"coarse_label_names": [f"coarse {i}".encode() for i in range(20)]}
        (folder / "meta").write_bytes(pickle.dumps(names))
    return root


def write_svhn(folder: Path, counts=(("train", 60), ("test", 30)), labels=None) -> Path:
    """SVHN's .mat files in `folder`: 'X' H x W x C x N uint8, 'y' N x 1 with 10 for the digit 0 (each
    file's labels cycle 10, 1, 2, ..., 9); the first test image is ASYMMETRIC."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, count) in enumerate(counts):
        images, digits = learnable_images(count, 10, (3, 32, 32), seed)
        if name == "test":
            images[0] = ASYMMETRIC
        y = digits.numpy().astype(np.uint8) if labels is None else np.asarray(labels, dtype=np.uint8)
        y = np.where(y == 0, 10, y).reshape(-1, 1)
        scipy.io.savemat(folder / f"{name}_32x32.mat", {"X": images.permute(2, 3, 1, 0).numpy(), "y": y})
    return folder


def stl10_bytes(images: torch.Tensor) -> bytes:
    """N x 3 x 96 x 96 images as STL-10 stores them: each colour plane column by column."""
    return images.transpose(2, 3).contiguous().numpy().tobytes()


def write_stl10(root: Path, train: int = 30, test: int = 20, names: bool = True) -> Path:
    """STL-10's four binary files (and class_names.txt) in root/stl10_binary: labels 1..10 as stored;
    the first test image is ASYMMETRIC, scaled up to 96 px."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, count) in enumerate((("train", train), ("test", test))):
        images, labels = learnable_images(count, 10, (3, 96, 96), seed)
        if name == "test":
            images[0] = ASYMMETRIC.repeat(1, 3, 3)
        (folder / f"{name}_X.bin").write_bytes(stl10_bytes(images))
        (folder / f"{name}_y.bin").write_bytes((labels + 1).to(torch.uint8).numpy().tobytes())
    if names:
        (folder / "class_names.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    return root


def write_emnist(folder: Path, split: str = "balanced", classes: int = 47, first: int = 0, gz: bool = True,
                 train: int = 94, test: int = 47) -> Path:
    """One EMNIST split's four IDX files in `folder`, its images stored transposed as EMNIST's are
    (the first test image is the top-left 28x28 of ASYMMETRIC's first channel, upright); labels
    numbered from `first` (letters: 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for seed, part in enumerate(("train", "test")):
        images, labels = learnable_images(train if part == "train" else test, classes, (28, 28), seed)
        if part == "test":
            images[0] = ASYMMETRIC[0, :28, :28]
        prefix = folder / f"emnist-{split}-{part}"
        write_idx(Path(f"{prefix}-images-idx3-ubyte{suffix}"), images.transpose(1, 2).contiguous())
        write_idx(Path(f"{prefix}-labels-idx1-ubyte{suffix}"), (labels + first).to(torch.uint8))
    return folder


# CIFAR-100


def test_cifar100_fine_labels_and_the_class_names_of_its_meta_file(compose_config, tmp_path):
    root = write_cifar100(tmp_path / "data")
    data = load(compose_config, "data=cifar100", f"data.root={root}", "data.val_split=0")
    assert data.classes == [f"fine {i}" for i in range(100)]
    assert (data.in_channels, data.image_size) == (3, (32, 32))
    assert data.train.images.shape == (60, 3, 32, 32) and data.test.images.shape == (40, 3, 32, 32)
    written = pickle.loads((root / "cifar-100-python" / "test").read_bytes())
    assert data.test.labels.tolist() == written[b"fine_labels"]
    assert torch.equal(data.test.images[0], ASYMMETRIC)  # row-major CHW, as CIFAR-10


def test_cifar100_coarse_labels_are_not_the_fine_ones_remembered(compose_config, tmp_path, monkeypatch):
    root = write_cifar100(tmp_path / "data")
    options = ["data=cifar100", f"data.root={root}", "data.val_split=0"]
    fine = load(compose_config, *options)
    coarse = load(compose_config, *options, "data.labels=coarse")
    assert coarse.classes == [f"coarse {i}" for i in range(20)]
    assert torch.equal(coarse.test.labels, fine.test.labels // 5)  # as written
    assert torch.equal(coarse.train.images, fine.train.images)
    # and again from the arrays the first two runs kept in the cache (a new process would read those)
    monkeypatch.setattr(datasets, "_READ", OrderedDict())  # as a new process starts
    again = load(compose_config, *options, "data.labels=coarse")
    assert torch.equal(again.test.labels, coarse.test.labels)


def test_cifar100_without_a_meta_file_has_the_published_names(compose_config, tmp_path):
    root = write_cifar100(tmp_path / "data", meta=False)
    options = ["data=cifar100", f"data.root={root}", "data.val_split=0"]
    assert load(compose_config, *options).classes[:3] == ["apple", "aquarium_fish", "baby"]
    coarse = load(compose_config, *options, "data.labels=coarse")
    assert coarse.classes == CIFAR100_CLASSES["coarse"] and coarse.classes[-1] == "vehicles_2"


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b"not a pickle"), "train is not a readable CIFAR-100 train file"),
    (lambda path: path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                                 b"fine_labels": [0, 100], b"coarse_labels": [0, 1]})),
     "labels must be in 0..99, found 0..100"),
    (lambda path: path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})),
     "expected its b'fine_labels' to be 2 integers, one per image, found nothing"),
    # a pickle that would run a command when unpickled: refused by the same restricted reader as CIFAR-10's
    (lambda path: path.write_bytes(b"cposix\nsystem\n(S'true'\ntR."), "refused: it names posix.system"),
], ids=["not-a-pickle", "label-out-of-range", "no-fine-labels", "runs-a-command"])
def test_a_damaged_cifar100_file_is_named_in_one_line(compose_config, tmp_path, damage, message):
    root = write_cifar100(tmp_path / "data")
    damage(root / "cifar-100-python" / "train")
    error = one_line_error(lambda: load(compose_config, "data=cifar100", f"data.root={root}"))
    assert str(root / "cifar-100-python" / "train") in error and message in error


def test_cifar100_coarse_labels_out_of_range_and_a_damaged_meta_are_named(compose_config, tmp_path):
    root = write_cifar100(tmp_path / "data")
    test = root / "cifar-100-python" / "test"
    entry = pickle.loads(test.read_bytes())
    entry[b"coarse_labels"][3] = 20
    test.write_bytes(pickle.dumps(entry))
    error = one_line_error(lambda: load(compose_config, "data=cifar100", f"data.root={root}",
                                        "data.labels=coarse"))
    assert error == f"{test}: labels must be in 0..19, found 0..20; replace the file"
    (root / "cifar-100-python" / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"one", b"two"]}))
    error = one_line_error(lambda: load(compose_config, "data=cifar100", f"data.root={root}"))
    assert "meta: expected its b'fine_label_names' to be 100 class names, found a list of 2" in error


def test_a_cifar100_train_file_far_bigger_than_the_real_one_is_not_unpickled(compose_config, tmp_path):
    root = write_cifar100(tmp_path / "data")
    with open(root / "cifar-100-python" / "train", "r+b") as file:
        file.truncate(321 * 2**20)  # sparse: none of it on the disk; the real one is about 150 MB
    error = one_line_error(lambda: load(compose_config, "data=cifar100", f"data.root={root}"))
    assert "train holds 321 MB; a CIFAR-100 train file holds about 148 MB (50,000 images of 3x32x32)" in error


# SVHN


def test_svhn_reads_its_mat_files_upright_with_10_as_the_digit_0(compose_config, tmp_path):
    folder = write_svhn(tmp_path / "data" / "SVHN")
    data = load(compose_config, "data=svhn", f"data.root={tmp_path / 'data'}", "data.val_split=0")
    assert data.classes == list(string.digits) and (data.in_channels, data.image_size) == (3, (32, 32))
    assert data.train.images.shape == (60, 3, 32, 32) and data.test.images.shape == (30, 3, 32, 32)
    stored = scipy.io.loadmat(folder / "test_32x32.mat")["y"].ravel()
    assert 10 in stored and 0 not in stored
    assert data.test.labels.tolist() == [0 if label == 10 else int(label) for label in stored]
    assert torch.equal(data.test.images[0], ASYMMETRIC)


def test_svhn_in_torchvisions_layout_and_with_its_extra_images(compose_config, tmp_path):
    # torchvision's layout: the files in the data root itself, no SVHN/ folder
    root = write_svhn(tmp_path / "data", counts=(("train", 40), ("test", 20), ("extra", 30)))
    plain = load(compose_config, "data=svhn", f"data.root={root}", "data.val_split=0")
    extra = load(compose_config, "data=svhn", f"data.root={root}", "data.val_split=0", "data.svhn_extra=true")
    assert len(plain.train.labels) == 40 and len(extra.train.labels) == 70 and len(extra.test.labels) == 20
    assert torch.equal(extra.train.images[:40], plain.train.images)
    (root / "extra_32x32.mat").unlink()
    error = one_line_error(lambda: load(compose_config, "data=svhn", f"data.root={root}",
                                        "data.svhn_extra=true"))
    assert error.startswith("svhn: files not found: expected train_32x32.mat, test_32x32.mat, "
                            f"extra_32x32.mat in {root / 'SVHN'} or {root}; ")


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b"not a mat file" * 10), "is not a readable SVHN .mat file"),
    (lambda path: path.write_bytes(path.read_bytes()[:5000]), "is not a readable SVHN .mat file"),
    (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.full((4, 1), 11)}),
     "labels must be in 1..10, found 11..11"),
    (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.zeros((4, 1))}),
     "labels must be in 1..10, found 0..0"),
    (lambda path: scipy.io.savemat(path, {"X": np.zeros((4, 3, 32, 32), np.uint8), "y": np.ones((4, 1))}),
     "expected its 'X' to be 32 x 32 x 3 x N pixels of uint8, found an array of uint8 shaped (4, 3, 32, 32)"),
    (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))}),
     "expected its 'y' to be 4 whole-number labels, one per image, found an array of"),
    (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8)}),
     "expected its 'y' to be 4 whole-number labels, one per image, found nothing"),
], ids=["not-a-mat-file", "truncated", "label-11", "label-0", "images-as-NCHW", "3-labels-for-4",
        "no-labels"])
def test_a_damaged_svhn_file_is_named_in_one_line(compose_config, tmp_path, damage, message):
    write_svhn(tmp_path / "data" / "SVHN")
    path = tmp_path / "data" / "SVHN" / "train_32x32.mat"
    damage(path)
    error = one_line_error(lambda: load(compose_config, "data=svhn", f"data.root={tmp_path / 'data'}"))
    assert error.startswith(str(path)) and message in error and error.endswith("replace the file")


# STL-10


def test_stl10_reads_its_column_major_images_upright_with_labels_from_0(compose_config, tmp_path):
    root = write_stl10(tmp_path / "data")
    data = load(compose_config, "data=stl10", f"data.root={root}", "data.val_split=0")
    assert data.classes == [f"class {i}" for i in range(10)]
    assert (data.in_channels, data.image_size) == (3, (96, 96))
    assert data.train.images.shape == (30, 3, 96, 96) and data.test.images.shape == (20, 3, 96, 96)
    stored = np.fromfile(root / "stl10_binary" / "test_y.bin", dtype=np.uint8)
    assert stored.min() == 1 and stored.max() == 10
    assert data.test.labels.tolist() == (stored.astype(int) - 1).tolist()
    assert torch.equal(data.test.images[0], ASYMMETRIC.repeat(1, 3, 3))


def test_stl10_without_class_names_has_the_published_ones(compose_config, tmp_path):
    root = write_stl10(tmp_path / "data", names=False)
    data = load(compose_config, "data=stl10", f"data.root={root}", "data.val_split=0")
    assert data.classes == STL10_CLASSES


@pytest.mark.parametrize("damage, file, message", [
    (lambda folder: (folder / "train_X.bin").write_bytes((folder / "train_X.bin").read_bytes()[:-100]),
     "train_X.bin", "is truncated or damaged: 829,340 bytes is not a whole number of 3x96x96 images"),
    (lambda folder: (folder / "test_y.bin").write_bytes(bytes([1] * 19)),
     "test_y.bin", "holds 19 labels but test_X.bin holds 20 images"),
    (lambda folder: (folder / "test_y.bin").write_bytes(bytes([0] * 20)),
     "test_y.bin", "labels must be in 1..10, found 0..0"),
    (lambda folder: (folder / "class_names.txt").write_text("airplane\nbird\n"),
     "class_names.txt", "expected 10 class names, one a line, found 2"),
], ids=["truncated-images", "19-labels-for-20", "label-0", "2-class-names"])
def test_a_damaged_stl10_file_is_named_in_one_line(compose_config, tmp_path, damage, file, message):
    root = write_stl10(tmp_path / "data")
    damage(root / "stl10_binary")
    error = one_line_error(lambda: load(compose_config, "data=stl10", f"data.root={root}"))
    assert error.startswith(str(root / "stl10_binary" / file)) and message in error


# KMNIST and EMNIST


def test_kmnist_reads_mnist_named_files_from_its_torchvision_folder(compose_config, tmp_path):
    write_idx_dataset(tmp_path / "data" / "KMNIST" / "raw", train=100, test=50)
    data = load(compose_config, "data=kmnist", f"data.root={tmp_path / 'data'}", "data.val_split=0")
    assert data.classes == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    assert data.train.images.shape == (100, 1, 28, 28) and len(data.test.labels) == 50


def test_emnist_images_come_back_upright_from_nists_gzip_folder(compose_config, tmp_path):
    write_emnist(tmp_path / "data" / "EMNIST" / "raw" / "gzip")
    data = load(compose_config, "data=emnist", f"data.root={tmp_path / 'data'}", "data.val_split=0")
    assert len(data.classes) == 47 and data.classes[:11] == list("0123456789A")
    assert data.classes[-11:] == list("abdefghnqrt")  # the lower-case letters that look unlike their capitals
    assert data.train.images.shape == (94, 1, 28, 28) and (data.in_channels, data.image_size) == (1, (28, 28))
    assert torch.equal(data.test.images[0, 0], ASYMMETRIC[0, :28, :28])
    assert sorted(set(data.train.labels.tolist())) == list(range(47))


@pytest.mark.parametrize("split, classes, names", [
    ("letters", 26, list(string.ascii_lowercase)),
    ("byclass", 62, list(string.digits + string.ascii_uppercase + string.ascii_lowercase)),
    ("digits", 10, list(string.digits)),
])
def test_emnist_splits_name_their_classes_and_letters_count_from_1(compose_config, tmp_path, split, classes,
                                                                   names):
    first = 1 if split == "letters" else 0
    # extracted, in EMNIST/raw: where torchvision's download leaves them
    write_emnist(tmp_path / "data" / "EMNIST" / "raw", split, classes, first, gz=False, train=2 * classes,
                 test=classes)
    data = load(compose_config, "data=emnist", f"data.split={split}", f"data.root={tmp_path / 'data'}",
                "data.val_split=0")
    assert data.classes == names
    stored = read_idx(tmp_path / "data" / "EMNIST" / "raw" / f"emnist-{split}-test-labels-idx1-ubyte").long()
    assert int(stored.min()) == first and torch.equal(data.test.labels, stored - first)
    assert int(data.test.labels.max()) == classes - 1


def test_emnist_letters_label_0_in_the_file_is_refused(compose_config, tmp_path):
    folder = write_emnist(tmp_path / "data" / "EMNIST" / "raw" / "gzip", "letters", 26, first=1, train=52,
                          test=26)
    labels = folder / "emnist-letters-train-labels-idx1-ubyte.gz"
    write_idx(labels, torch.zeros(52, dtype=torch.uint8))
    error = one_line_error(lambda: load(compose_config, "data=emnist", "data.split=letters",
                                        f"data.root={tmp_path / 'data'}"))
    assert error == f"{labels}: labels must be in 1..26, found 0..0; replace the file"


def test_emnist_missing_files_name_the_split(compose_config, tmp_path):
    write_emnist(tmp_path / "data" / "EMNIST" / "raw" / "gzip")  # balanced only
    error = one_line_error(lambda: load(compose_config, "data=emnist", "data.split=digits",
                                        f"data.root={tmp_path / 'data'}"))
    assert error.startswith("emnist: files not found: expected emnist-digits-train-images-idx3-ubyte")


# the config alone: shapes, sizes and refusals


@pytest.mark.parametrize("overrides, shape, images", [
    (["data=cifar100"], (3, 32, 32, 100), 50_000),
    (["data=cifar100", "data.labels=coarse"], (3, 32, 32, 20), 50_000),
    (["data=svhn"], (3, 32, 32, 10), 73_257),
    (["data=svhn", "data.svhn_extra=true"], (3, 32, 32, 10), 604_388),
    (["data=stl10"], (3, 96, 96, 10), 5_000),
    (["data=kmnist"], (1, 28, 28, 10), 60_000),
    (["data=emnist"], (1, 28, 28, 47), 112_800),
    (["data=emnist", "data.split=letters"], (1, 28, 28, 26), 124_800),
    (["data=emnist", "data.split=byclass"], (1, 28, 28, 62), 697_932),
    (["data=emnist", "data.split=mnist"], (1, 28, 28, 10), 60_000),
])
def test_the_config_alone_knows_shape_classes_and_training_images(compose_config, overrides, shape, images):
    cfg = compose_config(*overrides)
    check_config(cfg)
    assert input_shape(cfg.data) == shape and training_images(cfg.data) == images


@pytest.mark.parametrize("override, message", [
    ("data=cifar100 data.labels=medium", "data.labels='medium' is not one of: fine, coarse"),
    ("data=emnist data.split=Letters",
     "data.split='Letters' is not one of: balanced, byclass, bymerge, letters, digits, mnist"),
    ("data=emnist data.split=[letters]", "data.split=['letters'] is not one of"),
    ("data=svhn data.svhn_extra=yes", "data.svhn_extra='yes' is not true or false"),
])
def test_bad_dataset_options_are_refused_in_one_line(compose_config, override, message):
    cfg = compose_config(*override.split())
    assert message in one_line_error(lambda: check_config(cfg))


# one short run of each


@pytest.mark.parametrize("dataset", ["cifar100", "svhn", "stl10", "kmnist", "emnist"])
def test_a_short_run_on_each_dataset(compose_config, tmp_path, dataset):
    root = tmp_path / "data"
    write = {"cifar100": lambda: write_cifar100(root, train=200),
             "svhn": lambda: write_svhn(root / "SVHN", counts=(("train", 120), ("test", 30))),
             "stl10": lambda: write_stl10(root, train=60),
             "kmnist": lambda: write_idx_dataset(root / "KMNIST" / "raw", train=120, test=30),
             "emnist": lambda: write_emnist(root / "EMNIST" / "raw" / "gzip", train=188)}
    write[dataset]()
    cfg = compose_config(f"data={dataset}", f"data.root={root}", "data.download=false", "data.val_split=0.2",
                         "epochs=1", "limit_batches=2", "batch_size=16", "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "finished" and math.isfinite(metrics["final_train_loss"])
    classes = load_checkpoint(tmp_path / "run" / "best.pt")["classes"]
    assert len(classes) == input_shape(cfg.data)[3]
