"""What behaves differently on GPUs, checked where a CPU can check it (issue #14): jobs spread over
GPUs, fp32 outside autocast, a checkpoint from a bigger machine, random generators per process,
a confusion matrix without host syncs."""

import contextlib
import logging

import pytest
import torch
from conftest import progress

from cnnbench.config import resolvers
from cnnbench.engine.checkpoint import restore_rng
from cnnbench.engine.train import train
from cnnbench.engine.validation import evaluate
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.runtime.device import autocast, rng_state


@pytest.mark.parametrize("gpus, per_gpu, expected", [
    (3, 1, ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2"]),
    (3, 2, ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:2", "cuda:2"]),
    (0, 1, ["auto"] * 6),
])
def test_parallel_jobs_take_the_gpus_in_turn(monkeypatch, gpus, per_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert [resolvers._device_for_job(job, per_gpu) for job in range(6)] == expected


def test_the_joblib_preset_gives_each_job_a_device_and_a_share_of_the_cores(compose_config):
    cfg = compose_config("launcher=joblib")
    assert cfg.jobs_per_gpu == 1
    assert "device_for_job" in str(resolvers.OmegaConf.to_container(cfg)["device"])


def test_fp32_enters_no_autocast_and_mixed_precision_does():
    assert isinstance(autocast(torch.device("cpu"), "fp32"), contextlib.nullcontext)
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu")


def test_a_checkpoint_from_a_bigger_machine_is_evaluated_here_with_a_note(compose_config, tmp_path, capsys):
    cfg = compose_config("data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1",
                         "device=cpu")
    train(cfg, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    checkpoint["config"]["device"] = "cuda:3"  # the machine it trained on had four GPUs
    torch.save(checkpoint, tmp_path / "big.pt")
    result = evaluate_checkpoint(tmp_path / "big.pt", split="val")
    note = capsys.readouterr().err
    assert "trained on device=cuda:3, which this machine does not have; using device=auto" in note
    assert result["accuracy"] == progress(checkpoint).best_val_acc
    evaluate_checkpoint(tmp_path / "big.pt", ["device=cpu"])  # chosen here: no note
    assert "note" not in capsys.readouterr().err


def test_random_generators_come_back_per_process_and_a_different_count_is_said(tmp_path, caplog):
    state = rng_state()
    expected = torch.rand(4)
    restore_rng([state], tmp_path / "last.pt")  # one process saved, one process resumes
    assert torch.equal(torch.rand(4), expected)
    old_format = {**state, "cuda": []}  # earlier versions: one dict, every GPU's state in a list
    restore_rng(old_format, tmp_path / "last.pt")
    assert torch.equal(torch.rand(4), expected)
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        restore_rng([state, state], tmp_path / "last.pt")  # saved by two processes
    assert "was saved by 2 process(es), this run has 1" in caplog.text


def test_the_confusion_matrix_counts_each_true_and_predicted_pair():
    class Fixed(torch.nn.Module):  # predicts (label + shift) mod 3 from the image's value
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 3).float()

    predicted = torch.tensor([0, 1, 2, 2, 2, 0, 1, 1])
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 1])
    loader = [(predicted[i:i + 3].float().view(-1, 1, 1, 1), labels[i:i + 3]) for i in range(0, 8, 3)]
    result = evaluate(Fixed(), loader, torch.device("cpu"))
    expected = torch.zeros(3, 3, dtype=torch.long)
    for true, guess in zip(labels.tolist(), predicted.tolist(), strict=True):
        expected[true, guess] += 1
    assert result["confusion"] == expected.tolist() and result["acc"] == 5 / 8
