"""torchrun with 2 CPU processes (gloo): one run folder, rank 0 writes, every rank agrees."""

import json
import re
import subprocess
import sys

import pytest
import torch

from cnnbench.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_two_process_gloo_run_shares_one_folder_and_one_result(tmp_path, idx_root):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cnnbench", "data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1",
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
    # Each rank trained on its own half of the 540 images left after the 60 held out for
    # validation: 270 each, 8 full batches of 32.
    history = metrics["history"]
    assert [record["train_images"] for record in history] == [2 * 8 * 32] * 2
    assert metrics["status"] == "finished" and metrics["best_val_acc"] > 0.3


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TINY = ["data=fake", "data.num_train=256", "batch_size=64", "epochs=1", "device=cpu", "model=lenet"]


def torchrun(*arguments: str, cwd, module: str = "cnnbench") -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, "-m", module, *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("num_val", [129, 1])
def test_uneven_and_empty_validation_shards_count_every_image_once(tmp_path, num_val):
    # 129 images: rank 0 gets 65 (two batches), rank 1 64 (one), and they compare notes every step
    # (log_every=1); 1 image: rank 1's shard is empty. Gloo aborted on both; NCCL would hang.
    # The test split, scored once at the end, is sharded the same way.
    result = torchrun(*TINY, f"data.num_val={num_val}", f"data.num_test={num_val}", "log_every=1",
                      "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reported = dict(re.findall(r"rank (\d): best val acc ([0-9.]+)", result.stdout))
    assert float(reported["0"]) == float(reported["1"]) == pytest.approx(metrics["best_val_acc"], abs=1e-6)
    # one process scoring the same weights on all the images, each once, finds the same accuracy
    from cnnbench.inference.evaluate import evaluate_checkpoint

    single = evaluate_checkpoint(tmp_path / "run" / "best.pt", ["device=cpu"], split="val")
    assert single["images"] == num_val and single["accuracy"] == pytest.approx(metrics["best_val_acc"])
    tested = evaluate_checkpoint(tmp_path / "run" / "best.pt", ["device=cpu"])
    assert tested["images"] == num_val and tested["accuracy"] == pytest.approx(metrics["test_acc"])


SCRIPT = """
import sys, torch
from hydra import compose, initialize_config_module
import cnnbench
from cnnbench.runtime import distributed
from cnnbench.engine.build import build_run
with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[1:])
run = build_run(cfg)
weights = next(iter(run.model.parameters())).detach().flatten()[:3].tolist()
# a file per process: their prints to one pipe can run into each other
with open(f"rank{distributed.rank()}.txt", "w") as file:
    file.write(f"weights {weights} draws {torch.rand(3).tolist()}")
distributed.stop()
"""


def test_every_process_draws_its_own_random_numbers_reproducibly(tmp_path):
    (tmp_path / "draw.py").write_text(SCRIPT)
    command = [*TORCHRUN, str(tmp_path / "draw.py"), *TINY]
    runs = []
    for _ in range(2):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append({rank: (tmp_path / f"rank{rank}.txt").read_text() for rank in ("0", "1")})
    first, second = runs
    assert first == second  # reproducible for the seed
    weights = {rank: line.split(" draws ")[0] for rank, line in first.items()}
    draws = {rank: line.split(" draws ")[1] for rank, line in first.items()}
    assert weights["0"] == weights["1"]  # the same initial model on every process
    assert draws["0"] != draws["1"]  # but each its own dropout masks and random draws


def test_a_run_resumed_on_another_number_of_processes_goes_on_with_a_note(tmp_path):
    two = torchrun(*TINY, "data.num_val=64", "model=mlp", "model.dropout=0.3", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "cnnbench", f"resume={tmp_path / 'run'}", "epochs=2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and "Traceback" not in one.stderr, one.stderr[-3000:]
    assert "was saved by 2 process(es), this run has 1" in one.stdout + one.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_done"] == 2


# 512 images of batch 32: 8 steps an epoch each for 2 processes, 16 for one; limit_batches=6 gives
# both 6, so a checkpoint saved mid-epoch by one fits the other (log_every=2: the processes compare
# notes after steps 0, 2, 4, so a signal in step 1 or 2 stops both after step 2: 3 steps saved).
MID_EPOCH = ["data=fake", "data.num_train=512", "data.num_val=64", "batch_size=32", "epochs=2",
             "limit_batches=6", "log_every=2", "device=cpu", "model=mlp", "model.hidden=[32]"]


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_mid_epoch_checkpoint_resumes_on_another_number_of_processes_counting_every_image_once(
        tmp_path, before, after):
    from test_faults import INJECT

    # stopped by SIGTERM in epoch 1, 3 steps in: 3 x 32 images per process
    single = [sys.executable, str(INJECT), "term", "train-batch:4"]
    stop = [*TORCHRUN, str(INJECT), "term", "train-batch:3"] if before == 2 else single
    stopped = subprocess.run([*stop, *MID_EPOCH, "hydra.run.dir=run"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert "SIGTERM: stopped at epoch 1, step 3 of 6" in stopped.stderr, stopped.stderr[-3000:]
    resume = [*TORCHRUN, "-m", "cnnbench"] if after == 2 else [sys.executable, "-m", "cnnbench"]
    resumed = subprocess.run([*resume, f"resume={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert f"was saved by {before} process(es), this run has {after}" in resumed.stdout + resumed.stderr
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    # epoch 1: the 3 steps saved by every process before, the other 3 by every process after
    assert [record["train_images"] for record in history] == [3 * 32 * before + 3 * 32 * after,
                                                              6 * 32 * after]


def test_a_mid_epoch_checkpoint_refuses_a_process_count_that_changes_the_epoch_length(tmp_path):
    from test_cli import assert_one_line_error
    from test_faults import INJECT

    # without limit_batches: 8 steps an epoch for each of 2 processes, 16 for one
    whole = [argument for argument in MID_EPOCH if not argument.startswith("limit_batches=")]
    stopped = subprocess.run([*TORCHRUN, str(INJECT), "term", "train-batch:3", *whole, "hydra.run.dir=run"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "SIGTERM: stopped at epoch 1, step 3 of 8" in stopped.stderr, stopped.stderr[-3000:]
    resumed = subprocess.run([sys.executable, "-m", "cnnbench", f"resume={tmp_path / 'run'}"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert_one_line_error(resumed, "saved 3 steps into an epoch of 8 steps; this run has 16 steps per epoch",
                          "resume it on as many processes as saved it")
    assert resumed.returncode == 2


def test_unreadable_images_skipped_under_torchrun(tmp_path):
    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=12)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    common = ["data=imagefolder", f"data.root={root}", "data.image_size=16", "data.bad_images=skip",
              "batch_size=4", "epochs=1", "device=cpu", "model=lenet", "num_workers=0"]
    result = torchrun(*common, "hydra.run.dir=run", cwd=tmp_path)  # the cache leaves it out first
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_images"] == [
        str(root / "cat" / "broken.png")]
    refused = torchrun(*common, "data.loader=torch", "hydra.run.dir=run2", cwd=tmp_path)
    assert refused.returncode != 0 and "data.bad_images=skip with data.loader=torch cannot train under " \
        "torchrun" in refused.stderr


def test_the_weight_average_is_the_same_on_every_process(tmp_path):
    # each process averages the same all-reduced weights; BatchNorm statistics come from rank 0
    result = torchrun(*TINY, "epochs=2", "data.num_val=129", "model=lenet_bn", "ema.decay=0.9",
                      "ema.best_by=ema", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    from cnnbench.inference.evaluate import evaluate_checkpoint

    single = evaluate_checkpoint(tmp_path / "run" / "best.pt", ["device=cpu"], split="val")  # rank 0's average
    best = next(r for r in metrics["history"] if r["epoch"] == metrics["best_epoch"])
    assert single["weights"] == "ema" and single["accuracy"] == pytest.approx(best["val_acc_ema"])


def test_two_processes_accumulating_two_batches_of_16_train_as_with_batches_of_32(tmp_path):
    # each process's shard is the same whatever the batch size; with accumulation its gradients
    # are all-reduced once per optimizer step (no_sync before): the same sums, the same weights
    mlp = ["data=fake", "data.num_train=256", "data.in_channels=1", "data.image_size=8", "data.mean=[0.5]",
           "data.std=[0.25]", "model=mlp", "model.hidden=[16]", "epochs=1", "device=cpu"]
    for name, batches in (("k2", ["batch_size=16", "accumulate_grad_batches=2"]), ("b32", ["batch_size=32"])):
        result = torchrun(*mlp, *batches, f"hydra.run.dir={name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    accumulated, whole = (load_checkpoint(tmp_path / name / "last.pt") for name in ("k2", "b32"))
    # 128 images a process: 4 optimizer steps, of 2 batches of 16 or 1 of 32
    assert accumulated["scheduler"]["last_epoch"] == whole["scheduler"]["last_epoch"] == 4
    assert all(torch.allclose(accumulated["model"][key], whole["model"][key], rtol=1e-5, atol=1e-6)
               for key in whole["model"])
