"""The `cnnbench` command as a user meets it: a run, a resume, and one-line errors on bad input."""

import json

import pytest
from conftest import write_image_folder
from test_configs import run_cli


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("cnnbench: error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_run_prints_its_folder_and_resume_by_folder_continues_it(tmp_path, idx_root):
    first = run_cli("data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1", "epochs=1",
                    "model=mlp", "optimizer=adam", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = next((tmp_path / "outputs").glob("*/*_mlp_mnist"))
    assert f"run folder: {run_dir}" in first.stdout + first.stderr
    # The run's own overrides come back from its folder: only the new epoch count is given.
    second = run_cli(f"resume={run_dir}", "epochs=2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and metrics["model"] == "mlp" and metrics["data"] == "mnist"
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1  # no second folder


@pytest.mark.slow
def test_resume_true_with_the_run_folder_continues_it_as_resume_by_folder_does(tmp_path):
    # README: `resume=true` with `hydra.run.dir=FOLDER` does what resume=FOLDER does: the run's own
    # overrides come back from its folder, only what changes is given.
    options = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "model=mlp"]
    first = run_cli(*options, "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    saved = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    second = run_cli("resume=true", "hydra.run.dir=run", "epochs=2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"resuming from {tmp_path / 'run' / 'last.pt'} after epoch 1" in second.stdout + second.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["epochs_done"], metrics["model"], metrics["data"]) == (2, "mlp", "fake")
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    # the folder still knows how the run was made: a later resume=run finds its overrides
    overrides = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert all(option in overrides for option in options), (saved, overrides)
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]  # no second run folder


@pytest.mark.parametrize("arguments, fragments", [
    (["epochs=0"], ["epochs=0 is out of range: must be an integer >= 1"]),
    (["batch_size=0"], ["batch_size=0 is out of range"]),
    (["optimizer.lr=0"], ["optimizer.lr=0 is out of range: must be a number > 0"]),
    (["data=imagefolder"], ["data.root is required"]),
    (["data=mnist", "data.root=nowhere", "data.download=false", "data.val_split=0.1"],
     ["mnist: files not found", "train-images-idx3-ubyte", "nowhere/MNIST/raw"]),
    (["device=cuda:7"], ["device=cuda:7: no such device"]),
])
def test_bad_values_give_one_line_and_exit_code_2(tmp_path, arguments, fragments):
    result = run_cli(*arguments, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2


def test_image_folder_with_a_single_class_is_one_line(tmp_path):
    write_image_folder(tmp_path / "pets", classes=("cat",), per_class=2)
    result = run_cli("data=imagefolder", f"data.root={tmp_path / 'pets'}", cwd=tmp_path)
    assert_one_line_error(result, "1 class folder (cat)", "at least 2")
