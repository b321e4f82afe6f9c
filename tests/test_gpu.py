"""On a CUDA GPU (issue #14): runs in every precision and layout, compiled, an exact resume with
deterministic=true, a CUDA checkpoint used by eval/predict/export here and on the CPU, NCCL with
two GPUs. Marked `gpu`: left out of the default run (pyproject addopts); `bash .ci/gpu` runs them
on a machine with a GPU, and without one each is skipped with that reason."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import progress
from test_faults import assert_same_run, inject

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.inference.export import export
from cnnbench.inference.predict import predict

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: run bash .ci/gpu on a machine with one")]

TINY = ["data=fake", "data.num_train=512", "data.num_val=129", "batch_size=64", "epochs=2", "device=cuda"]
# every random draw matters: dropout, per-image crops and flips, a cosine schedule, momentum
RUN = ["data=fake", "model=mlp", "model.hidden=[64]", "model.dropout=0.3", "data.augment.crop_padding=2",
       "data.augment.hflip=true", "batch_size=32", "epochs=3", "device=cuda", "deterministic=true"]


@pytest.mark.parametrize("options", [["precision=fp32"], ["precision=bf16"], ["precision=fp16"],
                                     ["precision=bf16", "channels_last=true", "model=resnet18"],
                                     ["compile=true"]], ids=lambda options: "-".join(options))
def test_a_short_run_on_cuda(compose_config, tmp_path, options):
    metrics = train(compose_config(*TINY, *options), tmp_path / "run")
    assert metrics["status"] == "finished" and metrics["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(record["train_loss"])) for record in metrics["history"])
    assert metrics["peak_gpu_memory_mb"] > 0 and metrics["history"][0]["warmup_s"] > 0


def test_deterministic_resume_on_cuda_equals_an_uninterrupted_run(tmp_path):
    from test_configs import run_cli

    straight = run_cli(*RUN, "hydra.run.dir=straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    stopped = inject("term", "train-batch:22", *RUN, "checkpoint.every_n_steps=4", "hydra.run.dir=run",
                     cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr
    resumed = run_cli(f"resume={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "run", tmp_path / "straight")


def test_a_cuda_checkpoint_is_used_here_and_on_the_cpu(compose_config, tmp_path):
    from PIL import Image

    train(compose_config(*TINY, "model=lenet"), tmp_path / "run")
    best = tmp_path / "run" / "best.pt"
    on_gpu = evaluate_checkpoint(best)
    on_cpu = evaluate_checkpoint(best, ["device=cpu"])
    assert on_gpu["accuracy"] == progress(load_checkpoint(best)).best_val_acc
    assert abs(on_cpu["accuracy"] - on_gpu["accuracy"]) <= 2 / on_gpu["images"]  # kernels round apart
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    rows_gpu, _ = predict(best, [tmp_path / "red.png"], topk=3, device="cuda")
    rows_cpu, _ = predict(best, [tmp_path / "red.png"], topk=3, device="cpu")
    assert rows_gpu[0]["top"][0]["class"] == rows_cpu[0]["top"][0]["class"]
    assert export(best, "torchscript")["matches"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs for NCCL")
def test_two_gpus_with_nccl_and_an_uneven_validation_set(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "cnnbench", *TINY, "device=auto", "log_every=1", "sync_bn=true", "model=lenet_bn",
               "hydra.run.dir=run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and "rank 1: best val acc" in result.stdout


def test_the_benchmark_runs_on_cuda(tmp_path):
    from conftest import SHARED_DATA

    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.bench", "--quick", "--device", "cuda",
                             "--case", "cifar10", "--data-root", str(SHARED_DATA)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lenet cifar10 fp32" in result.stdout
