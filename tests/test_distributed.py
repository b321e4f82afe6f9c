"""torchrun with 2 CPU processes (gloo): one run folder, rank 0 writes, every rank agrees."""

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_two_process_gloo_run_shares_one_folder_and_one_result(tmp_path, idx_root):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cnnbench", "data=mnist", f"data.root={idx_root}", "data.download=false",
               "epochs=2", "batch_size=32", "optimizer=adam"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((tmp_path / "outputs").glob("*/*"))
    assert len(folders) == 1 and folders[0].name.startswith("ddp-")
    run = folders[0]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # rank 0's scalars and its hparams
    metrics = json.loads((run / "metrics.json").read_text())
    reported = dict(re.findall(r"rank (\d): best val acc ([0-9.]+)", result.stdout))
    assert set(reported) == {"0", "1"}
    assert float(reported["0"]) == float(reported["1"]) == pytest.approx(metrics["best_val_acc"], abs=1e-6)
    # Each rank trained on its own half of the 600 images: 300 each, 9 full batches of 32.
    history = metrics["history"]
    assert [record["train_images"] for record in history] == [2 * 9 * 32] * 2
    assert metrics["status"] == "finished" and metrics["best_val_acc"] > 0.3
