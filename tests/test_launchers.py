"""Launcher and search presets: joblib runs jobs side by side, Optuna searches, SLURM composes."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_module

from cnnbench.cli.arguments import CommandLine, missing_plugin
from cnnbench.cli.train import main as cnnbench_main

TINY = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1"]


def cnnbench(*arguments: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnbench", *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_with_a_share_of_the_cores_each(tmp_path):
    result = cnnbench("-m", "launcher=joblib", "model=lenet,mlp", *TINY, "hydra.sweep.dir=sweep",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs == ["lenet_fake_batch_size=32_data.num_train=64_data.num_val=32_epochs=1_seed=0",
                    "mlp_fake_batch_size=32_data.num_train=64_data.num_val=32_epochs=1_seed=0"]
    cores = len(os.sched_getaffinity(0))
    for run in runs:
        assert json.loads((tmp_path / "sweep" / run / "metrics.json").read_text())["status"] == "finished"
        config = json.loads((tmp_path / "sweep" / run / "config.json").read_text())
        assert config["threads"] == max(1, cores // 2)
    assert (tmp_path / "sweep" / "leaderboard.md").is_file()
    # counted from what the worker processes noted, not from this process's own (empty) list
    assert "2 runs: 2 trained, 0 resumed, 0 skipped, 0 failed" in result.stdout
    assert not (tmp_path / "sweep" / ".jobs").exists()  # the journal goes when the sweep ends


@pytest.mark.parametrize("launcher", [[], pytest.param(["launcher=joblib"], marks=pytest.mark.slow)],
                         ids=["basic", "joblib"])
def test_a_failed_run_is_counted_and_exits_1_whatever_the_launcher(tmp_path, launcher):
    result = cnnbench("-m", *launcher, "model=lenet", "optimizer.lr=0.1,-1", *TINY, "hydra.sweep.dir=sweep",
                      cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "2 runs: 1 trained, 0 resumed, 0 skipped, 1 failed\n" in result.stdout
    assert "cnnbench: error: 1 of 2 runs failed: sweep/lenet_fake_" in result.stderr


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    searched = [a for a in TINY if not a.startswith("batch_size")]  # a fixed value is not searched
    result = cnnbench("hparams_search=optuna", "hydra.sweeper.n_trials=3", *searched,
                      "hydra.sweep.dir=search", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = [p for p in (tmp_path / "search").iterdir() if p.is_dir()]
    assert len(runs) == 3
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    accuracies = [json.loads((run / "metrics.json").read_text())["best_val_acc"] for run in runs]
    assert best["best_value"] == max(accuracies)
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "batch_size"}


def test_slurm_preset_composes():
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.num_workers == 6


def test_a_missing_plugin_is_named_with_the_install_command(tmp_path, monkeypatch, capsys):
    missing = missing_plugin(CommandLine.read(["model=lenet", "launcher=joblib"]), installed=lambda module: False)
    assert missing == "launcher=joblib"
    assert missing_plugin(CommandLine.read(["launcher=joblib"]), installed=lambda module: True) is None
    assert missing_plugin(CommandLine.read(["model=lenet"]), installed=lambda module: False) is None
    # What the user sees, through the command's own entry point, as if the sweep extra were not
    # installed: Python finds none of the Hydra plugin modules.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name.startswith(
        "hydra_plugins.") else find_spec(name, *args))
    monkeypatch.chdir(tmp_path)
    for preset in ("launcher=joblib", "launcher=slurm", "hparams_search=optuna"):
        monkeypatch.setattr(sys, "argv", ["cnnbench", "-m", "model=lenet,mlp", preset, "data=fake"])
        with pytest.raises(SystemExit) as exit_info:
            cnnbench_main()
        assert exit_info.value.code == 2
        out, err = capsys.readouterr()
        assert err == f"cnnbench: error: {preset} needs a Hydra plugin: pip install 'cnnbench[sweep]'\n"
    assert list(tmp_path.iterdir()) == []  # refused before anything ran
