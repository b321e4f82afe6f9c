"""Every option of every config group composes, instantiates and trains as a user would call it."""

import math
import subprocess
import sys
import sysconfig
import zipfile
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnbench.config.checks import check_config
from cnnbench.config.shapes import input_shape
from cnnbench.engine.build import build_optimizer

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
          for group in ("model", "data", "optimizer", "scheduler")}


def test_groups_hold_what_the_issue_lists():
    assert {"mnist", "fashion_mnist", "cifar10", "imagefolder", "fake"} <= set(GROUPS["data"])
    assert {"cifar100", "svhn", "stl10", "kmnist", "emnist"} <= set(GROUPS["data"])  # issue #26
    assert {"sgd", "adam", "adamw"} <= set(GROUPS["optimizer"])
    assert {"none", "step", "multistep", "cosine", "onecycle"} <= set(GROUPS["scheduler"])
    assert {"lenet", "mlp"} <= set(GROUPS["model"])


def test_defaults_are_lenet_on_fashion_mnist(compose_config, monkeypatch):
    monkeypatch.delenv("CNNBENCH_DATA", raising=False)
    cfg = compose_config()
    assert cfg.model._target_.endswith(".lenet") and cfg.data.name == "fashion_mnist"
    for key in ("seed", "epochs", "batch_size", "device", "label_smoothing", "grad_clip", "num_workers"):
        assert key in cfg
    assert cfg.device == "auto"
    # README's table of keys and their defaults
    readme_defaults = {
        "epochs": 10, "batch_size": 128, "seed": 0, "device": "auto", "label_smoothing": 0.0,
        "grad_clip": 0.0, "tta": False, "warmup_epochs": 0, "precision": "fp32", "channels_last": False,
        "compile": False, "early_stopping.patience": 0, "limit_batches": None, "threads": None,
        "num_workers": 2, "resume": False, "checkpoint.every_n_steps": 0, "on_nan": "stop",
        "data.root": "data", "data.loader": "memory", "data.resize": None, "data.train_limit": None,
        "data.augment.crop_padding": 0, "data.augment.hflip": False, "data.augment.color_jitter": 0.0,
        "data.permute_pixels": False, "data.permute_seed": 0,
        "finetune.freeze_epochs": 0, "finetune.backbone_lr_scale": 1.0,
        # the optimizer and scheduler README names: SGD, momentum 0.9, Nesterov, weight decay 5e-4; cosine
        "optimizer._target_": "torch.optim.SGD", "optimizer.momentum": 0.9, "optimizer.nesterov": True,
        "optimizer.weight_decay": 5e-4, "scheduler._target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
    }
    assert {key: OmegaConf.select(cfg, key) for key in readme_defaults} == readme_defaults
    monkeypatch.setenv("CNNBENCH_DATA", "/data/elsewhere")
    assert compose_config().data.root == "/data/elsewhere"
    # CIFAR-10: pad 4 + random crop, flip; image folders: flip, and unreadable files stop the run
    cifar = compose_config("data=cifar10").data.augment
    assert (cifar.crop_padding, cifar.hflip) == (4, True)
    folder = compose_config("data=imagefolder").data
    assert (folder.augment.hflip, folder.bad_images) == (True, "error")


@pytest.mark.parametrize("optimizer", GROUPS["optimizer"])
@pytest.mark.parametrize("scheduler", GROUPS["scheduler"])
@pytest.mark.parametrize("warmup", [0, 1])
def test_every_optimizer_and_scheduler_instantiate_and_step(compose_config, optimizer, scheduler, warmup):
    cfg = compose_config(f"optimizer={optimizer}", f"scheduler={scheduler}", "epochs=3",
                         f"warmup_epochs={warmup}")
    cfg.steps_per_epoch = 4
    opt, sched = build_optimizer(cfg, torch.nn.Linear(3, 1))
    assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    rates = []
    for _ in range(12):  # the whole run: 3 epochs x 4 steps
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert all(rate >= 0 for rate in rates)
    if scheduler == "cosine":  # decays to eta_min exactly at the last step
        assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    if warmup:
        assert rates[0] < rates[3]  # rising during the first epoch


def learning_rates(cfg, steps_per_epoch: int) -> list[float]:
    """The learning rate each optimizer step of the whole run uses, as the scheduler sets it."""
    cfg.steps_per_epoch = steps_per_epoch
    optimizer, scheduler = build_optimizer(cfg, torch.nn.Linear(3, 1))
    rates = []
    for _ in range(cfg.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_each_scheduler_follows_its_schedule(compose_config):
    # Each preset as its YAML file describes it, in epochs of 2 steps (schedulers step per batch).
    lr = 0.1
    assert learning_rates(compose_config("scheduler=none", f"optimizer.lr={lr}", "epochs=4"), 2) == [lr] * 8
    # step: x0.1 every 30 epochs
    step = learning_rates(compose_config("scheduler=step", f"optimizer.lr={lr}", "epochs=31"), 2)
    assert step[:60] == [lr] * 60 and step[60:] == pytest.approx([lr * 0.1] * 2)
    # multistep: x0.1 after epochs 5 and 8
    multistep = learning_rates(compose_config("scheduler=multistep", f"optimizer.lr={lr}", "epochs=10"), 2)
    assert multistep == pytest.approx([lr] * 10 + [lr * 0.1] * 6 + [lr * 0.01] * 4)
    # one-cycle: up to max_lr (the optimizer's lr) over the first quarter, then far below where it began
    cycle = learning_rates(compose_config("scheduler=onecycle", f"optimizer.lr={lr}", "epochs=10"), 2)
    peak = cycle.index(max(cycle))
    assert max(cycle) == pytest.approx(lr, rel=1e-3) and peak == round(0.25 * 20) - 1
    assert all(a < b for a, b in pairwise(cycle[:peak + 1])) and all(a > b for a, b in pairwise(cycle[peak:]))
    assert cycle[0] == pytest.approx(lr / 25) and cycle[-1] < lr / 25 / 100
    # cosine: from lr down a half cosine
    cosine = learning_rates(compose_config("scheduler=cosine", f"optimizer.lr={lr}", "epochs=5"), 2)
    assert cosine == pytest.approx([lr * (1 + math.cos(math.pi * step / 10)) / 2 for step in range(10)])
    # warmup: a straight line from lr / (its steps) up to lr over warmup_epochs, then the scheduler
    warm = learning_rates(compose_config("scheduler=none", f"optimizer.lr={lr}", "epochs=4",
                                         "warmup_epochs=2"), 2)
    assert warm == pytest.approx([lr * (1 / 4 + 3 / 4 * step / 4) for step in range(4)] + [lr] * 4)


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_config_builds(compose_config, model):
    cfg = compose_config(f"model={model}")
    net = instantiate(cfg.model, num_classes=10, in_channels=1, image_size=[28, 28], _convert_="all")
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# each (channels, height, width, classes) a data config gives the model, once: STL-10's 96 px, EMNIST's
# 28 px and 47 classes, CIFAR-100's 100... (input_shape reads only literal keys of the YAML file)
DATA_SHAPES = sorted({input_shape(OmegaConf.load(REPO / "conf" / "data" / f"{data}.yaml"))
                      for data in GROUPS["data"]})


@pytest.mark.slow  # seconds each; test_models.py runs every model at every size, with 5 classes
@pytest.mark.parametrize("shape", DATA_SHAPES, ids=[f"{c}x{h}x{w}-{k}-classes" for c, h, w, k in DATA_SHAPES])
def test_every_model_builds_for_every_dataset(shape):
    channels, height, width, classes = shape
    for model in GROUPS["model"]:
        # the meta device: tensors without memory, so only the shapes are worked out
        with torch.device("meta"):
            net = instantiate(OmegaConf.load(REPO / "conf" / "model" / f"{model}.yaml"), num_classes=classes,
                              in_channels=channels, image_size=[height, width], _convert_="all")
            out = net.eval()(torch.empty(2, channels, height, width))
        assert out.shape == (2, classes), model


def test_the_datasets_shapes_include_the_new_ones():
    assert {(3, 96, 96, 10), (1, 28, 28, 47), (3, 32, 32, 100), (1, 28, 28, 10), (3, 32, 32, 10)} \
        <= set(DATA_SHAPES)


@pytest.mark.parametrize("data", GROUPS["data"])
def test_every_data_config_composes_and_passes_checks(compose_config, data):
    overrides = ["data.root=/somewhere"] if data == "imagefolder" else []
    cfg = compose_config(f"data={data}", *overrides)
    check_config(cfg)
    assert cfg.data.name == data
    assert cfg.data.loader in ("memory", "torch")


def run_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed `cnnbench` command as a user would."""
    command = [sys.executable, "-m", "cnnbench", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_group_and_option(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group, options in GROUPS.items():
        assert f"{group}:" in result.stdout
        for option in options:
            assert option in result.stdout
    # each group's line names exactly its options, as whole names (lenet inside lenet5 does not count)
    listed = dict(line.split(": ", 1) for line in result.stdout.split("== Configuration groups ==")[1]
                  .split("== Config ==")[0].splitlines() if ": " in line)
    every_group = {path.name: sorted(p.stem for p in path.glob("*.yaml"))
                   for path in (REPO / "conf").iterdir() if path.is_dir() and list(path.glob("*.yaml"))}
    assert {group: sorted(line.split(", ")) for group, line in listed.items()} == every_group


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_from_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(REPO)], check=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("cnnbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for group, options in GROUPS.items():
        for option in options:
            assert f"cnnbench/conf/{group}/{option}.yaml" in names
    # Installed on its own: `python -S` skips site-packages' .pth files, so the editable
    # install's finder (which maps cnnbench.conf to this checkout) is out of the way, and the
    # dependencies come from site-packages named explicitly after the wheel's folder.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, timeout=300)
    environment = {"PYTHONPATH": f"{tmp_path / 'site'}:{sysconfig.get_paths()['purelib']}",
                   "PATH": "/usr/bin:/bin"}
    python = [sys.executable, "-S"]
    where = subprocess.run([*python, "-c", "import cnnbench.conf; print(cnnbench.conf.__file__)"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(tmp_path / "site")), where.stdout + where.stderr
    result = subprocess.run([*python, "-m", "cnnbench", "data=fake", "epochs=1", "hydra.run.dir=run"],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.slow
def test_config_dir_adds_a_users_own_group_option(tmp_path):
    (tmp_path / "mine" / "optimizer").mkdir(parents=True)
    (tmp_path / "mine" / "optimizer" / "slow_sgd.yaml").write_text(
        "_target_: torch.optim.SGD\n_partial_: true\nlr: 0.001\n")
    result = run_cli("--config-dir", str(tmp_path / "mine"), "optimizer=slow_sgd", "data=fake",
                     "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"lr": 0.001' in (tmp_path / "run" / "config.json").read_text()
