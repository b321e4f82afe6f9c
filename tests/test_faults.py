"""What cnnbench promises when things go wrong, one section per promise (issue #7).

1. Killed at any point (SIGKILL), a run resumes from its last checkpoint and ends with the same
   metrics and weights as a run that was never interrupted.
2. Checkpoints are written atomically; mid-epoch checkpoints (checkpoint.every_n_steps) resume
   exactly too.
3. SIGINT and SIGTERM finish the step, save last.pt, say how to resume, and exit 130 / 143.
4. A NaN or infinite loss stops the run naming epoch and step, keeping the last good
   checkpoints (on_nan=stop), or skips the batch (on_nan=skip_batch).
5. An unreadable image is named (data.bad_images=error) or left out and listed (skip); empty class
   folders, other files and hidden files are said.
6. Bad config values get one line naming key, value and allowed range, before any data loads.
7. A run folder is never written over unless resuming; an unwritable folder or a full disk is said
   in one line and loses no earlier checkpoint.
"""

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import progress, write_idx_dataset, write_image_folder
from test_cli import assert_one_line_error
from test_configs import run_cli

from cnnbench.config.checks import check_config
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.faults import MAX_SKIPPED_IN_A_ROW, DivergedError
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError

INJECT = Path(__file__).parent / "fault_injection.py"

# A small run whose every random draw matters: shuffling, per-image crops and flips, dropout,
# SGD momentum and a cosine schedule over 3 epochs of 16 steps (512 images, batch 32).
RUN = ["data=fake", "model=mlp", "model.hidden=[64]", "model.dropout=0.3", "data.augment.crop_padding=2",
       "data.augment.hflip=true", "batch_size=32", "epochs=3", "device=cpu", "num_workers=0"]
# The same on the DataLoader path: per-image transforms, in a worker process.
RUN_DATALOADER = [*RUN[:-1], "data.loader=torch", "num_workers=1"]
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_images")


def inject(fault: str, at: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run cnnbench with `fault` at `at` (see tests/fault_injection.py)."""
    return subprocess.run([sys.executable, str(INJECT), fault, at, *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=300, preexec_fn=hear_ctrl_c)


def hear_ctrl_c() -> None:
    """For a child process: take SIGINT as a terminal user's process does. The tests may run as
    a background job of a script, which starts with SIGINT ignored, and cnnbench keeps it so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def history(run_dir: Path) -> list[dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return [{key: record[key] for key in COMPARED} for record in metrics["history"]]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same per-epoch metrics, same final weights (bit for bit), same best checkpoint."""
    assert history(run_dir) == history(reference)
    for name in ("last.pt", "best.pt"):
        ours, theirs = load_checkpoint(run_dir / name), load_checkpoint(reference / name)
        assert ours["epoch"] == theirs["epoch"] and progress(ours).step == progress(theirs).step == 0
        assert all(torch.equal(ours["model"][key], theirs["model"][key]) for key in theirs["model"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """uninterrupted(loader) -> the reference: that small run (memory: RUN, dataloader:
    RUN_DATALOADER) trained start to finish without a fault, once per module, when first asked for."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    runs: dict[str, Path] = {}

    def reference(loader: str) -> Path:
        if loader not in runs:
            arguments = {"memory": RUN, "dataloader": RUN_DATALOADER}[loader]
            result = run_cli(*arguments, f"hydra.run.dir={loader}", cwd=folder)
            assert result.returncode == 0, result.stderr
            runs[loader] = folder / loader
        return runs[loader]
    return reference


# ---------------------------------------------------------------- 1, 2: kill -9 and resume

SLOW = [pytest.mark.slow]


@pytest.mark.parametrize("at, extra, loader, saved_epoch, saved_step", [
    # 17 batches = the TensorBoard sample + epoch 1's 16: killed in epoch 2, step 5
    pytest.param("train-batch:22", [], "memory", 1, 0, id="during-an-epoch", marks=SLOW),
    # not slow: the quick run's one real kill-and-resume (dropout, crops, flips, momentum, a
    # schedule, replayed from the middle of an epoch), so a refactor gets a fast signal
    pytest.param("train-batch:22", ["checkpoint.every_n_steps=4"], "memory", 1, 4,
                 id="after-a-mid-epoch-checkpoint"),
    pytest.param("val-batch:6", [], "memory", 1, 0, id="during-evaluation",  # 4 val batches an epoch
                 marks=SLOW),
    pytest.param("save:last.pt:2", [], "memory", 1, 0, id="during-a-checkpoint-write", marks=SLOW),
    pytest.param("train-batch:30", ["checkpoint.every_n_steps=5"], "dataloader", 1, 10,
                 id="dataloader-path-after-a-mid-epoch-checkpoint", marks=SLOW),
])
def test_killed_run_resumes_to_the_same_result(tmp_path, uninterrupted, at, extra, loader,
                                               saved_epoch, saved_step):
    arguments = RUN if loader == "memory" else RUN_DATALOADER
    killed = inject("kill", at, *arguments, *extra, "hydra.run.dir=run", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = tmp_path / "run"
    checkpoint = load_checkpoint(run_dir / "last.pt")  # the previous checkpoint is intact
    assert (checkpoint["epoch"], progress(checkpoint).step) == (saved_epoch, saved_step)

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted(loader))
    assert not list(run_dir.glob(".*.tmp"))  # the half-written file is gone


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    killed = inject("kill", "save:last.pt:2", *RUN, "epochs=2", "hydra.run.dir=run", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    half_written = list((tmp_path / "run").glob(".last.pt.*.tmp"))
    assert len(half_written) == 1 and half_written[0].read_bytes().startswith(b"PK")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_done"] == 1


@pytest.mark.parametrize("saved_by, rank, world, expected", [
    (2, 0, 2, (1.0, 3, 32)), (2, 1, 2, (2.0, 5, 32)),  # as saved: each process its own
    (2, 0, 1, (3.0, 8, 64)),  # fewer processes now: rank 0 carries every process's sums on
    (1, 0, 2, (1.0, 3, 32)), (1, 1, 2, (0.0, 0, 0)),  # more: the newcomer starts from nothing
])
def test_a_mid_epoch_resume_on_another_number_of_processes_counts_each_saved_image_once(
        saved_by, rank, world, expected, monkeypatch):
    # the epoch's sums as last.pt saves them (EpochSums.saved: every process's, in rank order)
    from cnnbench.engine.state import EpochSums
    from cnnbench.runtime import distributed

    saved = {"loss": torch.tensor([1.0, 2.0][:saved_by]), "correct": torch.tensor([3, 5][:saved_by]),
             "seen": [32, 32][:saved_by], "seconds": 1.5}
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    sums = EpochSums(torch.device("cpu"), saved)  # the release before: IndexError for rank 1 of 2
    assert (sums.loss.item(), sums.correct.item(), sums.seen) == expected
    assert sums.seconds() >= 1.5


@pytest.mark.slow
def test_mid_epoch_checkpoint_refuses_a_different_epoch_length(tmp_path):
    inject("kill", "train-batch:22", *RUN, "checkpoint.every_n_steps=4", "hydra.run.dir=run", cwd=tmp_path)
    result = run_cli(f"resume={tmp_path / 'run'}", "batch_size=64", cwd=tmp_path)
    assert_one_line_error(result, "saved 4 steps into an epoch of 16 steps", "8 steps per epoch",
                          "batch_size")


# ---------------------------------------------------------------- 3: SIGINT and SIGTERM

@pytest.mark.slow
@pytest.mark.parametrize("fault, exit_code, name", [("term", 143, "SIGTERM"), ("int", 130, "SIGINT")])
def test_a_signal_saves_the_step_says_how_to_resume_and_exits_128_plus_its_number(
        tmp_path, uninterrupted, fault, exit_code, name):
    stopped = inject(fault, "train-batch:22", *RUN, "hydra.run.dir=run", cwd=tmp_path)
    assert stopped.returncode == exit_code, stopped.stderr
    run_dir = tmp_path / "run"
    assert f"cnnbench: {name}: stopped at epoch 2, step 5 of 16; saved {run_dir}/last.pt. " \
           f"Continue with: cnnbench resume={run_dir}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert (checkpoint["epoch"], progress(checkpoint).step) == (1, 5)

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted("memory"))


@pytest.mark.slow
def test_a_signal_during_evaluation_keeps_the_epochs_training(tmp_path, uninterrupted):
    stopped = inject("term", "val-batch:6", *RUN, "hydra.run.dir=run", cwd=tmp_path)
    assert stopped.returncode == 143 and "in epoch 2's evaluation" in stopped.stderr
    assert progress(load_checkpoint(tmp_path / "run" / "last.pt")).step == 16
    assert run_cli(f"resume={tmp_path / 'run'}", cwd=tmp_path).returncode == 0
    assert_same_run(tmp_path / "run", uninterrupted("memory"))


@pytest.mark.slow
def test_a_process_started_immune_to_ctrl_c_stays_immune(tmp_path):
    # as `nohup cnnbench ... &` from a script: SIGINT ignored from the start
    result = subprocess.run([sys.executable, str(INJECT), "int", "train-batch:22", *RUN, "hydra.run.dir=run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_done"] == 3


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    stopped = inject("int-twice", "train-batch:22", *RUN, "hydra.run.dir=run", cwd=tmp_path)
    assert stopped.returncode == 130
    assert "stopped at once" in stopped.stderr and "Traceback" not in stopped.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the last saved progress
    # at once: not after the step, so nothing of epoch 2 was saved (one Ctrl-C saves step 5)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (last["epoch"], progress(last).step) == (1, 0)
    assert "stopped at epoch" not in stopped.stderr  # (what one Ctrl-C says after saving the step)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["status"], metrics["epochs_done"]) == ("running", 1)


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_process_after_the_same_step(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # 2 processes x 256 images = 8 steps an epoch each; they compare notes every 4 steps
    arguments = [*RUN, "log_every=4"]
    straight = subprocess.run([*torchrun, "-m", "cnnbench", *arguments, "hydra.run.dir=straight"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Each process signals itself at its 12th batch: rank 0 (which also drew the TensorBoard
    # sample) in epoch 2's step 3, rank 1 in its step 4; both stop after step 5, where they meet.
    stopped = subprocess.run([*torchrun, str(INJECT), "term", "train-batch:12", *arguments,
                              "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0
    assert "cnnbench: SIGTERM: stopped at epoch 2, step 5 of 8" in stopped.stderr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (checkpoint["epoch"], progress(checkpoint).step) == (1, 5)
    resumed = subprocess.run([*torchrun, "-m", "cnnbench", f"resume={tmp_path / 'run'}"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "run", tmp_path / "straight")


@pytest.mark.slow
def test_ctrl_c_from_outside_stops_a_sweep_and_a_rerun_finishes_it(tmp_path):
    # 20 epochs: the signal surely lands in the first job, however slowly this test polls
    sweep = ["-m", *RUN, "epochs=20", "seed=0,1", "hydra.sweep.dir=sweep"]
    process = subprocess.Popen([sys.executable, "-m", "cnnbench", *sweep], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True, preexec_fn=hear_ctrl_c)
    try:
        deadline = time.monotonic() + 300  # a stalled child fails the test, it does not hang the suite
        while not list(tmp_path.glob("sweep/*seed=0/last.pt")) and process.poll() is None:
            assert time.monotonic() < deadline, "the sweep saved no last.pt within 300 s"
            time.sleep(0.1)  # until the first run has saved its first epoch
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate()[1]
    assert "SIGINT: stopped" in stderr and "Rerun the same command to continue the sweep" in stderr
    assert not list(tmp_path.glob("sweep/*seed=1"))  # the sweep stopped: no next job

    rerun = run_cli(*sweep, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 runs: 1 trained, 1 resumed, 0 skipped, 0 failed" in rerun.stdout
    first_run = next(tmp_path.glob("sweep/*seed=0"))
    assert json.loads((first_run / "metrics.json").read_text())["epochs_done"] == 20


# ---------------------------------------------------------------- 4: NaN and infinite losses

def poison_losses(monkeypatch, bad_steps: set[int]) -> None:
    """Make the training loss NaN at the given optimizer steps (counted over the run, from 0)."""
    import cnnbench.engine.train

    real = cnnbench.engine.train.classification_loss
    calls = iter(range(10**6))

    def loss(*args, **kwargs):
        value, logits = real(*args, **kwargs)
        return (value * float("nan") if next(calls) in bad_steps else value), logits

    monkeypatch.setattr(cnnbench.engine.train, "classification_loss", loss)


def fake_run(compose_config, *overrides: str):
    return compose_config("data=fake", "batch_size=32", "device=cpu", "epochs=2", *overrides)


def test_a_nan_loss_stops_the_run_naming_epoch_and_step(compose_config, tmp_path, monkeypatch):
    poison_losses(monkeypatch, {16 + 6})  # epoch 2, its 7th step
    with pytest.raises(DivergedError, match=r"loss became NaN or infinite at epoch 2, step 7; checkpoints "
                                            r"saved before it stay as they were; "
                                            r".*optimizer.lr.*precision=fp32"):
        train(fake_run(compose_config), tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(w).all() for w in last["model"].values())
    # best.pt is kept too: epoch 1's, the same weights as last.pt, none of them NaN
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert (best["epoch"], progress(best).step) == (1, 0)
    assert all(torch.equal(best["model"][key], weights) for key, weights in last["model"].items())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["best_val_acc"] == progress(best).best_val_acc


def test_a_nan_loss_is_never_saved_in_a_mid_epoch_checkpoint(compose_config, tmp_path, monkeypatch):
    poison_losses(monkeypatch, {16 + 2})  # epoch 2, step 3; a checkpoint is due after step 4
    with pytest.raises(DivergedError, match="epoch 2, step 3"):
        train(fake_run(compose_config, "checkpoint.every_n_steps=4"), tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (last["epoch"], progress(last).step) == (1, 0)


def test_non_finite_weights_are_never_saved_though_every_loss_was_finite(compose_config, tmp_path,
                                                                         monkeypatch):
    import cnnbench.engine.train

    real = cnnbench.engine.train.train_epoch

    def overflowing(run, epoch, *args):  # epoch 2's last step overflows a weight; its losses were finite
        trained = real(run, epoch, *args)
        if epoch == 1:
            with torch.no_grad():
                next(run.model.parameters())[0].fill_(float("inf"))
        return trained

    monkeypatch.setattr(cnnbench.engine.train, "train_epoch", overflowing)
    with pytest.raises(DivergedError, match=r"^the weights became NaN or infinite in epoch 2, with every "
                                            r"loss read finite; checkpoints saved before it stay as they "
                                            r"were; "):
        train(fake_run(compose_config), tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        saved = load_checkpoint(tmp_path / "run" / name)
        assert saved["epoch"] == 1 and all(torch.isfinite(w).all() for w in saved["model"].values())


def test_on_nan_skip_batch_leaves_bad_batches_out_and_counts_them(compose_config, tmp_path, monkeypatch):
    poison_losses(monkeypatch, {3, 20})
    metrics = train(fake_run(compose_config, "on_nan=skip_batch"), tmp_path / "run")
    assert metrics["status"] == "finished" and metrics["skipped_batches"] == 2
    assert [record["train_images"] for record in metrics["history"]] == [15 * 32, 15 * 32]
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(w).all() for w in last["model"].values())


def test_on_nan_skip_batch_gives_up_when_every_batch_is_bad(compose_config, tmp_path, monkeypatch):
    poison_losses(monkeypatch, set(range(16 + 2, 100)))
    with pytest.raises(DivergedError, match=f"{MAX_SKIPPED_IN_A_ROW} batches in a row"):
        train(fake_run(compose_config, "on_nan=skip_batch"), tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_a_diverged_run_exits_non_zero_with_one_line(tmp_path):
    # a learning rate no model survives: the loss overflows within a few steps
    result = run_cli("data=fake", "device=cpu", "optimizer.lr=1e30", "epochs=1", cwd=tmp_path)
    assert_one_line_error(result, "loss became NaN or infinite at epoch 1, step", "optimizer.lr")
    assert result.returncode == 2


# ---------------------------------------------------------------- 5: bad images and odd files

def damage(tree: Path) -> tuple[Path, Path]:
    """A truncated PNG and a text file named .jpg in `tree`, plus files that are not data."""
    truncated, not_an_image = tree / "cat" / "truncated.png", tree / "dog" / "notes.jpg"
    truncated.write_bytes((tree / "cat" / "0.png").read_bytes()[:120])
    not_an_image.write_text("not a picture")
    (tree / "cat" / "labels.txt").write_text("cat")
    (tree / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tree / ".ipynb_checkpoints").mkdir()  # torchvision would make this a class
    return truncated, not_an_image


def image_run(compose_config, root: Path, *overrides: str):
    return compose_config("data=imagefolder", f"data.root={root}", "data.image_size=16",
                          "num_workers=0", "epochs=1", "batch_size=4", "device=cpu", *overrides)


def test_an_unreadable_image_is_named(compose_config, image_root, tmp_path):
    damage(image_root)
    with pytest.raises(CnnbenchError, match=r"(truncated|notes)\.(png|jpg): not a readable image "
                                            r"\(.*\); replace or delete it, or set data.bad_images=skip"):
        train(image_run(compose_config, image_root, "data.val_fraction=0.5"), tmp_path / "run")


def test_bad_images_skip_leaves_them_out_and_lists_them(compose_config, image_root, tmp_path, caplog):
    truncated, not_an_image = damage(image_root)
    metrics = train(image_run(compose_config, image_root, "data.bad_images=skip", "data.val_fraction=0.5",
                              "num_workers=1"), tmp_path / "run")
    assert metrics["skipped_images"] == sorted([str(truncated), str(not_an_image)])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["classes"] == ["cat", "dog", "fox"]
    said = caplog.text
    assert "left out 1 files that are not images by extension (1 .txt) and 2 hidden files or folders" in said
    assert f"skipping {truncated}: not a readable image" in said


def bytes_named(path: Path, name: bytes) -> bytes:
    """The path of `name` (bytes that are not UTF-8) in the folder `path`; skips the test where the
    file system takes only UTF-8 names (macOS)."""
    full = os.fsencode(path) + b"/" + name
    try:
        os.close(os.open(full, os.O_CREAT | os.O_WRONLY))
    except OSError:
        pytest.skip("this file system takes only UTF-8 file names")
    return full


def test_file_names_that_are_not_utf8_train_and_are_written_as_their_bytes(tmp_path):
    root = write_image_folder(tmp_path / "odd-names", per_class=4, size=(16, 16))
    renamed = bytes_named(root / "cat", b"caf\xe9.png")
    os.replace(root / "cat" / "0.png", renamed)
    unreadable = bytes_named(root / "dog", b"\xff\xfe.png")  # empty: not an image
    # PYTHONIOENCODING=utf-8: stdout as strict as in an en_US.UTF-8 locale (C.UTF-8 is lenient)
    result = subprocess.run([sys.executable, "-m", "cnnbench", "data=imagefolder", f"data.root={root}",
                             "data.image_size=16", "data.bad_images=skip", "epochs=1", "device=cpu",
                             "num_workers=0", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True,
                            timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    # JSON holds them as Python's surrogateescape escapes: json.load, then os.fsencode, gives the bytes
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [os.fsencode(path) for path in metrics["skipped_images"]] == [unreadable]
    index = json.loads(next(Path(os.environ["CNNBENCH_CACHE"]).glob("odd-names-*/index.json")).read_text())
    # the index names its files relative to the tree: a tree that moves keeps its cache
    tree = os.fsencode(root) + b"/"
    assert renamed.removeprefix(tree) in [os.fsencode(path) for path in index["files"]]
    assert [os.fsencode(path) for path in index["unreadable"]] == [unreadable.removeprefix(tree)]
    # the console and run.log say them as their own bytes, as ls does to a pipe
    assert b"skipping " + unreadable in result.stdout
    assert b"skipping " + unreadable in (tmp_path / "run" / "run.log").read_bytes()


def test_an_empty_class_folder_is_named(compose_config, image_root):
    (image_root / "owl").mkdir()
    (image_root / "owl" / "readme.md").write_text("owls to come")
    with pytest.raises(CnnbenchError, match=r"class folder .*/owl holds no image files \(.jpg .jpeg .png"):
        check_and_load(compose_config, image_root)


def test_an_image_folder_too_small_to_split_is_refused_in_one_line(tmp_path):
    # one image per class: none to hold out; the run scored 0 images, then ended in a traceback
    write_image_folder(tmp_path / "one", per_class=1, size=(8, 8))
    result = run_cli("data=imagefolder", "data.root=one", "data.image_size=8", "epochs=1", "device=cpu",
                     "num_workers=0", "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(result, "data.root=", "the validation split would be empty: the classes hold "
                          "cat 1, dog 1, fox 1 image(s)", "set data.val_split higher",
                          "train/, val/ and test/ folders")
    assert result.returncode == 2
    assert not list((tmp_path / "run").glob("*.pt")) and not (tmp_path / "run" / "metrics.json").exists()


def test_a_split_whose_images_are_all_unreadable_is_refused(compose_config, tmp_path):
    write_image_folder(tmp_path / "train", classes=("a", "b"), per_class=3, size=(8, 8))
    write_image_folder(tmp_path / "val", classes=("a", "b"), per_class=1, size=(8, 8))
    for image in (tmp_path / "val").rglob("*.png"):
        image.write_text("not a picture")
    with pytest.raises(CnnbenchError, match=r"the validation split is empty: none of its 2 image\(s\) could "
                                            r"be read \(data.bad_images=skip left them out\)"):
        check_and_load(compose_config, tmp_path, "data.bad_images=skip")


def check_and_load(compose_config, root: Path, *overrides: str):
    from cnnbench.data import build_data

    cfg = image_run(compose_config, root, *overrides)
    check_config(cfg)
    return build_data(cfg.data, batch_size=4, seed=0, device=torch.device("cpu"))


def test_image_files_with_upper_case_extensions_and_sub_folders_count(compose_config, tmp_path):
    write_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=3)
    (tmp_path / "pets" / "cat" / "2.png").rename(tmp_path / "pets" / "cat" / "2.PNG")
    (tmp_path / "pets" / "dog" / "more").mkdir()
    (tmp_path / "pets" / "dog" / "2.png").rename(tmp_path / "pets" / "dog" / "more" / "2.png")
    data = check_and_load(compose_config, tmp_path / "pets")
    assert data.classes == ["cat", "dog"] and sum(len(part.files) for part in (data.train, data.val, data.test)) == 6


# ---------------------------------------------------------------- 6: bad config values

@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs=0 is out of range: must be an integer >= 1"),
    ("epochs=ten", "epochs='ten' is not an integer >= 1"),
    ("batch_size=0", "batch_size=0 is out of range: must be an integer >= 1"),
    ("batch_size=1.5", "batch_size=1.5 is not an integer >= 1"),
    ("optimizer.lr=0", "optimizer.lr=0 is out of range: must be a number > 0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is out of range: must be a number > 0"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5 is out of range: must be a number in [0, 1)"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is out of range: must be a number >= 0"),
    ("label_smoothing=1.0", "label_smoothing=1.0 is out of range: must be a number in [0, 1)"),
    ("grad_clip=-1", "grad_clip=-1 is out of range: must be a number >= 0"),
    ("num_workers=-1", "num_workers=-1 is out of range: must be an integer >= 0"),
    ("checkpoint.every_n_steps=-5", "checkpoint.every_n_steps=-5 is out of range: must be an integer >= 0"),
    ("on_nan=ignore", "on_nan='ignore' is not one of: stop, skip_batch"),
    ("precision=fp8", "precision='fp8' is not one of: fp32, bf16, fp16"),
    ("early_stopping=3", ("early_stopping=3 would replace a group of keys; set a key inside it, "
                          "e.g. early_stopping.patience=3")),
])
def test_bad_values_name_key_value_and_allowed_range(compose_config, override, message):
    with pytest.raises(CnnbenchError) as error:
        check_config(compose_config(override))
    assert str(error.value) == message


@pytest.mark.parametrize("fraction", ["0", "1", "1.5"])
def test_val_fraction_outside_zero_one_is_refused(compose_config, fraction):
    cfg = compose_config("data=imagefolder", "data.root=/x", f"data.val_fraction={fraction}")
    with pytest.raises(CnnbenchError, match=rf"data.val_fraction={fraction} is out of range: "
                                            r"must be a number in \(0, 1\)"):
        check_config(cfg)


def test_bad_images_takes_error_or_skip(compose_config):
    with pytest.raises(CnnbenchError, match="data.bad_images='ignore' is not one of: error, skip"):
        check_config(compose_config("data=imagefolder", "data.root=/x", "data.bad_images=ignore"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A data root with a small image folder (images/) and MNIST (MNIST/raw/), for command lines."""
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "images", per_class=4, size=(8, 8))
    write_idx_dataset(root / "MNIST" / "raw", train=64, test=32)
    return root


IMAGES = ["data=imagefolder", "data.root={data}/images", "num_workers=0"]
# tiny_data holds 64 training images: the default 5000 held out for validation would be refused
MNIST = ["data=mnist", "data.root={data}", "data.download=false", "data.val_split=0.1"]
# Sizes no machine's memory holds (issue #23 tried 100000, which a big enough machine might)
NO_MEMORY_HOLDS = str(10**7)


@pytest.mark.parametrize("arguments, fragments", [
    (["optimizer.learning_rate=0.1"],
     ["optimizer.learning_rate is not a config key (did you mean optimizer.lr?",
      "+optimizer.learning_rate=VALUE"]),
    (["epoch=3"], ["epoch is not a config key (did you mean epochs?"]),
    (["model=lenet7"], ["Could not find 'model/lenet7'; choose one of: alexnet,", "lenet5"]),
    (["epochs=[1"], ["cannot parse epochs=[1", "override_grammar"]),
    (["epochs=0", "data=mnist", "data.root=/nowhere"], ["epochs=0 is out of range"]),  # before data loads
    # the command lines of issue #23 that ended in a traceback
    ([*IMAGES, "data.image_size=[32]"],
     ["data.image_size=[32] is not a size: give one integer (a square) or [height, width]"]),
    ([*MNIST, "data.resize=[96]"], ["data.resize=[96] is not a size"]),
    ([*MNIST, "data.resize=4"],
     [("data.resize=4: lenet cannot take 4x4 images; the smallest it takes is 12x12: use data.resize=12 or "
       "more")]),
    (["data=fake", "model=lenet_bn", "batch_size=1"],
     ["batch_size=1: a training batch of 1 image is too few for lenet_bn's BatchNorm",
      "batches of 2 or more"]),
    (["data=fake", "data.num_train=1", "model=lenet_bn"],
     ["data.num_train=1: the training split holds 1 image: a training batch of 1 image is too few"]),
    (["seed=4294967296"], ["seed=4294967296 is out of range: must be an integer in [0, 4294967295]"]),
    (["data=fake", "data.image_size=[32,32]"], ["data.image_size=[32, 32]: fake images are square"]),
    (["optimizer=adam", "optimizer.betas=[0.9]"],
     ["optimizer.betas=[0.9] has 1 value(s): give two numbers, [beta1, beta2]"]),
    ([*IMAGES, "data.grayscale=true"],
     [("data.mean=[0.485, 0.456, 0.406] (3 values) and data.std=[0.229, 0.224, 0.225] (3 values): "
       "greyscale images (data.grayscale=true) have 1 channel(s): give one value per channel, e.g. "
       "data.mean=[0.485]")]),
    ([*IMAGES, "data.mean=[0.5,0.5]"],
     ["data.mean=[0.5, 0.5] (2 values): colour images (data.grayscale=false) have 3 channel(s)"]),
    ([*IMAGES, f"data.image_size={NO_MEMORY_HOLDS}"],
     [f"data.image_size={NO_MEMORY_HOLDS}: one image of 3x{NO_MEMORY_HOLDS}x{NO_MEMORY_HOLDS} needs",
      "of memory as float32, more than this machine's", "use a smaller data.image_size"]),
    (["data=fake", f"data.image_size={NO_MEMORY_HOLDS}"],
     [f"data.image_size={NO_MEMORY_HOLDS}: a batch of 128 images of 3x{NO_MEMORY_HOLDS}x{NO_MEMORY_HOLDS}",
      "or batch_size"]),
])
def test_bad_command_lines_get_one_line_and_exit_2(tmp_path, tiny_data, arguments, fragments):
    result = run_cli(*(argument.format(data=tiny_data) for argument in arguments), "device=cpu", cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("metrics.json"))  # no run began


@pytest.mark.parametrize("overrides, message", [
    # images too small for the model: the smallest size that works is found by trying it
    (["model=alexnet", "data.image_size=4"],
     ("data.image_size=4: alexnet cannot take 4x4 images; the smallest it takes is 7x7: use "
      "data.image_size=7 or more")),
    (["model=nin", "data.image_size=8", "data.resize=[64,8]"],
     ("data.resize=[64, 8]: nin cannot take 64x8 images; the smallest it takes is 11x11: use data.resize=11 "
      "or more")),
    (["model=small_cnn", "data.image_size=15"],
     "data.image_size=15: small_cnn cannot take 15x15 images; the smallest it takes is 16x16"),
    # BatchNorm given one image per training batch, by any key
    (["model=resnet18", "batch_size=1", "data.image_size=8"],
     "batch_size=1: a training batch of 1 image is too few for resnet18's BatchNorm"),
    (["model=lenet_bn", "model.norm=scratch", "data.train_limit=1"],
     ("data.train_limit=1: the training split holds 1 image: a training batch of 1 image is too few for "
      "lenet_bn's")),
    (["model=lenet_bn", "debug=overfit", "data.num_val=1"],
     "overfit=true: it trains on the first validation batch, and that holds 1 image: a training batch of 1"),
    # options torch refuses
    (["optimizer=adam", "+optimizer.foo=1"],
     ("optimizer: Adam cannot be built from these options: Adam.__init__() got an unexpected keyword "
      "argument 'foo'")),
    (["+scheduler.foo=1"], "scheduler: CosineAnnealingLR cannot be built from these options: "),
])
def test_what_only_the_set_up_can_tell_is_one_line_too(compose_config, tmp_path, overrides, message):
    with pytest.raises(CnnbenchError) as error:
        train(fake_run(compose_config, "epochs=1", *overrides), tmp_path / "run")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_batch_of_one_trains_where_batchnorm_can_take_it(compose_config, tmp_path):
    # ResNet-18 at 64 px keeps 2x2 pixels per channel to its last BatchNorm: one image is enough there
    metrics = train(fake_run(compose_config, "model=resnet18", "batch_size=1", "data.image_size=64",
                             "epochs=1", "limit_batches=2", "data.num_val=2"), tmp_path / "run")
    assert metrics["status"] == "finished"


# ---------------------------------------------------------------- 7: run folders and disks

def test_an_existing_run_folder_is_refused_before_anything_is_written(tmp_path):
    first = run_cli("data=fake", "device=cpu", "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    again = run_cli("data=fake", "device=cpu", "epochs=2", "model=mlp", "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(again, "run already holds a run (last.pt)", "resume=")
    after = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    assert after == before  # .hydra/overrides.yaml included: resume still finds the run's own


def limit_file_size(megabytes: int):
    """For a child process: no file it writes may grow past `megabytes` (as on a full disk)."""
    def limit() -> None:
        size = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.slow
def test_a_full_disk_is_said_and_loses_no_checkpoint(tmp_path):
    first = run_cli(*RUN, "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    assert len(before) > 2**20  # the mlp's weights and momentum: more than the limit below
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as ENOSPC would.
    full = subprocess.run([sys.executable, "-m", "cnnbench", f"resume={tmp_path / 'run'}", "epochs=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(1))
    assert_one_line_error(full, "cannot write", "run/",
                          ".pt: File too large; earlier files there are untouched")
    assert full.returncode == 2
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))


def without_root_powers():
    """For a child process when tests run as root, who may write into any folder: give up that
    power (Linux's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, for good: dropped from the bounding
    set, so the exec'd program does not get them back), so folder permissions apply as to any user."""
    if os.geteuid() != 0:
        return None

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # 24: PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop


@pytest.mark.slow
def test_a_read_only_run_folder_is_said_and_loses_nothing(tmp_path):
    first = run_cli("data=fake", "device=cpu", "epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "run"
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    everything = [run_dir, *run_dir.rglob("*")]
    for path in everything:  # chmod -R a-w
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = subprocess.run([sys.executable, "-m", "cnnbench", f"resume={run_dir}", "epochs=2"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                preexec_fn=without_root_powers())
    finally:
        for path in everything:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert_one_line_error(result, "cannot write", "run/", "Permission denied")
    assert result.returncode == 2
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
