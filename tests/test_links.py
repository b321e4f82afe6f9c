"""Links in someone else's folders (issue #23): a run folder, a sweep folder or a cache copied from
elsewhere may hold symbolic links at the names cnnbench writes (`.hydra/config.yaml ->
../../.bashrc`). No write of cnnbench's, nor Hydra's before it, goes through one: a folder holding
one is refused in one line before anything is written, files written whole replace a link instead
of following it, and their temporary files are created exclusively under names nobody can guess.
In every test the file a link points to keeps every byte."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from test_cli import assert_one_line_error
from test_configs import run_cli

from cnnbench import files
from cnnbench.cli import report
from cnnbench.data import build_data
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.files import check_output
from cnnbench.inference.predict import write_predictions
from cnnbench.runtime.host import HOST
from cnnbench.sweep.claims import claim

TINY = ["data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1", "device=cpu",
        "model=mlp", "model.hidden=[16]"]
PRECIOUS = b"export PATH=$HOME/bin:$PATH\n"  # what a user's ~/.bashrc holds


def victim(tmp_path: Path) -> Path:
    """A file of the user's outside every folder cnnbench writes in."""
    path = tmp_path / "bashrc"
    path.write_bytes(PRECIOUS)
    return path


def plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def test_a_link_at_a_temporary_files_name_is_not_written_through(tmp_path):
    target = victim(tmp_path)
    path = tmp_path / "run" / "metrics.json"
    # the name the previous release wrote beside metrics.json: host and process id, both guessable
    plant(path.with_name(f".metrics.json.{HOST}.{os.getpid()}.tmp"), target)
    files.write_text_whole(path, '{"status": "running"}')
    assert target.read_bytes() == PRECIOUS
    assert json.loads(path.read_text()) == {"status": "running"}


def test_a_run_replaces_links_at_its_files_names_and_follows_none(compose_config, tmp_path):
    target = victim(tmp_path)
    run_dir = tmp_path / "run"
    for name in ("curves.png", "confusion_matrix.png", "metrics.json", "config.json"):
        plant(run_dir / name, target)
    train(compose_config(*TINY), run_dir)
    assert target.read_bytes() == PRECIOUS
    for name in ("curves.png", "confusion_matrix.png", "metrics.json", "config.json"):
        assert not (run_dir / name).is_symlink() and (run_dir / name).stat().st_size > 0


@pytest.mark.parametrize("name", [".hydra/config.yaml", "run.log", ".claim", ".hydra"])
def test_a_run_folder_with_a_link_where_hydra_or_cnnbench_writes_is_refused_in_one_line(tmp_path, name):
    target = victim(tmp_path)
    plant(tmp_path / "run" / name, target if name != ".hydra" else tmp_path)
    before = sorted(os.listdir(tmp_path))
    result = run_cli(*TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(result, f"run/{name} is a symbolic link", "remove the link")
    assert result.returncode == 2
    assert target.read_bytes() == PRECIOUS and sorted(os.listdir(tmp_path)) == before


def test_a_sweep_folder_with_a_link_in_a_run_folder_is_refused_before_any_job(tmp_path):
    target = victim(tmp_path)
    run = tmp_path / "sw" / "mlp_fake_seed=0"
    (run / ".hydra").mkdir(parents=True)
    plant(run / "run.log", target)
    result = run_cli("-m", *TINY, "seed=0,1", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert_one_line_error(result, "sw/mlp_fake_seed=0/run.log is a symbolic link")
    assert result.returncode == 2
    assert target.read_bytes() == PRECIOUS
    assert sorted(os.listdir(tmp_path / "sw")) == ["mlp_fake_seed=0"]  # no job ran, no multirun.yaml


def test_a_claim_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    target = victim(tmp_path)
    plant(tmp_path / "run" / ".claim", target)
    with pytest.raises(CnnbenchError, match=r"\.claim"):
        with claim(tmp_path / "run"):
            pass
    assert target.read_bytes() == PRECIOUS and (tmp_path / "run" / ".claim").is_symlink()


def test_a_report_reads_no_run_file_through_a_link(compose_config, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    train(compose_config(*TINY), elsewhere)
    linked = tmp_path / "sweep" / "linked"
    plant(linked / "metrics.json", elsewhere / "metrics.json")
    train(compose_config(*TINY, "seed=1"), tmp_path / "sweep" / "own")
    report.main([str(tmp_path / "sweep")])
    said = capsys.readouterr()
    assert said.err.splitlines() == [f"cnnbench-report: warning: {linked / 'metrics.json'} is damaged "
                                     "(a symbolic link, not a file); left out of the table"]
    assert "1 runs: 1 finished" in said.out


def test_predictions_are_never_written_through_a_link_at_out(tmp_path):
    earlier = tmp_path / "elsewhere" / "preds.csv"  # someone's predictions, in another folder
    earlier.parent.mkdir()
    earlier.write_text("file,class_1,probability_1\nx.png,cat,0.900000\n")
    plant(tmp_path / "out" / "preds.csv", earlier)
    with pytest.raises(CnnbenchError, match="preds.csv is a symbolic link .*: cnnbench does not write"):
        check_output(tmp_path / "out" / "preds.csv", "cnnbench-predict")
    rows = [{"file": "y.png", "top": [{"class": "dog", "index": 1, "probability": 0.75}]}]
    write_predictions(rows, tmp_path / "out" / "preds.csv", "best.pt")  # the writer on its own too
    assert earlier.read_text() == "file,class_1,probability_1\nx.png,cat,0.900000\n"
    assert "y.png,dog,0.750000" in (tmp_path / "out" / "preds.csv").read_text()


def test_an_image_cache_holding_links_is_rebuilt_and_read_through_none(compose_config, tmp_path, monkeypatch,
                                                                       caplog):
    root, cache = write_image_folder(tmp_path / "images"), tmp_path / "cache"
    monkeypatch.setenv("CNNBENCH_CACHE", str(cache))
    cfg = compose_config("data=imagefolder", f"data.root={root}", "data.image_size=16", "num_workers=0")
    first = build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu"))
    (folder,) = [path for path in cache.iterdir() if path.is_dir()]
    for name in ("pixels.u8", "index.json"):  # the same bytes, kept elsewhere, linked in
        (tmp_path / "planted").mkdir(exist_ok=True)
        (folder / name).rename(tmp_path / "planted" / name)
        plant(folder / name, tmp_path / "planted" / name)
    with caplog.at_level(logging.WARNING, logger="cnnbench"):
        data = build_data(cfg.data, batch_size=8, seed=0, device=torch.device("cpu"))
    assert "index.json, pixels.u8: a symbolic link, not a file cnnbench wrote" in caplog.text
    assert data.train.files == first.train.files and len(data.train.files) == 22  # 30 less 4 val, 4 test
    assert not any(path.is_symlink() for path in folder.iterdir())  # decoded again, into files of its own
