"""Run folders and checkpoints of the previous release (0.1.0, commit a14cd55) still resume and
evaluate. tests/data/release-0.1.0-run is a real one: an MLP on fake data, stopped by SIGTERM in
epoch 2 (step 1 of 4), with the progress keys at the top level of its checkpoints, as that release
saved them; its metrics.json says "running"."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.inference.evaluate import evaluate_checkpoint
from conftest import write_idx_dataset

OLD_RUN = Path(__file__).parent / "data" / "release-0.1.0-run"


def cnnbench(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnbench", *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_a_run_of_the_previous_release_resumes_to_the_result_of_an_uninterrupted_run(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    assert "progress" not in load_checkpoint(old / "last.pt")  # the old layout
    resumed = cnnbench(f"resume={old}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "after epoch 1, step 1" in resumed.stdout
    # the same run from the start, with this release
    overrides = yaml.safe_load((OLD_RUN / ".hydra" / "overrides.yaml").read_text())
    straight = cnnbench(*overrides, "hydra.run.dir=straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    ours, theirs = (json.loads((folder / "metrics.json").read_text()) for folder in (old, tmp_path / "straight"))
    assert ours["status"] == "finished" and ours["epochs_done"] == 3
    # the old run trained its first epoch and a step on the machine that recorded it: on another CPU
    # (AVX2, AVX-512, AMX) sums round in another order, so losses and weights agree to float rounding
    # (a wrong shuffle, rate or dropout draw after the resume would be off by far more); what is counted
    # (accuracies over 64 training and 32 validation images, the rates) agrees exactly
    exact = ("train_acc", "val_acc", "val_acc_ema", "lr")
    assert [[r[k] for k in exact] for r in ours["history"]] == [[r[k] for k in exact] for r in theirs["history"]]
    for mine, reference in zip(ours["history"], theirs["history"], strict=True):
        assert [mine["train_loss"], mine["val_loss"]] == \
            pytest.approx([reference["train_loss"], reference["val_loss"]], rel=1e-5)
    for name in ("last.pt", "best.pt"):
        mine, reference = load_checkpoint(old / name), load_checkpoint(tmp_path / "straight" / name)
        assert all(torch.allclose(mine["model"][key], reference["model"][key], rtol=1e-5, atol=1e-6)
                   for key in reference["model"])
        assert "progress" in mine  # saved again in this release's layout


def test_a_checkpoint_of_the_previous_release_is_evaluated_as_it_recorded():
    recorded = json.loads((OLD_RUN / "metrics.json").read_text())
    result = evaluate_checkpoint(OLD_RUN / "best.pt", ["device=cpu"], weights="live", split="val")
    assert result["epoch"] == recorded["best_epoch"] == 1
    assert result["accuracy"] == recorded["best_val_acc"] == result["recorded_val_acc"]


OLD_MNIST_RUN = Path(__file__).parent / "data" / "release-0.1.0-mnist-run"


def test_an_mnist_run_of_the_previous_release_goes_on_validating_as_it_did(tmp_path):
    # tests/data/release-0.1.0-mnist-run: an MLP, 1 epoch of a small MNIST-format dataset (600 training
    # and 200 test images, as tests/conftest.py writes them), which validated on the test split
    write_idx_dataset(tmp_path / "data", train=600, test=200)
    old = tmp_path / "old"
    shutil.copytree(OLD_MNIST_RUN, old)
    resumed = cnnbench(f"resume={old}", "epochs=2", f"data.root={tmp_path / 'data'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "a run of an earlier release: it goes on as it was (data.val_split=null" in resumed.stdout
    metrics = json.loads((old / "metrics.json").read_text())
    assert metrics["protocol"] == "test" and metrics["split"]["counts"] == {"train": 600, "val": 200, "test": 200}
    # as the same run of this release with the 0.1 protocol (no validation split held out)
    overrides = [o for o in yaml.safe_load((OLD_MNIST_RUN / ".hydra" / "overrides.yaml").read_text())
                 if not o.startswith(("data.root", "epochs"))]
    straight = cnnbench(*overrides, "epochs=2", f"data.root={tmp_path / 'data'}", "data.val_split=null",
                        "hydra.run.dir=straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    theirs = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    # epoch 1 was trained on the machine that recorded it, and epoch 2 starts from its weights: another
    # CPU (AVX2, AVX-512, AMX) rounds sums in another order, so the losses agree to float rounding, and
    # the accuracies on the 200 images the old run validated on (its test split) and the rates exactly
    assert [[r[k] for k in ("val_acc", "lr")] for r in metrics["history"]] == \
        [[r[k] for k in ("val_acc", "lr")] for r in theirs["history"]]
    for ours, reference in zip(metrics["history"], theirs["history"], strict=True):
        assert [ours["train_loss"], ours["val_loss"]] == \
            pytest.approx([reference["train_loss"], reference["val_loss"]], rel=1e-5)
