"""`cnnbench-bench --quick` runs every case end to end (speed is not asserted: machines are noisy)."""

import subprocess
import sys

import pytest
from conftest import FASHION_MNIST_SYSTEM, GET_FASHION_MNIST, GET_SHARED_DATA, SHARED_DATA, require_data


@pytest.mark.slow
def test_quick_benchmark_prints_a_row_per_case(tmp_path):
    require_data(SHARED_DATA / "cifar-10-batches-py" / "data_batch_1", GET_SHARED_DATA)
    # (Fashion-MNIST comes from the Debian package's folder: the data root below holds CIFAR-10 only)
    require_data(FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz", GET_FASHION_MNIST)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-batches-py").symlink_to(SHARED_DATA / "cifar-10-batches-py")
    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.bench", "--quick", "--data-root",
                             str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("lenet ")]
    assert [" ".join(row[:3]) for row in rows] == [
        "lenet fashion_mnist fp32", "lenet fashion_mnist best", "lenet cifar10 fp32", "lenet cifar10 best",
        "lenet cifar10 none", "lenet cifar10 randaugment", "lenet cifar10 trivialaug", "lenet cifar10 autoaugment"]
    for row in rows:
        a, b, c, a_over_b, c_over_a = (float(x.replace(",", "")) for x in row[3:8])
        assert min(a, b, c) > 0
        # The speeds are printed rounded to whole images/s and the ratios to 2 decimals, from the
        # unrounded speeds: a printed ratio must lie in the range the rounded speeds allow. A
        # relative bound: at a few hundred images/s (a busy machine) the rounding of a and b alone
        # moves a/b by more than any absolute tolerance fit for fast machines.
        assert within_rounding(a_over_b, a, b) and within_rounding(c_over_a, c, a), row
        assert all(0 <= float(acc) <= 1 for acc in row[8:10])


def within_rounding(ratio: float, numerator: float, denominator: float) -> bool:
    """Whether `ratio`, printed to 2 decimals, can be numerator/denominator for the speeds that
    print as these whole numbers (each within 0.5 of its printed value)."""
    low = (numerator - 0.5) / (denominator + 0.5)
    high = (numerator + 0.5) / (denominator - 0.5)
    return low - 0.005 - 1e-9 <= ratio <= high + 0.005 + 1e-9


def test_the_ratio_check_allows_rounding_and_nothing_more():
    # 312 / 100 = 3.12; with both speeds rounded, anything from 311.5/100.5 to 312.5/99.5 is possible
    assert within_rounding(3.12, 312, 100) and within_rounding(3.10, 312, 100)  # 3.0995 rounds to 3.10
    assert within_rounding(3.14, 312, 100)  # 3.1407
    assert not within_rounding(3.09, 312, 100) and not within_rounding(3.15, 312, 100)
    assert not within_rounding(3.2, 9_821, 3_095)  # fast machines: as tight as 0.01 absolute was


@pytest.mark.slow
def test_quick_process_benchmark_prints_every_measure(tmp_path):
    require_data(SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", GET_SHARED_DATA)
    require_data(FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz", GET_FASHION_MNIST)
    (tmp_path / "data" / "MNIST").mkdir(parents=True)
    (tmp_path / "data" / "MNIST" / "raw").symlink_to(SHARED_DATA / "MNIST" / "raw")
    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.bench", "--process", "--quick", "--data-root",
                             str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("(a) start-up", "import torch + one SGD step (floor)", "cnnbench epochs=1 limit_batches=1",
                 "(b) sweep cnnbench -m model=lenet,mlp,small_cnn data=mnist epochs=1 seed=0,1",
                 "(6 runs)", "(c) allocator", "keep_freed_memory=true", "keep_freed_memory=false",
                 "(d) 1 epochs of LeNet on Fashion-MNIST", "textbook loop"):
        assert line in out, line
    startup = next(line for line in out.splitlines() if "limit_batches=1" in line).split()
    run_s, torch_s = float(startup[3]), float(out.split("import torch'")[1].split()[0])
    assert run_s > torch_s  # a run imports torch and more
    assert float(startup[5].rstrip("x")) == pytest.approx(run_s / torch_s, rel=0.01)  # their ratio
