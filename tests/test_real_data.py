"""The real datasets: Fashion-MNIST from the Debian package, MNIST and CIFAR-10 from ../shared/data.

On a machine without them these tests are skipped, each saying how to get its data; in CI (the
CI variable set, as .ci/run does) a missing dataset is a failure, so CI never passes without them.
"""

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from conftest import FASHION_MNIST_SYSTEM, GET_FASHION_MNIST, GET_SHARED_DATA, REPO, SHARED_DATA, require_data

from cnnbench.data import build_data
from cnnbench.engine.train import train


@pytest.mark.slow
def test_lenet_learns_real_fashion_mnist_from_the_debian_package(compose_config, tmp_path):
    require_data(FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz", GET_FASHION_MNIST)
    # An empty data root: the files must be found in the package's folder, with no download.
    cfg = compose_config("data=fashion_mnist", f"data.root={tmp_path / 'empty'}", "data.download=false",
                         "data.train_limit=5000", "batch_size=64", "optimizer=adam", "epochs=1",
                         "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["final_val_acc"] > 0.6  # chance is 0.10; the full default run reaches 0.90


@pytest.mark.slow
def test_lenet_learns_real_mnist(compose_config, tmp_path):
    require_data(SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", GET_SHARED_DATA)
    cfg = compose_config("data=mnist", f"data.root={SHARED_DATA}", "data.download=false",
                         "data.train_limit=5000", "batch_size=64", "optimizer=adam", "epochs=1",
                         "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["final_val_acc"] > 0.7  # chance is 0.10


@pytest.mark.slow
def test_real_cifar10_loads_exactly_despite_its_md5s(compose_config):
    require_data(SHARED_DATA / "cifar-10-batches-py" / "data_batch_1", GET_SHARED_DATA)
    # data.val_split=0: the training batches whole, as they are on disk
    cfg = compose_config("data=cifar10", f"data.root={SHARED_DATA}", "data.download=false", "data.val_split=0")
    data = build_data(cfg.data, batch_size=256, seed=0, device=torch.device("cpu"))
    # sha256 of the decoded arrays in torchvision's NHWC layout, from ../shared/data/SOURCES.md
    expected = {"train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
                "test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04"}
    for split, loader in (("train", data.train), ("test", data.test)):
        pixels = loader.images.permute(0, 2, 3, 1).contiguous().numpy().tobytes()
        assert hashlib.sha256(pixels).hexdigest() == expected[split]
    assert data.train.labels.bincount().tolist() == [5000] * 10
    assert data.test.labels.bincount().tolist() == [1000] * 10
    # the default: 5,000 of the training images held out for validation, 500 of each class
    held = build_data(compose_config("data=cifar10", f"data.root={SHARED_DATA}", "data.download=false").data,
                      batch_size=256, seed=0, device=torch.device("cpu"))
    assert held.train.labels.bincount().tolist() == [4500] * 10
    assert held.val.labels.bincount().tolist() == [500] * 10
    assert hashlib.sha256(held.test.images.permute(0, 2, 3, 1).contiguous().numpy().tobytes()).hexdigest() \
        == expected["test"]


# ---------------------------------------------------------------- when the data is not there

@pytest.mark.parametrize("ci", ["", "1"])
def test_missing_data_skips_saying_how_to_get_it_unless_ci_is_set(tmp_path, monkeypatch, ci):
    nowhere = tmp_path / "no-such-folder" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome) as stopped:
        require_data(nowhere, GET_SHARED_DATA)
    assert str(stopped.value).startswith(f"{nowhere} is missing: put MNIST")
    assert "CNNBENCH_SHARED_DATA" in str(stopped.value)
    assert ("CI is set" in str(stopped.value)) == bool(ci)
    require_data(tmp_path, GET_SHARED_DATA)  # present: neither


@pytest.mark.slow
def test_the_real_data_tests_skip_without_their_data_and_fail_in_ci(tmp_path):
    # The tests themselves, as README's command runs them, with the shared data folder elsewhere.
    tests = [str(REPO / "tests" / "test_real_data.py"), str(REPO / "tests" / "test_bench.py")]
    chosen = "real_mnist or real_cifar10 or quick_benchmark"  # (Fashion-MNIST's folder is fixed)
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment["CNNBENCH_SHARED_DATA"] = str(tmp_path / "nowhere")
    command = [sys.executable, "-m", "pytest", *tests, "-k", chosen, "-p", "no:cacheprovider", "-rsf", "-q",
               "-n", "0"]  # in this process: its summary lines as README's command prints them
    skipped, failed = (subprocess.run(command, cwd=REPO, env={**environment, "CI": ci}, capture_output=True,
                                      text=True, timeout=300) for ci in ("", "1"))
    assert skipped.returncode == 0 and "3 skipped" in skipped.stdout, skipped.stdout[-3000:]
    reasons = [line for line in skipped.stdout.splitlines() if line.startswith("SKIPPED [")]
    assert sum(int(line.split("[")[1].split("]")[0]) for line in reasons) == 3  # (alike ones are merged)
    for line in reasons:
        assert f"{tmp_path / 'nowhere'}/" in line and "is missing: put MNIST" in line
        assert "CNNBENCH_SHARED_DATA" in line
    assert failed.returncode == 1 and "3 failed" in failed.stdout, failed.stdout[-3000:]
    assert failed.stdout.count("CI is set, and CI must provide it") >= 3
