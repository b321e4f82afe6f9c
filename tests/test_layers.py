"""The house keeps its plan: the packages import only downward (pyproject's import-linter contract:
commands above sweeps and the leaderboard, above one run, above data and models, above the machine),
no modules import each other in a circle, and one list says which keys are not what a run trains."""

import shutil
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from cnnbench.config.keys import RUNTIME_KEYS

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contract_holds():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_a_new_upward_import_breaks_the_contract(tmp_path):
    # the contract can fail: a copy of the package where the data layer imports the training loop
    copy = tmp_path / "cnnbench"
    shutil.copytree(REPO / "cnnbench", copy, ignore=shutil.ignore_patterns("__pycache__"))
    images = copy / "data" / "images.py"
    images.write_text(images.read_text() + "\nfrom cnnbench.engine import train  # noqa\n")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--config", str(REPO / "pyproject.toml")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "cnnbench.data.images -> cnnbench.engine.train" in result.stdout


def test_sweep_folder_names_leave_out_the_one_list_of_runtime_keys():
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == ["model", "data", "seed", *RUNTIME_KEYS]
