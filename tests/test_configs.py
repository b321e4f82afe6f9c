"""Every option of every config group composes, instantiates and trains as a user would call it."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from cnnbench.config import check_config
from cnnbench.build import build_optimizer

from conftest import REPO

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
          for group in ("model", "data", "optimizer", "scheduler")}


def test_groups_hold_what_the_issue_lists():
    assert {"mnist", "fashion_mnist", "cifar10", "imagefolder", "fake"} <= set(GROUPS["data"])
    assert {"sgd", "adam", "adamw"} <= set(GROUPS["optimizer"])
    assert {"none", "step", "multistep", "cosine", "onecycle"} <= set(GROUPS["scheduler"])
    assert {"lenet", "mlp"} <= set(GROUPS["model"])


def test_defaults_are_lenet_on_fashion_mnist(compose_config):
    cfg = compose_config()
    assert cfg.model._target_.endswith(".lenet") and cfg.data.name == "fashion_mnist"
    for key in ("seed", "epochs", "batch_size", "device", "label_smoothing", "grad_clip", "num_workers"):
        assert key in cfg
    assert cfg.device == "auto"


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


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_config_builds(compose_config, model):
    cfg = compose_config(f"model={model}")
    net = instantiate(cfg.model, num_classes=10, in_channels=1, image_size=[28, 28], _convert_="all")
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


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


def test_config_dir_adds_a_users_own_group_option(tmp_path):
    (tmp_path / "mine" / "optimizer").mkdir(parents=True)
    (tmp_path / "mine" / "optimizer" / "slow_sgd.yaml").write_text(
        "_target_: torch.optim.SGD\n_partial_: true\nlr: 0.001\n")
    result = run_cli("--config-dir", str(tmp_path / "mine"), "optimizer=slow_sgd", "data=fake",
                     "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"lr": 0.001' in (tmp_path / "run" / "config.json").read_text()
