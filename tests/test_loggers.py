"""The loggers beside TensorBoard (logger=csv, mlflow, wandb), with the real client libraries and
nothing on the network: MLflow's file store read back through its client, W&B's offline run files
parsed back, the CSV against metrics.json; a logger that fails, a resume, a sweep, torchrun, the
missing-extra message, and what a run without them imports."""

import csv
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, require_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnbench.config.checks import check_config
from cnnbench.config.keys import RUNTIME_KEYS, flatten, may_change_on_resume
from cnnbench.config.trust import check_saved_overrides
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.loggers import check_loggers

SMALL = ["data=fake", "data.num_train=128", "data.num_val=64", "data.num_test=64", "batch_size=64",
         "device=cpu", "model=lenet"]
OLD_RUN = Path(__file__).parent / "data" / "release-0.1.0-run"
GET_TRACKERS = "pip install -e '.[test]' (it installs the mlflow and wandb extras)"


def mlflow_client():
    """MLflow's client class (mlflow-skinny); the test is skipped without it, and fails in CI."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 reads its file store only so (as cnnbench sets)
    return require_module("mlflow", GET_TRACKERS).MlflowClient


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """W&B never reaches for the network nor the user's folders; MLflow's URI is each test's own."""
    for name, folder in (("WANDB_DIR", "wandb-dir"), ("WANDB_CONFIG_DIR", "wandb-config"),
                         ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_DATA_DIR", "wandb-data")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # cnnbench sets it for its file store
    monkeypatch.chdir(tmp_path)  # the default MLflow store, ./mlruns, lands here


def small_run(compose_config, *overrides):
    return compose_config(*SMALL, *overrides)


def store(tmp_path: Path) -> str:
    return (tmp_path / "mlruns").as_uri()


def mlflow_runs(uri: str, experiment: str = "cnnbench") -> list:
    client = mlflow_client()(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


# W&B's offline run file, RUN/wandb/offline-run-*/run-ID.wandb: LevelDB's log format (blocks of 32 KiB,
# each record a 7-byte header: CRC-32C, length, type: 1 whole, 2 first, 3 middle, 4 last part) after
# W&B's own 7-byte header (":W&B", 0xBEE1, version 0); each record a wandb_internal_pb2.Record. wandb
# 0.31 has no Python reader for it any more (its Go core writes and syncs it), so this one is ours.
BLOCK = 32768


def wandb_records(path: Path) -> list:
    records_format = require_module("wandb.proto.wandb_internal_pb2", GET_TRACKERS)
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), data[:7]
    records, at, parts = [], 7, b""
    while at + 7 <= len(data):
        if BLOCK - at % BLOCK < 7:  # a block's tail too short for a header is padding
            at += BLOCK - at % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        parts += data[at + 7:at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            record = records_format.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_run(offline_folder: Path) -> dict:
    """What one offline W&B run folder holds: its run record, config, history rows, summary, exit code."""
    (path,) = offline_folder.glob("run-*.wandb")
    run = {"config": {}, "history": [], "summary": {}, "exit_code": None, "preempting": False}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["run"] = record.run
            run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.history.item})
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.summary.update})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "preempting":
            run["preempting"] = True
    return run


def offline_runs(run_dir: Path) -> list[Path]:
    """The run's offline W&B folders, their files complete: run.finish() returns before W&B's background
    process has closed the run's file (seen here: the header alone, the rest a second later), and
    wandb.teardown() waits for that process to end, as the end of a cnnbench process does."""
    require_module("wandb", GET_TRACKERS).teardown()
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_the_csv_holds_every_number_of_every_epoch_as_metrics_json_does(compose_config, tmp_path):
    run = tmp_path / "run"
    metrics = train(small_run(compose_config, "epochs=3", "logger=csv"), run)
    rows = read_csv(run / "metrics.csv")
    history = metrics["history"]
    assert len(rows) == 3 and list(rows[0]) == list(history[0])  # the record's keys, in its order
    for row, record in zip(rows, history, strict=True):
        # every number exactly (Python's repr reads back to the same float); None as an empty cell
        assert {key: None if cell == "" else float(cell) for key, cell in row.items()} == \
            {key: None if value is None else float(value) for key, value in record.items()}
    assert history[0]["val_loss_ema"] is None and rows[0]["val_loss_ema"] == ""
    assert not list(run.glob(".*.tmp"))  # written whole: no temporary file left


def test_mlflow_logs_params_metrics_tags_and_artifacts_to_a_local_file_store(compose_config, tmp_path):
    run = tmp_path / "run"
    metrics = train(small_run(compose_config, "epochs=2", "logger=mlflow"), run)  # the default store
    assert (tmp_path / "mlruns").is_dir()
    (found,) = mlflow_runs(store(tmp_path))
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert json.loads((run / "trackers.json").read_text())["mlflow"]["run_id"] == found.info.run_id
    # params: the resolved config, flattened, each as its JSON text (strings as they are)
    config = flatten(json.loads((run / "config.json").read_text()))
    assert found.data.params == {key: value if isinstance(value, str) else json.dumps(value)
                                 for key, value in config.items()}
    assert found.data.params["optimizer.lr"] == "0.05" and found.data.params["data.name"] == "fake"
    client = mlflow_client()(tracking_uri=store(tmp_path))
    for key in ("train_loss", "val_acc", "lr", "images_per_sec", "epoch_time_s"):
        points = client.get_metric_history(found.info.run_id, key)
        assert [(p.step, p.value) for p in points] == [(r["epoch"], r[key]) for r in metrics["history"]], key
    assert client.get_metric_history(found.info.run_id, "val_acc_ema") == []  # None: not logged
    # the final and test numbers, at the last epoch
    for key in ("test_acc", "test_loss", "best_val_acc", "final_test_acc", "wall_time_s"):
        assert found.data.metrics[key] == pytest.approx(metrics[key], rel=1e-12), key
    assert {"model": "lenet", "data": "fake", "seed": "0", "run_folder": str(run.absolute())}.items() \
        <= found.data.tags.items()
    assert {"cnnbench", "torch", "device", "command", "hostname"} <= set(found.data.tags)
    assert "sweep" not in found.data.tags
    artifacts = {item.path: item.file_size for item in client.list_artifacts(found.info.run_id)}
    assert artifacts == {name: (run / name).stat().st_size
                         for name in ("best.pt", "curves.png", "confusion_matrix.png", "metrics.json")}


def test_wandb_offline_files_hold_the_config_history_pictures_and_summary(compose_config, tmp_path):
    run = tmp_path / "run"
    metrics = train(small_run(compose_config, "epochs=2", "logger=wandb"), run)
    (folder,) = offline_runs(run)
    logged = wandb_run(folder)
    assert logged["run"].run_id == json.loads((run / "trackers.json").read_text())["wandb"]["id"]
    assert (logged["run"].display_name, logged["run"].project, logged["run"].run_group) == ("run", "cnnbench", "")
    assert {key: value for key, value in logged["config"].items() if key != "_wandb"} == \
        json.loads((run / "config.json").read_text())
    rows = {row["_step"]: row for row in logged["history"]}
    assert sorted(rows) == [1, 2]
    for record in metrics["history"]:
        row = rows[record["epoch"]]
        assert {key: row[key] for key in record if record[key] is not None} == \
            {key: value for key, value in record.items() if value is not None}
    for picture in ("curves", "confusion_matrix"):  # at the last epoch, as image files of the run
        assert rows[2][f"{picture}/_type"] == "image-file"
        assert (folder / "files" / rows[2][f"{picture}/path"]).is_file()
    for key in ("test_acc", "best_val_acc", "final_test_loss", "parameters"):
        assert logged["summary"][key] == pytest.approx(metrics[key], rel=1e-12), key
    assert logged["summary"]["val_acc"] == metrics["history"][-1]["val_acc"]  # the series' last value
    assert logged["exit_code"] == 0


def test_loggers_together_and_a_sweep_grouped_by_its_folder_name(compose_config, tmp_path):
    uri = store(tmp_path / "elsewhere")
    cfg = small_run(compose_config, "epochs=1", "logger=[csv,mlflow,wandb]", f"logger.mlflow.tracking_uri={uri}",
                    "logger.mlflow.experiment_name=lab", "logger.mlflow.log_checkpoint=false")
    train(cfg, tmp_path / "lab" / "lenet_fake_seed=0", sweep="lab")
    run = tmp_path / "lab" / "lenet_fake_seed=0"
    assert (run / "metrics.csv").is_file() and not (tmp_path / "mlruns").exists()
    (found,) = mlflow_runs(uri, "lab")
    assert found.data.tags["sweep"] == "lab" and found.info.run_name == "lenet_fake_seed=0"
    client = mlflow_client()(tracking_uri=uri)
    assert "best.pt" not in {item.path for item in client.list_artifacts(found.info.run_id)}
    (folder,) = offline_runs(run)
    assert wandb_run(folder)["run"].run_group == "lab"


def test_a_resumed_run_goes_on_in_the_same_tracker_runs(compose_config, tmp_path, monkeypatch):
    import cnnbench.engine.train as engine

    run, uri = tmp_path / "run", store(tmp_path)
    overrides = ["epochs=3", "logger=[csv,mlflow,wandb]"]
    validate, calls = engine.validate, []

    def fails_in_epoch_2(*arguments, **options):  # a crash after epoch 1's checkpoints
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return validate(*arguments, **options)

    monkeypatch.setattr(engine, "validate", fails_in_epoch_2)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(small_run(compose_config, *overrides), run)
    monkeypatch.setattr(engine, "validate", validate)
    ids = json.loads((run / "trackers.json").read_text())
    (failed,) = mlflow_runs(uri)
    assert failed.info.status == "FAILED"
    assert wandb_run(offline_runs(run)[0])["exit_code"] == 1

    metrics = train(small_run(compose_config, *overrides), run, resume_from=True)
    assert json.loads((run / "trackers.json").read_text()) == ids
    (found,) = mlflow_runs(uri)  # the same MLflow run, finished now, with every epoch once
    assert found.info.run_id == ids["mlflow"]["run_id"] and found.info.status == "FINISHED"
    points = mlflow_client()(tracking_uri=uri).get_metric_history(found.info.run_id, "val_acc")
    assert [(p.step, p.value) for p in points] == [(r["epoch"], r["val_acc"]) for r in metrics["history"]]
    first, second = (wandb_run(folder) for folder in offline_runs(run))  # `wandb sync` joins them by id
    assert first["run"].run_id == second["run"].run_id == ids["wandb"]["id"]
    assert [row["_step"] for row in first["history"] + second["history"] if "val_acc" in row] == [1, 2, 3]
    assert second["exit_code"] == 0
    assert [int(row["epoch"]) for row in read_csv(run / "metrics.csv")] == [1, 2, 3]


def test_a_stopped_run_marks_its_tracker_runs_as_stopped(compose_config, tmp_path, monkeypatch):
    import cnnbench.engine.train as engine
    from cnnbench.errors import Interrupted

    def stopped(*arguments, **options):
        raise Interrupted("SIGTERM", 15, "at epoch 1", str(tmp_path / "run"))

    monkeypatch.setattr(engine, "validate", stopped)
    with pytest.raises(Interrupted):
        train(small_run(compose_config, "logger=[mlflow,wandb]"), tmp_path / "run")
    assert mlflow_runs(store(tmp_path))[0].info.status == "KILLED"
    logged = wandb_run(offline_runs(tmp_path / "run")[0])
    assert logged["preempting"] and logged["exit_code"] == 1


def free_port() -> int:
    """A loopback port nothing listens on (a tracking server that is gone)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("when", ["start", "server", "epoch"])
def test_a_failing_logger_is_said_once_and_the_run_finishes_whole(compose_config, tmp_path, monkeypatch, caplog,
                                                                  when):
    if when == "start":  # the tracking folder cannot be made: a file stands where its parent should be
        (tmp_path / "not-a-folder").write_text("")
        uri = (tmp_path / "not-a-folder" / "mlruns").as_uri()
    elif when == "server":  # no tracking server where the URI says (MLflow's retries would take minutes)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        uri = f"http://127.0.0.1:{free_port()}"
    else:  # the server is gone after the first epoch: every later call fails
        uri, epochs, client = store(tmp_path), [], mlflow_client()
        log_batch = client.log_batch

        def gone(self, run_id, metrics=(), **options):
            epochs.append(1) if metrics else None
            if len(epochs) > 1:
                raise ConnectionError("API request to http://tracking:5000 failed: connection refused")
            return log_batch(self, run_id, metrics=metrics, **options)

        monkeypatch.setattr(client, "log_batch", gone)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        metrics = train(small_run(compose_config, "epochs=3", "logger=[mlflow,csv]",
                                  f"logger.mlflow.tracking_uri={uri}"), run)
    said = [r.getMessage() for r in caplog.records if "logger mlflow failed" in r.getMessage()]
    assert len(said) == 1 and "which goes on" in said[0] and "\n" not in said[0]
    assert ("at start" in said[0]) == (when != "epoch") and ("at epoch 2" in said[0]) == (when == "epoch")
    assert metrics["status"] == "finished" and json.loads((run / "metrics.json").read_text()) == metrics
    assert len(read_csv(run / "metrics.csv")) == 3  # the other logger goes on
    events = EventAccumulator(str(run)).Reload()
    assert [event.step for event in events.Scalars("val/acc")] == [1, 2, 3]
    assert (run / "best.pt").is_file() and (run / "curves.png").is_file()


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import and find_spec fail
    with pytest.raises(CnnbenchError, match=r"^logger=wandb needs the wandb package, which is not installed: "
                                            r"pip install 'cnnbench\[wandb\]'$"):
        check_loggers({"csv": {}, "wandb": {}})
    with pytest.raises(CnnbenchError, match="cnnbench has no logger 'neptune'; choose from csv, mlflow, wandb"):
        check_loggers({"neptune": {}})
    # the command, before any data loads or any file is written
    script = ("import sys; sys.modules['mlflow'] = None; sys.argv = ['cnnbench', *sys.argv[1:]]; "
              "from cnnbench.cli.train import main; main()")
    result = subprocess.run([sys.executable, "-c", script, *SMALL, "logger=mlflow", "hydra.run.dir=run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == ("cnnbench: error: logger=mlflow needs the mlflow package, which is not "
                                     "installed: pip install 'cnnbench[mlflow]'")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_run_without_trackers_imports_neither_library(tmp_path):
    # what a run costs at start-up is what it imports: the trackers' modules only when chosen
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnbench", *SMALL, "epochs=1",
                             "limit_batches=1", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "cnnbench.loggers.chosen" in imported and "torch" in imported  # what -X importtime lists
    assert not {name for name in imported if name.split(".")[0] in ("mlflow", "wandb")}
    assert not imported & {"cnnbench.loggers.csv_file", "cnnbench.loggers.mlflow_run", "cnnbench.loggers.wandb_run"}


def test_the_logger_group_composes_one_or_several(compose_config):
    assert "logger" not in compose_config()  # TensorBoard alone, as before
    assert list(compose_config("logger=csv").logger) == ["csv"]
    both = compose_config("logger=[csv,mlflow,wandb]", "logger.wandb.mode=online")
    assert list(both.logger) == ["csv", "mlflow", "wandb"] and both.logger.wandb.mode == "online"
    assert both.logger.mlflow.tracking_uri is None and both.logger.mlflow.experiment_name == "cnnbench"
    # a run folder's saved overrides may choose several (a resume reads them back)
    assert check_saved_overrides(["logger=[csv,mlflow]", "logger=wandb"], "overrides.yaml")
    with pytest.raises(CnnbenchError, match="logger has no option 'x'"):
        check_saved_overrides(["logger=[csv,x]"], "overrides.yaml")


def test_logger_keys_are_checked(compose_config):
    check_config(compose_config("logger=[csv,mlflow,wandb]"))
    with pytest.raises(CnnbenchError, match=r"logger.wandb.mode='upload' is not one of: offline, online, disabled"):
        check_config(compose_config("logger=wandb", "logger.wandb.mode=upload"))
    with pytest.raises(CnnbenchError, match="logger.mlflow.log_checkpoint='no' is not true or false"):
        check_config(compose_config("logger=mlflow", "logger.mlflow.log_checkpoint=no"))


def test_every_logger_key_is_left_out_of_sweep_folder_names_and_may_change_on_resume():
    keys = {"logger"} | {f"logger.{key}" for path in (REPO / "conf" / "logger").glob("*.yaml")
                         for key in flatten(yaml.safe_load(path.read_text()))}
    assert keys <= set(RUNTIME_KEYS)  # Hydra's override_dirname.exclude_keys matches whole keys only
    assert all(may_change_on_resume(key) for key in keys)


def test_a_run_of_the_previous_release_resumes_with_loggers_chosen_now(compose_config, tmp_path):
    # its config has no logger key; a tracker chosen at the resume gets the epochs done before it too
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    overrides = yaml.safe_load((OLD_RUN / ".hydra" / "overrides.yaml").read_text())
    assert "logger" not in OmegaConf.load(OLD_RUN / ".hydra" / "config.yaml")
    metrics = train(compose_config(*overrides, "logger=[csv,mlflow]"), old, resume_from=True)
    assert metrics["epochs_done"] == 3
    assert [int(row["epoch"]) for row in read_csv(old / "metrics.csv")] == [1, 2, 3]
    (found,) = mlflow_runs(store(tmp_path))
    points = mlflow_client()(tracking_uri=store(tmp_path)).get_metric_history(found.info.run_id, "train_acc")
    assert [(p.step, p.value) for p in points] == [(r["epoch"], r["train_acc"]) for r in metrics["history"]]


@pytest.mark.slow
def test_a_sweep_groups_its_runs_by_its_folder_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnbench", "-m", *SMALL, "epochs=1", "seed=0,1",
                             "logger=[mlflow,wandb]", "hydra.sweep.dir=sweeps/lab"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(path for path in (tmp_path / "sweeps" / "lab").iterdir() if path.is_dir())
    assert len(runs) == 2 and all(path.name.endswith(f"_seed={seed}") and "logger" not in path.name
                                  for path, seed in zip(runs, (0, 1), strict=True))
    assert {wandb_run(offline_runs(path)[0])["run"].run_group for path in runs} == {"lab"}
    assert sorted(run.data.tags["sweep"] for run in mlflow_runs(store(tmp_path))) == ["lab", "lab"]


@pytest.mark.slow
def test_only_rank_0_logs_under_torchrun(tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "cnnbench", *SMALL, "epochs=2", "logger=[csv,mlflow,wandb]",
                             "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_csv(tmp_path / "run" / "metrics.csv")) == 2
    (found,) = mlflow_runs(store(tmp_path))
    assert len(mlflow_client()(tracking_uri=store(tmp_path)).get_metric_history(found.info.run_id, "val_acc")) == 2
    (folder,) = offline_runs(tmp_path / "run")
    assert [row["_step"] for row in wandb_run(folder)["history"] if "val_acc" in row] == [1, 2]
