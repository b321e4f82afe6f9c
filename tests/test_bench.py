"""`cnnbench-bench --quick` runs every case end to end (speed is not asserted: machines are noisy)."""

import subprocess
import sys

import pytest

from conftest import SHARED_DATA
from test_real_data import require

pytestmark = pytest.mark.slow


def test_quick_benchmark_prints_a_row_per_case(tmp_path):
    require(SHARED_DATA / "cifar-10-batches-py" / "data_batch_1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-batches-py").symlink_to(SHARED_DATA / "cifar-10-batches-py")
    result = subprocess.run([sys.executable, "-m", "cnnbench.bench", "--quick", "--data-root",
                             str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("lenet ")]
    assert [" ".join(row[:3]) for row in rows] == [
        "lenet fashion_mnist fp32", "lenet fashion_mnist best", "lenet cifar10 fp32", "lenet cifar10 best"]
    for row in rows:
        a, b, c, a_over_b, c_over_a = (float(x.replace(",", "")) for x in row[3:8])
        assert min(a, b, c) > 0
        assert a_over_b == pytest.approx(a / b, abs=0.01) and c_over_a == pytest.approx(c / a, abs=0.01)
        assert all(0 <= float(acc) <= 1 for acc in row[8:10])
