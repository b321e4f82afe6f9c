"""Sweeps as a user runs them: named run folders, reruns that skip or resume, failures that do not
stop the others, and the leaderboard (written at the end of a sweep, or by cnnbench-report)."""

import csv
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from fault_injection import faults_at
from test_faults import assert_same_run, inject

from cnnbench.cli import report
from cnnbench.config.resolvers import run_folder
from cnnbench.engine.train import train
from cnnbench.errors import Interrupted
from cnnbench.runtime.host import HOST
from cnnbench.sweep import jobs as sweeps
from cnnbench.sweep.claims import read_holder
from cnnbench.sweep.jobs import plan
from cnnbench.sweep.journal import read_journal

# Tiny runs: about a second of training per job; starting the process costs more.
SMALL = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32"]
SWEEP_DIR = Path("outputs/multirun/default")
# A tiny run whose every random draw matters (dropout, per-image crops and flips, shuffling,
# momentum): 4 steps an epoch. The fault tests' 7th training batch is epoch 2's step 2 (the
# first one handed out is the batch shown in TensorBoard).
RANDOM = ["data=fake", "data.num_train=128", "data.num_val=32", "batch_size=32", "model=mlp",
          "model.hidden=[32]", "model.dropout=0.3", "data.augment.crop_padding=2", "data.augment.hflip=true",
          "epochs=2", "device=cpu"]


def sweep(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """`cnnbench -m ARGUMENTS` in cwd."""
    command = [sys.executable, "-m", "cnnbench", "-m", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def read_leaderboard(folder: Path) -> list[dict[str, str]]:
    with open(folder / "leaderboard.csv", newline="") as file:
        return list(csv.DictReader(file))


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished 2 models x 2 seeds sweep in the default sweep folder: (working dir, result)."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = sweep("model=lenet,mlp", "seed=0,1", *SMALL, "epochs=1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_run_folder_names_say_what_the_run_is():
    assert run_folder("lenet", "fake", "", 1) == "lenet_fake_seed=1"
    assert run_folder("mlp", "fake", "optimizer.lr=0.01", 0) == "mlp_fake_optimizer.lr=0.01_seed=0"
    assert "/" not in run_folder("lenet", "imagefolder", "data.image_size=64_x=a/b", 0)
    long_a, long_b = (run_folder("lenet", "fake", f"{'x' * 300}{end}", 0) for end in "ab")
    assert len(long_a) <= 200 and long_a != long_b  # cut, and still distinct
    # file systems count bytes: 150 characters of 2 bytes each fit 200 characters, not 255 bytes
    wide_a, wide_b = (run_folder("lenet", "fake", f"+data.note={'é' * 150}{end}", 0) for end in "ab")
    assert len(wide_a.encode()) <= 255 and wide_a != wide_b and wide_a.startswith("lenet_fake_+data.note=éé")
    assert len(run_folder("lenet", "fake", "x" + "é" * 200, 0).encode()) <= 255  # no character cut in two
    assert run_folder("lenet", "fake", "é" * 100, 0) == f"lenet_fake_{'é' * 100}_seed=0"  # fits: as it was


def test_a_sweep_whose_folder_names_are_long_in_bytes_runs(tmp_path):
    # a value of multi-byte characters: the run folder's name stopped the sweep with ENAMETOOLONG
    note = "é" * 150
    result = sweep("model=mlp", *SMALL, "epochs=1", f'+data.note="{note}"', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in (tmp_path / SWEEP_DIR).iterdir() if path.is_dir()]
    assert (run_dir / "metrics.json").exists() and run_dir.name.startswith("mlp_fake_+data.note=")


def test_the_run_folder_decides_skip_resume_or_fresh(tmp_path):
    assert plan(tmp_path, epochs=2) == "fresh"
    (tmp_path / "last.pt").write_bytes(b"")
    assert plan(tmp_path, epochs=2) == "resume"  # no metrics.json yet, or a damaged one
    for status, done, early, epochs, expected in [("running", 1, False, 2, "resume"),
                                                  ("finished", 2, False, 2, "skip"),
                                                  ("finished", 2, False, 3, "resume"),  # train on
                                                  ("finished", 2, True, 3, "skip")]:  # stopped early
        metrics = {"status": status, "epochs_done": done, "stopped_early": early}
        (tmp_path / "metrics.json").write_text(json.dumps(metrics))
        assert plan(tmp_path, epochs) == expected, metrics
    # a failed run: resumed from its last checkpoint if it saved one, else trained from the start
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running", "epochs_done": 1}))
    (tmp_path / "error.txt").write_text("RuntimeError: out of memory\n")
    assert plan(tmp_path, epochs=2) == "resume"
    (tmp_path / "last.pt").unlink()
    assert plan(tmp_path, epochs=2) == "fresh"


def test_any_exception_fails_only_its_job(tmp_path, compose_config, monkeypatch, capsys):
    def broken_train(cfg, run_dir, resume, check_claim):
        raise RuntimeError("out of memory\nmore detail")

    cfg = compose_config("data=fake")
    journal = tmp_path / ".jobs" / "this-sweep"  # where the jobs of one sweep note what they did
    assert sweeps.run_job(cfg, tmp_path / "a", broken_train, journal / "0.json") is None
    assert sweeps.run_job(cfg, tmp_path / "b", lambda cfg, run_dir, *_: {"best_val_acc": 0.5},
                          journal / "1.json") == 0.5
    assert sweeps.run_job(cfg, tmp_path / "b", broken_train, journal / "2.json") is None  # two jobs, one folder
    error = capsys.readouterr().err.splitlines()
    assert len(error) == 2
    assert error[0].startswith(f"cnnbench: error: {tmp_path / 'a'}: RuntimeError: out of memory (traceback")
    assert "the same folder" in error[1]
    assert "Traceback" in (tmp_path / "a" / "error.txt").read_text()
    assert [job.outcome for job in read_journal(journal)] == ["failed", "trained", "failed"]


def test_a_sweep_names_its_folders_and_ends_in_a_leaderboard(two_by_two):
    cwd, _ = two_by_two
    folders = sorted(p.name for p in (cwd / SWEEP_DIR).iterdir() if p.is_dir())
    common = "batch_size=32_data.num_train=64_data.num_val=32_epochs=1"
    assert folders == [f"{model}_fake_{common}_seed={seed}" for model in ("lenet", "mlp") for seed in (0, 1)]
    rows = read_leaderboard(cwd / SWEEP_DIR)
    assert sorted(row["model"] for row in rows) == ["lenet", "mlp"]
    for row in rows:
        runs = [metrics_of(cwd / SWEEP_DIR / f"{row['model']}_fake_{common}_seed={seed}") for seed in (0, 1)]
        best = [m["best_val_acc"] for m in runs]
        final = [m["final_val_acc"] for m in runs]
        assert row["seeds"] == "2" and row["finished"] == "2" and row["failed"] == "0"
        assert float(row["best_val_acc_mean"]) == pytest.approx(statistics.fmean(best))
        assert float(row["best_val_acc_std"]) == pytest.approx(statistics.stdev(best))
        assert float(row["final_val_acc_mean"]) == pytest.approx(statistics.fmean(final))
        assert float(row["final_val_acc_std"]) == pytest.approx(statistics.stdev(final))
        assert float(row["wall_time_s"]) == pytest.approx(statistics.fmean(m["wall_time_s"] for m in runs))
        assert int(row["parameters"]) == runs[0]["parameters"] and int(row["macs"]) > 0
    accuracies = [float(row["best_val_acc_mean"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    markdown = (cwd / SWEEP_DIR / "leaderboard.md").read_text()
    assert "| lenet | fake |" in markdown and "| mlp | fake |" in markdown


def test_rerunning_a_finished_sweep_trains_nothing(two_by_two):
    cwd, _ = two_by_two
    before = {p: p.read_bytes() for p in (cwd / SWEEP_DIR).glob("*/metrics.json")}
    result = sweep("model=lenet,mlp", "seed=0,1", *SMALL, "epochs=1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("skipping ") == 4 and "epoch 1/1" not in result.stdout
    for folder in before:
        assert f"skipping {SWEEP_DIR / folder.parent.name}: finished" in result.stdout
    assert {p: p.read_bytes() for p in (cwd / SWEEP_DIR).glob("*/metrics.json")} == before
    assert len(read_leaderboard(cwd / SWEEP_DIR)) == 2


def test_rerunning_a_sweep_with_more_epochs_trains_on_only_the_shorter_run(tmp_path, compose_config):
    # The lenet run finished 1 epoch and the sweep now asks for 2: train exactly that, in the
    # folder the sweep uses. (A run stopped part-way: the next test.)
    lenet_dir = SWEEP_DIR / "lenet_fake_batch_size=32_data.num_train=64_data.num_val=32_epochs=2_seed=0"
    train(compose_config("model=lenet", *SMALL, "epochs=1"), tmp_path / lenet_dir)
    epoch_one = metrics_of(tmp_path / lenet_dir)["history"][0]

    result = sweep("model=lenet,mlp", *SMALL, "epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("resuming from") == 1
    assert f"resuming from {tmp_path / lenet_dir}" in result.stdout
    lenet = metrics_of(tmp_path / lenet_dir)
    assert lenet["status"] == "finished" and [r["epoch"] for r in lenet["history"]] == [1, 2]
    assert lenet["history"][0] == epoch_one  # kept from the first run (its timing too), not retrained
    mlp = metrics_of(tmp_path / SWEEP_DIR / lenet_dir.name.replace("lenet", "mlp"))
    assert mlp["status"] == "finished" and mlp["epochs_done"] == 2
    assert "2 runs: 1 trained, 1 resumed, 0 skipped, 0 failed" in result.stdout


@pytest.mark.slow
def test_rerunning_an_interrupted_sweep_resumes_exactly_where_it_stopped(tmp_path, compose_config):
    # SIGTERM in the first job's epoch 2: it saves that step and the sweep stops, the second job unborn.
    sweep_arguments = ["-m", *RANDOM, "seed=0,1", "hydra.sweep.dir=sweep"]
    stopped = inject("term", "train-batch:7", *sweep_arguments, cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr
    assert "Rerun the same command to continue the sweep" in stopped.stderr
    first = next(tmp_path.glob("sweep/*seed=0"))
    assert not list(tmp_path.glob("sweep/*seed=1"))
    metrics = metrics_of(first)
    assert (metrics["status"], metrics["epochs_done"]) == ("running", 1)

    rerun = sweep(*sweep_arguments[1:], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {first / 'last.pt'} after epoch 1, step 2" in rerun.stdout
    assert "2 runs: 1 trained, 1 resumed, 0 skipped, 0 failed" in rerun.stdout
    # the same weights and metrics, bit for bit, as the run never stopped
    train(compose_config(*RANDOM, "seed=0"), tmp_path / "straight")
    assert_same_run(first, tmp_path / "straight")


@pytest.mark.slow
def test_a_failed_run_resumes_from_its_last_checkpoint_on_rerun(tmp_path, compose_config):
    # The first job crashes in epoch 2 (as out of memory or a bug would): last.pt holds epoch 1.
    sweep_arguments = ["-m", *RANDOM, "seed=0,1", "hydra.sweep.dir=sweep"]
    failed = inject("error", "train-batch:7", *sweep_arguments, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    first = next(tmp_path.glob("sweep/*seed=0"))
    name = first.relative_to(tmp_path)
    assert f"cnnbench: error: {name}: InjectedFailure: injected failure at train-batch:7" in failed.stderr
    assert "1 of 2 runs failed" in failed.stderr and (first / "error.txt").is_file()
    assert metrics_of(first)["epochs_done"] == 1
    assert [(row["finished"], row["failed"]) for row in read_leaderboard(tmp_path / "sweep")] == [("1", "1")]

    rerun = sweep(*sweep_arguments[1:], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    # resumed from its last good checkpoint, not trained again from the start
    assert f"resuming from {first / 'last.pt'} after epoch 1\n" in rerun.stdout
    assert "2 runs: 0 trained, 1 resumed, 1 skipped, 0 failed" in rerun.stdout
    assert not (first / "error.txt").exists()
    assert [(row["finished"], row["failed"]) for row in read_leaderboard(tmp_path / "sweep")] == [("2", "0")]
    train(compose_config(*RANDOM, "seed=0"), tmp_path / "straight")
    assert_same_run(first, tmp_path / "straight")


def test_a_failing_run_does_not_stop_the_sweep(tmp_path):
    result = sweep("model=lenet", "optimizer.lr=0.1,-1", *SMALL, "epochs=1", "hydra.sweep.dir=lr_sweep",
                   cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed_dir = ("lr_sweep/lenet_fake_batch_size=32_data.num_train=64_data.num_val=32_epochs=1_"
                  "optimizer.lr=-1_seed=0")
    assert (f"cnnbench: error: {failed_dir}: optimizer.lr=-1 is out of range: must be a number > 0"
            in result.stderr.splitlines())
    assert "1 of 2 runs failed" in result.stderr
    good = tmp_path / failed_dir.replace("lr=-1", "lr=0.1")
    assert metrics_of(good)["status"] == "finished"
    rows = {row["config"]: row for row in read_leaderboard(tmp_path / "lr_sweep")}
    common = "batch_size=32 data.num_train=64 data.num_val=32 epochs=1"
    assert rows[f"{common} optimizer.lr=-1"]["failed"] == "1"
    assert rows[f"{common} optimizer.lr=-1"]["best_val_acc_mean"] == ""
    assert rows[f"{common} optimizer.lr=0.1"]["finished"] == "1"
    assert "Failed runs:" in (tmp_path / "lr_sweep" / "leaderboard.md").read_text()


def test_report_rebuilds_the_leaderboard_and_names_unreadable_runs(two_by_two, tmp_path, capsys):
    folder = tmp_path / "runs"
    shutil.copytree(two_by_two[0] / SWEEP_DIR, folder)
    missing, corrupt = sorted(p for p in folder.iterdir() if p.name.startswith("mlp"))
    (missing / "metrics.json").unlink()
    (corrupt / "metrics.json").write_text('{"status": "fini')

    report.main([str(folder)])
    output = capsys.readouterr()
    assert output.err.splitlines() == [
        f"cnnbench-report: warning: {corrupt / 'metrics.json'} is damaged (not JSON: truncated?); "
        "left out of the table"]
    # no metrics.json, a last.pt and no process at it: a rerun resumes it
    assert f"stale: {missing.name}: stopped; rerun its sweep" in output.out
    rows = read_leaderboard(folder)
    assert [row["model"] for row in rows] == ["lenet"] and rows[0]["seeds"] == "2"
    assert "lenet" in output.out and "best val acc" in output.out

    shutil.copytree(two_by_two[0] / SWEEP_DIR, tmp_path / "again")  # both models again
    report.main([str(tmp_path / "again"), "--sort", "parameters", "--ascending"])
    assert [row["model"] for row in read_leaderboard(tmp_path / "again")] == ["lenet", "mlp"]
    report.main([str(tmp_path / "again"), "--sort", "parameters"])
    assert [row["model"] for row in read_leaderboard(tmp_path / "again")] == ["mlp", "lenet"]
    with pytest.raises(SystemExit) as bad_column:
        report.main([str(tmp_path / "again"), "--sort", "accuracy"])
    assert bad_column.value.code == 2
    with pytest.raises(SystemExit) as no_runs:
        report.main([str(tmp_path / "missing-folder")])
    assert no_runs.value.code == 2
    assert "cnnbench-report: error:" in capsys.readouterr().err


# A field the readers use, damaged as a disk, an editor or someone else's script may leave it
# (issue #23): (what changes in metrics.json, what the warning says is wrong).
DAMAGE = {
    "seed-a-list": ({"seed": [1]}, "seed is [1], not an integer"),
    "epochs-done-text": ({"epochs_done": "1"}, 'epochs_done is "1", not an integer >= 0'),
    "best-acc-nan": ({"best_val_acc": float("nan")}, "best_val_acc is NaN, not a finite number or null"),
    "history-not-records": ({"history": [1.0]}, "history is [1.0], not a list of one object per epoch"),
    "history-no-epoch": ({"history": [{"val_acc": 0.5}]}, "history is "),
    "time-to-accuracy": ({"time_to_accuracy": {"0.90": {"seconds": "fast"}}}, "time_to_accuracy is "),
    "provenance-text": ({"provenance": "laptop"}, 'provenance is "laptop", not an object'),
    "parameters-negative": ({"parameters": -5}, "parameters is -5, not an integer >= 0 or null"),
    "no-status": ({"status": None}, 'no "status": not a cnnbench metrics file'),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_metrics_field_is_named_once_and_left_out_never_a_traceback(tmp_path, capsys, damage):
    from test_leaderboard_stats import make_row

    make_row(tmp_path, "lenet", [0.8, 0.9])
    make_row(tmp_path, "mlp", [0.5, 0.6])
    damaged = tmp_path / "mlp_seed=1" / "metrics.json"
    change, said = DAMAGE[damage]
    metrics = {**json.loads(damaged.read_text()), **change}
    damaged.write_text(json.dumps({k: v for k, v in metrics.items() if v is not None}))
    report.main([str(tmp_path)])
    output = capsys.readouterr()
    [line] = output.err.splitlines()  # one line, no traceback
    assert line.startswith(f"cnnbench-report: warning: {damaged} is damaged ({said}")
    assert line.endswith("); left out of the table")
    rows = {row["model"]: row for row in read_leaderboard(tmp_path)}
    assert (rows["lenet"]["seeds"], rows["mlp"]["seeds"]) == ("2", "1")
    assert "3 runs: 3 finished" in output.out


def test_a_sweep_into_a_folder_with_a_damaged_metrics_file_names_it_and_resumes_that_run(two_by_two,
                                                                                          tmp_path):
    cwd, _ = two_by_two
    shutil.copytree(cwd / SWEEP_DIR, tmp_path / SWEEP_DIR)
    damaged = next((tmp_path / SWEEP_DIR).glob("lenet*seed=0")) / "metrics.json"
    damaged.write_text(json.dumps({**json.loads(damaged.read_text()), "epochs_done": "1"}))
    rerun = sweep("model=lenet,mlp", "seed=0,1", *SMALL, "epochs=1", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    warnings = [line for line in rerun.stderr.splitlines() if "damaged" in line]
    assert warnings == [f"cnnbench: warning: {damaged.relative_to(tmp_path)} is damaged (epochs_done is "
                        '"1", not an integer >= 0): left out; the run counts as unfinished']
    assert "4 runs: 0 trained, 1 resumed, 3 skipped, 0 failed" in rerun.stdout
    assert metrics_of(damaged.parent)["epochs_done"] == 1  # written again by the resumed run


def test_a_sweep_into_a_folder_with_the_users_own_leaderboard_md_keeps_it(tmp_path):
    (tmp_path / "sw").mkdir()
    mine = tmp_path / "sw" / "leaderboard.md"
    mine.write_text("# Leaderboard\n\nwhat I measured by hand\n")
    result = sweep("model=mlp", *SMALL, "epochs=1", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # the runs themselves are done
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line.startswith("cnnbench: error: sw/leaderboard.md exists and was not written by cnnbench-report")
    assert line.endswith("(the runs are done; the leaderboard was not written)")
    assert mine.read_text() == "# Leaderboard\n\nwhat I measured by hand\n"
    assert "1 runs: 1 trained, 0 resumed, 0 skipped, 0 failed" in result.stdout


# ---------------------------------------------------------------- the leaderboard's rows

def test_overrides_every_row_shares_are_said_once_and_each_row_lists_its_folders(two_by_two):
    cwd, result = two_by_two
    common = "batch_size=32 data.num_train=64 data.num_val=32 epochs=1"
    assert f"every row: {common}" in result.stdout
    markdown = (cwd / SWEEP_DIR / "leaderboard.md").read_text()
    assert f"Every row also has: `{common}`." in markdown
    assert markdown.count(common) == 1  # not repeated in the rows: their config cells are empty
    assert "| lenet | fake |  | 2 |" in markdown and "| mlp | fake |  | 2 |" in markdown
    names = common.replace(" ", "_")
    for row in read_leaderboard(cwd / SWEEP_DIR):
        assert row["config"] == common  # the csv keeps the whole configuration
        assert row["folders"].split() == [f"{row['model']}_fake_{names}_seed={seed}" for seed in (0, 1)]


def test_a_sweep_ends_with_its_statistics_and_pictures_beside_the_leaderboard(two_by_two):
    cwd, result = two_by_two
    folder = cwd / SWEEP_DIR
    assert "95% CI" in result.stdout and "vs best" in result.stdout  # 2 seeds a row: computed
    assert "≈: indistinguishable from it (p ≥ 0.05)" in result.stdout
    rows = read_leaderboard(folder)
    assert sorted(row["comparison"] for row in rows)[-1] == "reference"
    for row in rows:
        assert float(row["best_val_acc_ci_low"]) <= float(row["best_val_acc_mean"]) <= float(
            row["best_val_acc_ci_high"])
    markdown = (folder / "leaderboard.md").read_text()
    for name in ("leaderboard_curves.png", "leaderboard_cost.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"]({name})" in markdown


def test_a_model_typed_or_left_to_the_default_is_one_configuration(two_by_two, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(two_by_two[0] / SWEEP_DIR, folder)
    # the sweep typed model=lenet; this run leaves the model to the default, which is lenet
    single = subprocess.run([sys.executable, "-m", "cnnbench", *SMALL, "epochs=1", "seed=2",
                             f"hydra.run.dir={folder / 'default_model'}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    report.main([str(folder)])
    rows = {row["model"]: row for row in read_leaderboard(folder)}
    assert sorted(rows) == ["lenet", "mlp"]
    assert rows["lenet"]["seeds"] == "3" and rows["lenet"]["finished"] == "3"
    assert "default_model" in rows["lenet"]["folders"].split()
    accuracies = [metrics_of(folder / name)["best_val_acc"] for name in rows["lenet"]["folders"].split()]
    assert float(rows["lenet"]["best_val_acc_mean"]) == pytest.approx(statistics.fmean(accuracies))


def test_a_configuration_with_only_unfinished_runs_shows_their_numbers_so_far(two_by_two, tmp_path,
                                                                                compose_config):
    folder = tmp_path / "runs"
    shutil.copytree(two_by_two[0] / SWEEP_DIR, folder)
    # stopped by SIGTERM in its epoch 2 of 2: metrics.json says running, after 1 epoch
    with faults_at("term", "train-batch:7"), pytest.raises(Interrupted):
        train(compose_config(*RANDOM), folder / "stopped")
    stopped = metrics_of(folder / "stopped")
    assert (stopped["status"], stopped["epochs_done"]) == ("running", 1)
    report.main([str(folder)])
    rows = {row["folders"]: row for row in read_leaderboard(folder)}
    assert len(rows) == 3  # the sweep's two configurations, and this one
    row = rows["stopped"]
    # stopped, and no process at it: stale (a rerun resumes it), not running
    counts = [row[key] for key in ("seeds", "finished", "running", "stale", "failed")]
    assert counts == ["1", "0", "0", "1", "0"]
    assert float(row["best_val_acc_mean"]) == stopped["best_val_acc"]
    assert float(row["final_val_acc_mean"]) == stopped["final_val_acc"]
    assert float(row["wall_time_s"]) == pytest.approx(stopped["wall_time_s"])
    assert "| mlp | fake |" in (folder / "leaderboard.md").read_text()


# ---------------------------------------------------------------- copies of one sweep (#15)

def test_two_copies_of_a_sweep_split_its_runs_and_train_each_exactly_once(two_by_two, tmp_path):
    # the same command in two terminals at once (threads=1 each: two single-threaded processes
    # use 2 cores better than one process does); threads= is left out of folder names
    command = [sys.executable, "-m", "cnnbench", "-m", "model=lenet,mlp", "seed=0,1", *SMALL, "epochs=1",
               "threads=1"]
    copies = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [copy.communicate(timeout=300)[0] for copy in copies]
    assert [copy.returncode for copy in copies] == [0, 0], outputs
    alone, together = two_by_two[0] / SWEEP_DIR, tmp_path / SWEEP_DIR  # one copy, two copies
    runs = sorted(p.name for p in alone.iterdir() if p.is_dir())
    assert sorted(p.name for p in together.iterdir() if p.is_dir()) == runs
    # each run trained by one copy: one "run folder:" line in all, and folders as one copy leaves them
    assert sum(out.count("run folder: ") for out in outputs) == 4
    for name in runs:
        assert metrics_of(together / name)["status"] == "finished"
        assert len(list((together / name).glob("events.out.tfevents.*"))) == len(
            list((alone / name).glob("events.out.tfevents.*")))  # 2: scalars and HParams
        log = (together / name / "run.log").read_text().splitlines()
        assert len(log) == len((alone / name / "run.log").read_text().splitlines())
        assert sum("run folder: " in line for line in log) == 1  # one writer
        assert not (together / name / ".claim").exists()
    summary = r"4 runs: (\d+) trained, 0 resumed, \d+ skipped, 0 failed"
    trained = [int(re.search(summary, out)[1]) for out in outputs]
    assert sum(trained) == 4
    for out, own in zip(outputs, trained, strict=True):  # what one copy did not train, it skipped
        assert out.count("skipping ") == 4 - own
    rows = read_leaderboard(together)  # whoever wrote it last saw every run
    assert [(row["seeds"], row["finished"]) for row in rows] == [("2", "2"), ("2", "2")]


@pytest.mark.slow
def test_a_sweep_skips_a_run_another_process_holds_and_a_later_one_trains_it(tmp_path):
    from test_claims import Holder

    name = "mlp_fake_batch_size=32_data.num_train=64_data.num_val=32_epochs=1_seed=0"
    with Holder(tmp_path / "sw" / name) as holder:
        result = sweep("model=lenet,mlp", *SMALL, "epochs=1", "hydra.sweep.dir=sw", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"skipping sw/{name}: running in {holder.where}" in result.stdout
        assert "2 runs: 1 trained, 0 resumed, 0 skipped, 0 failed, 1 running elsewhere" in result.stdout
        assert f"running: {name} in {holder.where}" in result.stdout  # under the leaderboard
    # that process let go without training it (stopped before its first epoch): the next copy does
    later = sweep("model=lenet,mlp", *SMALL, "epochs=1", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert later.returncode == 0, later.stderr
    assert "2 runs: 1 trained, 0 resumed, 1 skipped, 0 failed\n" in later.stdout
    assert metrics_of(tmp_path / "sw" / name)["status"] == "finished"


@pytest.mark.slow
def test_a_run_whose_worker_was_killed_is_taken_over_and_ends_as_if_never_stopped(tmp_path, compose_config,
                                                                                   capsys):
    sweep_arguments = ["-m", *RANDOM, "seed=0,1", "hydra.sweep.dir=sweep"]
    killed = inject("kill", "train-batch:7", *sweep_arguments, cwd=tmp_path)  # in epoch 2 of the first run
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = next(tmp_path.glob("sweep/*seed=0"))
    gone = read_holder(first)
    assert gone.host == HOST and not gone.is_live()
    report.main([str(tmp_path / "sweep")])
    stale = f"stale: {first.name} (epoch 1 of 2 done): claimed by {gone.where}, which is gone"
    assert stale in capsys.readouterr().out

    later = sweep(*sweep_arguments[1:], cwd=tmp_path)  # a worker started later
    assert later.returncode == 0, later.stderr
    name = first.relative_to(tmp_path)
    assert f"taking over {name}: claimed by {gone.where}, which is gone (last heartbeat" in later.stdout
    assert f"resuming from {first / 'last.pt'} after epoch 1\n" in later.stdout
    assert "2 runs: 1 trained, 1 resumed, 0 skipped, 0 failed" in later.stdout
    train(compose_config(*RANDOM, "seed=0"), tmp_path / "straight")
    assert_same_run(first, tmp_path / "straight")
