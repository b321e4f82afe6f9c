"""Resuming a run (issue #23): what a resume may change and what it does with it, what it refuses,
and that a refused command leaves the run folder as it was; image folders are known by their images.

- "Train longer": `resume=RUN epochs=N` rebuilds the schedule for N epochs and continues it from the
  step reached, so the new epochs get the learning rates an uninterrupted N-epoch run has there;
  a new optimizer.lr is used, not ignored; the changes are recorded.
- What decides what is trained (model, data, seed, batch size...) cannot change: one line, exit 2,
  and not a byte of the run folder changes (Hydra used to rewrite .hydra/ first).
- A sweep over another image tree in the same sweep folder never reuses the first tree's results.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from conftest import write_image_folder

TINY = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=16", "device=cpu"]


def cnnbench(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnbench", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def folder_bytes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) and a hash of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def learning_rates(metrics: dict) -> list[float]:
    return [record["lr"] for record in metrics["history"]]


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "multistep"])
def test_training_longer_follows_the_schedule_of_a_run_of_the_new_length(compose_config, tmp_path, scheduler):
    schedule = [f"scheduler={scheduler}"]
    train(compose_config(*TINY, *schedule, "epochs=2"), tmp_path / "run")
    longer = train(compose_config(*TINY, *schedule, "epochs=4"), tmp_path / "run", resume_from=True)
    short = train(compose_config(*TINY, *schedule, "epochs=2"), tmp_path / "short")
    straight = train(compose_config(*TINY, *schedule, "epochs=4"), tmp_path / "straight")
    # the first two epochs kept their rates; the last two are the 4-epoch run's, to the last bit
    assert learning_rates(longer) == learning_rates(short) + learning_rates(straight)[2:]
    if scheduler == "cosine":  # the case: 0.025, 0.0 then 0.007, 0.0 (not 0.025, 0.05)
        assert [round(lr, 3) for lr in learning_rates(longer)] == [0.025, 0.0, 0.007, 0.0]
    assert longer["epochs_done"] == 4 and longer["status"] == "finished"
    assert longer["resumes"][-1]["epoch"] == 2 and longer["resumes"][-1]["changed"]["epochs"] == [2, 4]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 4


def test_a_new_learning_rate_on_resume_is_used(compose_config, tmp_path):
    train(compose_config(*TINY, "epochs=1"), tmp_path / "run")
    resumed = train(compose_config(*TINY, "epochs=2", "optimizer.lr=0.2"), tmp_path / "run", resume_from=True)
    straight = train(compose_config(*TINY, "epochs=2", "optimizer.lr=0.2"), tmp_path / "straight")
    assert learning_rates(resumed)[1] == learning_rates(straight)[1]
    assert resumed["resumes"][-1]["changed"]["optimizer.lr"] == [0.05, 0.2]


def test_a_resume_that_changes_nothing_is_still_exact(compose_config, tmp_path):
    train(compose_config(*TINY, "epochs=2", "checkpoint.every_n_steps=3"), tmp_path / "run")
    # a finished run resumed again: nothing left to train, nothing changed, the same numbers
    again = train(compose_config(*TINY, "epochs=2", "checkpoint.every_n_steps=3"), tmp_path / "run",
                  resume_from=True)
    assert again["resumes"][-1]["changed"] == {} and again["epochs_done"] == 2


@pytest.mark.parametrize("change, named", [
    ("model=mlp", "model=mlp (the run has lenet)"),
    ("data.augment.hflip=true", "data.augment.hflip=true (the run has false)"),
    ("seed=1", "seed=1 (the run has 0)"),
    ("batch_size=32", "batch_size=32 (the run has 16)"),
    ("label_smoothing=0.1", "label_smoothing=0.1 (the run has 0.0)"),
])
def test_a_resume_that_changes_what_is_trained_is_refused_and_changes_nothing(tmp_path, change, named):
    assert cnnbench(*TINY, "epochs=1", "hydra.run.dir=run", cwd=tmp_path).returncode == 0
    before = folder_bytes(tmp_path / "run")
    refused = cnnbench(f"resume={tmp_path / 'run'}", change, "epochs=2", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnbench: error: resume=") and named in lines[0]
    assert "Traceback" not in refused.stderr
    assert folder_bytes(tmp_path / "run") == before  # .hydra/overrides.yaml too
    # and a plain resume still works: the refused one left no trace in the run's record
    again = cnnbench(f"resume={tmp_path / 'run'}", "epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "model=mlp" not in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()


def test_fewer_epochs_than_done_is_refused(compose_config, tmp_path):
    train(compose_config(*TINY, "epochs=2"), tmp_path / "run")
    with pytest.raises(CnnbenchError, match="epochs=1: this run has done 2 epochs already; give epochs=2 or more"):
        train(compose_config(*TINY, "epochs=1"), tmp_path / "run", resume_from=True)


def test_resuming_a_folder_that_is_not_a_run_leaves_it_alone(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine\n")
    refused = cnnbench("resume=notes", *TINY, cwd=tmp_path)
    assert refused.returncode == 2 and "notes/last.pt does not exist" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]  # no run.log, no .hydra


def test_a_run_that_finds_its_folder_taken_changes_nothing_there(tmp_path):
    # Two runs started in the same second meet at one default folder name; here both name the
    # folder with an interpolation, which only Hydra resolves, so the second meets the first's
    # claim inside the run, where Hydra used to have rewritten .hydra/ already.
    folder = "hydra.run.dir=out/${now:%Y}"
    first = subprocess.Popen([sys.executable, "-m", "cnnbench", *TINY, "epochs=30", folder], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = next(iter((tmp_path / "out").glob("*")), None) if (tmp_path / "out").exists() else None
        for _ in range(600):  # until the first run has written its first checkpoint
            run = next(iter((tmp_path / "out").glob("*")), None) if (tmp_path / "out").exists() else None
            if run is not None and (run / "last.pt").exists() and (run / ".hydra" / "overrides.yaml").exists():
                break
            subprocess.run(["sleep", "0.1"])
        hydra_files = {name: (run / ".hydra" / name).read_bytes() for name in ("config.yaml", "overrides.yaml")}
        second = cnnbench(*TINY, "epochs=2", "model=mlp", folder, cwd=tmp_path)
        assert second.returncode == 2 and "is running in" in second.stderr, second.stderr
        assert {name: (run / ".hydra" / name).read_bytes() for name in hydra_files} == hydra_files
    finally:
        first.kill()
        first.wait()


def test_a_sweep_rerun_that_skips_its_runs_leaves_their_folders_as_they_were(tmp_path):
    sweep = ["-m", *TINY, "epochs=1", "model=lenet,mlp", "hydra.sweep.dir=sweep"]
    assert cnnbench(*sweep, cwd=tmp_path).returncode == 0
    runs = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith(".")]
    before = {run.name: folder_bytes(run) for run in runs}
    again = cnnbench(*sweep, "threads=1", cwd=tmp_path)  # another value of a key left out of names
    assert again.returncode == 0 and again.stdout.count("skipping ") == 2, again.stdout
    assert {run.name: folder_bytes(run) for run in runs} == before


def image_sweep(root: Path) -> list[str]:
    return ["-m", "data=imagefolder", f"data.root={root}", "data.image_size=16", "data.val_fraction=0.25",
            "model=lenet,mlp", "epochs=1", "batch_size=8", "device=cpu", "hydra.sweep.dir=sweep"]


def test_a_sweep_over_another_image_tree_never_reuses_the_first_trees_results(tmp_path):
    write_image_folder(tmp_path / "v1", classes=("cat", "dog"), per_class=12, size=(16, 16))
    write_image_folder(tmp_path / "v2", classes=("cat", "dog", "fox"), per_class=12, size=(16, 16))
    first = cnnbench(*image_sweep(tmp_path / "v1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    before = {run.name: folder_bytes(run) for run in runs}
    second = cnnbench(*image_sweep(tmp_path / "v2"), cwd=tmp_path)
    assert second.returncode == 1
    assert "skipping" not in second.stdout  # v1's finished runs are not taken for v2's
    assert second.stderr.count("holds other images than the run trained on") == 2, second.stderr
    assert "give this sweep its own hydra.sweep.dir" in second.stderr and "Traceback" not in second.stderr
    assert {run.name: folder_bytes(run) for run in runs} == before  # v1's results are intact
    # in a sweep folder of its own, v2 trains, and each run records what it trained on
    third = cnnbench(*image_sweep(tmp_path / "v2")[:-1], "hydra.sweep.dir=sweep2", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    metrics = [json.loads(path.read_text()) for path in (tmp_path / "sweep2").glob("*/metrics.json")]
    assert [m["data_identity"]["classes"] for m in metrics] == [["cat", "dog", "fox"]] * 2


def test_a_resume_onto_other_images_is_refused_and_a_copy_of_the_tree_is_the_same_data(tmp_path, compose_config):
    write_image_folder(tmp_path / "v1", classes=("cat", "dog"), per_class=12, size=(16, 16))
    common = ["data=imagefolder", "data.image_size=16", "data.val_fraction=0.25", "batch_size=8", "device=cpu"]
    train(compose_config(*common, f"data.root={tmp_path / 'v1'}", "epochs=1"), tmp_path / "run")
    (tmp_path / "v1" / "cat" / "extra.png").write_bytes((tmp_path / "v1" / "dog" / "0.png").read_bytes())
    with pytest.raises(CnnbenchError, match=r"holds other images than the run trained on \(25 image files now, "
                                            r"24 then, classes cat, dog\)"):
        train(compose_config(*common, f"data.root={tmp_path / 'v1'}", "epochs=2"), tmp_path / "run",
              resume_from=True)
    (tmp_path / "v1" / "cat" / "extra.png").unlink()
    shutil.copytree(tmp_path / "v1", tmp_path / "copy")  # new modification times, the same images
    resumed = train(compose_config(*common, f"data.root={tmp_path / 'copy'}", "epochs=2"), tmp_path / "run",
                    resume_from=True)
    assert resumed["epochs_done"] == 2


def test_the_run_records_its_hydra_files_once_accepted(tmp_path):
    assert cnnbench(*TINY, "epochs=1", "hydra.run.dir=run", cwd=tmp_path).returncode == 0
    hydra = tmp_path / "run" / ".hydra"
    assert yaml.safe_load((hydra / "overrides.yaml").read_text()) == [*TINY, "epochs=1"]
    assert yaml.safe_load((hydra / "config.yaml").read_text())["epochs"] == 1
    assert yaml.safe_load((hydra / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]["model"] == "lenet"
