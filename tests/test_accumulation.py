"""Gradient accumulation (accumulate_grad_batches=k): the optimizer steps once every k batches, on
their summed gradients, and everything that counts steps (schedulers, the weight average,
mid-epoch checkpoints) counts optimizer steps."""

from pathlib import Path

import pytest
import torch
from conftest import SMALL_RUN, progress
from fault_injection import faults_at

from cnnbench.config.checks import check_config
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.resume import refuse_changes
from cnnbench.engine.train import group_size, train
from cnnbench.errors import CnnbenchError, Interrupted

# 256 training images of 8x8, an MLP without BatchNorm or dropout, SGD with Nesterov momentum, a
# cosine schedule and a weight average: 2 epochs
SMALL = [*SMALL_RUN, "ema.decay=0.9"]


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name)["model"]


def test_four_batches_of_8_step_as_one_batch_of_32(compose_config, tmp_path):
    accumulated = train(compose_config(*SMALL, "batch_size=8", "accumulate_grad_batches=4"), tmp_path / "k4")
    whole = train(compose_config(*SMALL, "batch_size=32"), tmp_path / "b32")
    # the same images in the same order (the shuffle does not depend on the batch size), the same
    # learning rate at every optimizer step: 8 of them an epoch in both
    for name in ("k4", "b32"):
        assert load_checkpoint(tmp_path / name / "last.pt")["scheduler"]["last_epoch"] == 2 * 8
    assert [r["lr"] for r in accumulated["history"]] == [r["lr"] for r in whole["history"]]
    assert [r["train_loss"] for r in accumulated["history"]] == \
        pytest.approx([r["train_loss"] for r in whole["history"]], rel=1e-5)
    assert [r["val_acc_ema"] for r in accumulated["history"]] == [r["val_acc_ema"] for r in whole["history"]]
    mine_last, theirs = weights(tmp_path / "k4"), weights(tmp_path / "b32")
    assert all(torch.allclose(mine_last[key], theirs[key], rtol=1e-5, atol=1e-6) for key in theirs)
    # the weight average takes one update per optimizer step
    mine, theirs = (load_checkpoint(tmp_path / name / "last.pt")["ema"] for name in ("k4", "b32"))
    assert mine["updates"] == theirs["updates"] == 2 * 8
    assert all(torch.allclose(mine["model"][key], theirs["model"][key], rtol=1e-5, atol=1e-6)
               for key in theirs["model"])
    # whereas batches of 8 without accumulation step 32 times an epoch, and end elsewhere
    train(compose_config(*SMALL, "batch_size=8"), tmp_path / "b8")
    assert load_checkpoint(tmp_path / "b8" / "last.pt")["scheduler"]["last_epoch"] == 2 * 32
    assert not torch.allclose(weights(tmp_path / "b8")["1.weight"], mine_last["1.weight"],
                              atol=1e-3)


def test_the_last_group_of_an_epoch_sums_the_batches_it_has():
    # 10 batches in groups of 4: 4, 4, then the last 2 (each of those two weighs a half, not a quarter)
    assert [group_size(step, 4, 10) for step in range(10)] == [4] * 8 + [2] * 2
    assert [group_size(step, 1, 3) for step in range(3)] == [1, 1, 1]


def test_a_run_stopped_inside_a_group_saves_at_the_groups_end_and_resumes_exactly(compose_config, tmp_path):
    # dropout and per-image crops and flips draw at random: the resume must replay them exactly
    overrides = [*SMALL, "model.dropout=0.3", "data.augment.crop_padding=1", "data.augment.hflip=true",
                 "batch_size=16", "accumulate_grad_batches=3"]  # 16 batches an epoch: 6 optimizer steps
    uninterrupted = train(compose_config(*overrides), tmp_path / "straight")
    # batch 1 is the TensorBoard sample, 2-17 epoch 1: the 22nd is epoch 2's 5th (step 4), in the
    # group of steps 3-5, which ends before the signal is acted on
    with faults_at("term", "train-batch:22"), pytest.raises(Interrupted):
        train(compose_config(*overrides), tmp_path / "run")
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (saved["epoch"], progress(saved).step) == (1, 6)
    assert saved["scheduler"]["last_epoch"] == 6 + 2  # epoch 1's 6 optimizer steps, then 2
    resumed = train(compose_config(*overrides), tmp_path / "run", resume_from=True)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_ema", "lr")
    assert [[r[k] for k in keys] for r in resumed["history"]] == \
        [[r[k] for k in keys] for r in uninterrupted["history"]]
    mine, theirs = weights(tmp_path / "run"), weights(tmp_path / "straight")
    assert all(torch.equal(mine[key], theirs[key]) for key in theirs)


def test_mid_epoch_checkpoints_count_optimizer_steps(compose_config, tmp_path):
    # every 2 optimizer steps = every 6 batches; stopped at the 10th batch of epoch 1 (step 9):
    # the checkpoint of 2 optimizer steps (6 batches) is the last one on disk
    overrides = [*SMALL, "batch_size=16", "accumulate_grad_batches=3", "checkpoint.every_n_steps=2"]
    with faults_at("error", "train-batch:11"), pytest.raises(Exception, match="injected failure"):
        train(compose_config(*overrides), tmp_path / "run")
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (saved["epoch"], progress(saved).step, saved["scheduler"]["last_epoch"]) == (0, 6, 2)


def test_accumulate_grad_batches_is_checked_and_cannot_change_on_resume(compose_config, tmp_path):
    refused = r"^accumulate_grad_batches=0 is out of range: must be an integer >= 1"
    with pytest.raises(CnnbenchError, match=refused):
        check_config(compose_config(*SMALL, "accumulate_grad_batches=0"))
    saved = {"accumulate_grad_batches": 1, "epochs": 2}
    with pytest.raises(CnnbenchError, match=r"cannot change what the run trains: accumulate_grad_batches=4 "
                                            r"\(the run has 1\)"):
        refuse_changes(saved, compose_config(*SMALL, "accumulate_grad_batches=4"), tmp_path, 1)
