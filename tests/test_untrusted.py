"""Files from others are data (issue #18): every route from a checkpoint, a run folder or a sweep
folder to running code is closed, and each refusal is one line naming the file and the key.

Each payload would create a marker file if its code ran; the marker must never appear.
"""

import csv
import json
import os
import pickle
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import write_cifar10
from test_cli import assert_one_line_error
from test_configs import run_cli
from test_use import assert_one_line_error as assert_one_line_tool_error
from test_use import call_tool, run_tool  # noqa: F401  (call_tool is a fixture)

from cnnbench.cli import report
from cnnbench.cli.arguments import CommandLine, resume_arguments
from cnnbench.config.trust import check_saved_overrides
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.inference.checkpoints import open_checkpoint
from cnnbench.models import registry

TINY = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1", "device=cpu"]


class Payload:
    """Unpickling this runs a shell command: what a file shipped beside a checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def side_pickle(folder: Path) -> tuple[Path, Path]:
    """An ordinary malicious pickle in `folder`, and the marker file its code would create."""
    marker = folder / "payload-ran"
    with open(folder / "side.pkl", "wb") as file:
        pickle.dump(Payload(marker), file)
    return folder / "side.pkl", marker


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compose_config):
    """A one-epoch LeNet run on fake data: its folder and best.pt."""
    base = tmp_path_factory.mktemp("untrusted")
    cfg = compose_config(*TINY)
    train(cfg, base / "run")
    return SimpleNamespace(run=base / "run", best=base / "run" / "best.pt")


def doctored(trained, folder: Path, change) -> Path:
    """A copy of the trained best.pt whose stored config `change(config)` has edited."""
    checkpoint = load_checkpoint(trained.best)
    change(checkpoint["config"])
    torch.save(checkpoint, folder / "best.pt")
    return folder / "best.pt"


# ---------------------------------------------------------------- checkpoints

def test_the_reported_payload_never_runs_in_cnnbench_eval(trained, tmp_path):
    # The reproduction: a nested _target_ that unpickles a file shipped beside the checkpoint.
    side, marker = side_pickle(tmp_path)
    payload = {"_target_": "builtins.dict",
               "payload": {"_target_": "torch.load", "f": str(side), "weights_only": False}}
    doctored(trained, tmp_path, lambda config: config.__setitem__("model", payload))
    result = run_tool("evaluate", "ckpt=best.pt", cwd=tmp_path)  # a real process, as a user meets it
    assert_one_line_tool_error(result, "cnnbench-eval", "best.pt", "model.payload._target_ is refused")
    assert not marker.exists()


@pytest.mark.parametrize("model, key", [
    ({"_target_": "torch.load", "f": "side.pkl", "weights_only": False},
     "model._target_=torch.load is refused"),
    ({"_target_": "cnnbench.models.lenet.lenet",
      "extra": {"_target_": "torch.load", "f": "side.pkl", "weights_only": False}}, "model.extra._target_"),
    ({"_target_": "cnnbench.models.mlp.mlp", "hidden": [{"_target_": "torch.load", "f": "side.pkl"}]},
     "model.hidden[0]._target_"),
    ({"_target_": "cnnbench.models.lenet.lenet", "_args_": ["side.pkl"]}, "model._args_ is refused"),
    ({"_target_": "cnnbench.models.mlp.mlp", "dropout": "${oc.decode:'{_target_: torch.load}'}"},
     'model.dropout="${oc.decode'),
])
@pytest.mark.parametrize("tool", ["evaluate", "predict", "export"])
def test_a_checkpoint_model_config_that_names_code_is_refused_by_every_tool(
        trained, tmp_path, call_tool, model, key, tool):  # noqa: F811
    side, marker = side_pickle(tmp_path)
    model = json.loads(json.dumps(model).replace("side.pkl", str(side)))
    doctored(trained, tmp_path, lambda config: config.__setitem__("model", model))
    arguments = {"evaluate": [], "predict": ["inputs=best.pt"], "export": ["format=torchscript"]}[tool]
    result = call_tool(tool, "ckpt=best.pt", *arguments)
    names = {"evaluate": "cnnbench-eval", "predict": "cnnbench-predict", "export": "cnnbench-export"}
    assert_one_line_tool_error(result, names[tool], "best.pt", key)
    assert not marker.exists()


def test_a_target_elsewhere_in_a_checkpoint_config_is_refused(trained, tmp_path):
    side, marker = side_pickle(tmp_path)
    path = doctored(trained, tmp_path, lambda config: config["data"].__setitem__(
        "augment", {"_target_": "torch.load", "f": str(side), "weights_only": False}))
    with pytest.raises(CnnbenchError, match=r"best.pt: data.augment._target_ is refused"):
        open_checkpoint(path)
    assert not marker.exists()


def test_cifar10_batches_named_by_a_checkpoint_cannot_run_code(trained, tmp_path, call_tool):  # noqa: F811
    # A checkpoint's data.root can point at "CIFAR-10 batches" shipped with it: they are pickles.
    side, marker = side_pickle(tmp_path)
    write_cifar10(tmp_path / "shipped", per_batch=4, test=4)
    (tmp_path / "shipped" / "cifar-10-batches-py" / "data_batch_1").write_bytes(side.read_bytes())
    cifar = {"name": "cifar10", "root": str(tmp_path / "shipped"), "download": False}
    doctored(trained, tmp_path, lambda config: config["data"].update(cifar))
    result = call_tool("evaluate", "ckpt=best.pt")
    assert_one_line_tool_error(result, "cnnbench-eval", "data_batch_1 is not a readable CIFAR-10 batch",
                               "refused: it names posix.system")
    assert not marker.exists()


def test_real_format_cifar10_batches_still_load(compose_config, cifar_root):
    from cnnbench.data import build_data

    cfg = compose_config("data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0")
    assert len(build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu")).train.labels) == 500


def test_a_users_registered_builder_is_rebuilt_from_its_checkpoint(trained, tmp_path, monkeypatch):
    def tiny_net(num_classes: int, in_channels: int, image_size: list[int]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    registry.register_model(tiny_net)
    target = f"{tiny_net.__module__}.tiny_net"
    assert registry.registered_builder(target) is tiny_net
    assert registry.registered_builder("torch.load") is None


def test_a_package_declaring_a_cnnbench_models_entry_point_is_found(tmp_path, monkeypatch):
    # An installed plugin, as pip leaves it: a module and a dist-info with its entry point.
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        from torch import nn
        from cnnbench.models import register_model

        @register_model
        def plugin_net(num_classes, in_channels, image_size):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """))
    info = tmp_path / "mymodels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mymodels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cnnbench.models]\nmine = mymodels\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    builder = registry.registered_builder("mymodels.plugin_net")
    assert builder is not None and builder.__name__ == "plugin_net"


# ---------------------------------------------------------------- run folders: resume=FOLDER

def saved_run(tmp_path: Path, *overrides: str) -> Path:
    """A run folder (as someone else's would arrive) whose saved overrides are `overrides`."""
    folder = tmp_path / "theirs"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return folder


@pytest.mark.parametrize("override, why", [
    ("+model.x={_target_: torch.load, f: SIDE, weights_only: false}", "adds or deletes a key"),
    ("++model.x={_target_: torch.load, f: SIDE, weights_only: false}", "adds or deletes a key"),
    ("model._target_=torch.load", "names code to call"),
    ("optimizer._partial_=false", "names code to call"),
    ("hydra.callbacks.evil._target_=torch.load", "changes where configs go or how Hydra runs"),
    ("model@optimizer=lenet", "changes where configs go or how Hydra runs"),
    ("model=../../../../../../../../../../EVIL", "model has no option"),  # a YAML file shipped alongside
    ("data.augment={_target_: torch.load, f: SIDE}", "sets a config node"),
    ("optimizer.lr='${oc.decode:\"{_target_: torch.load, f: SIDE}\"}'", "calls the resolver oc.decode"),
])
def test_saved_overrides_that_could_run_code_are_refused_on_resume(tmp_path, override, why):
    side, marker = side_pickle(tmp_path)
    (tmp_path / "evil.yaml").write_text(f"_target_: torch.load\nf: {side}\nweights_only: false\n")
    override = override.replace("SIDE", str(side)).replace("EVIL", str(tmp_path / "evil")[1:])
    folder = saved_run(tmp_path, "data=fake", override)
    result = run_cli(f"resume={folder}", "epochs=1", cwd=tmp_path)
    assert_one_line_error(result, f"{folder}/.hydra/overrides.yaml: the saved override", why,
                          "type it on the command line")
    assert result.returncode == 2
    assert not marker.exists()


def test_plain_saved_overrides_pass_and_a_typed_key_replaces_the_saved_one(tmp_path):
    saved = ["model=resnet18", "data=fake", "optimizer.lr=0.1", "data.image_size=[96,128]",
             "scheduler=step", "scheduler.step_size=${steps:1}", "data.root=/data/x", "seed=3"]
    assert check_saved_overrides(saved, "overrides.yaml") == saved
    # what the user types is trusted: a refused saved key typed anew no longer comes from the file
    folder = saved_run(tmp_path, "data=fake", "+model.width=3")
    assert resume_arguments(CommandLine.read([f"resume={folder}", "+model.width=4"])).arguments() == [
        "data=fake", f"resume={folder}", "+model.width=4", f"hydra.run.dir={folder}"]


def test_a_users_own_config_dir_options_count_as_existing(tmp_path):
    (tmp_path / "mine" / "optimizer").mkdir(parents=True)
    (tmp_path / "mine" / "optimizer" / "slow_sgd.yaml").write_text("_target_: torch.optim.SGD\n")
    with pytest.raises(CnnbenchError, match="optimizer has no option 'slow_sgd'"):
        check_saved_overrides(["optimizer=slow_sgd"], "overrides.yaml")
    assert check_saved_overrides(["optimizer=slow_sgd"], "overrides.yaml", [tmp_path / "mine"])


@pytest.mark.slow
def test_a_run_folder_of_the_projects_own_resumes_as_before(tmp_path):
    first = run_cli(*TINY, "model=mlp", "optimizer=adam", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli(f"resume={tmp_path / 'run'}", "epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_done"] == 2


# ---------------------------------------------------------------- sweep folders: cnnbench-report

def test_report_on_someone_elses_sweep_folder_runs_none_of_its_code(trained, tmp_path, capsys):
    side, marker = side_pickle(tmp_path)
    folder = tmp_path / "sweep" / "lenet_fake_seed=0"
    folder.mkdir(parents=True)
    for name in ("metrics.json", "config.json"):
        (folder / name).write_bytes((trained.run / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["model"] = {"_target_": "builtins.dict",
                       "payload": {"_target_": "torch.load", "f": str(side), "weights_only": False}}
    (folder / "config.json").write_text(json.dumps(config))
    report.main([str(tmp_path / "sweep")])
    assert "lenet" in capsys.readouterr().out
    assert not marker.exists()
    with open(tmp_path / "sweep" / "leaderboard.csv", newline="") as file:
        (row,) = csv.DictReader(file)
    assert row["model"] == "lenet" and row["macs"] == ""  # no model was built from that config
