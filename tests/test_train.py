"""End-to-end runs of `train` on small real-format datasets: what a run leaves, resume, refusals."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnbench.data import build_data
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import classification_loss, train
from cnnbench.engine.validation import evaluate
from cnnbench.errors import CnnbenchError
from cnnbench.inference.checkpoints import open_checkpoint, rebuild_model

TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "perf/images_per_sec"}


def mnist_run(compose_config, idx_root, *overrides):
    return compose_config("data=mnist", f"data.root={idx_root}", "data.download=false", "data.val_split=0.1",
                          "batch_size=32", "device=cpu", *overrides)


def test_a_run_learns_and_leaves_a_complete_run_folder(compose_config, idx_root, tmp_path):
    cfg = mnist_run(compose_config, idx_root, "epochs=3", "optimizer=adam")
    run = tmp_path / "run"
    metrics = train(cfg, run)

    history = metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["best_val_acc"] > 0.5  # 10 classes: chance is 0.1
    assert metrics["status"] == "finished" and metrics["epochs_done"] == 3
    assert metrics["parameters"] == 61_706
    assert metrics["images_per_sec"] > 0 and metrics["peak_host_memory_mb"] > 100  # torch alone is more
    for name in ("best.pt", "last.pt", "metrics.json", "config.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics.json").read_text()) == metrics

    events = EventAccumulator(str(run)).Reload()
    assert TAGS <= set(events.Tags()["scalars"])
    assert {f"val_class_acc/{i} - {name}" for i, name in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])} \
        <= set(events.Tags()["scalars"])
    images = {"train/augmented_batch", "val/confusion_matrix", "val/misclassified"}
    assert images <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    assert b"optimizer" not in hparams["_hparams_/session_start_info"]  # no overrides file: not a CLI run
    assert b"lenet" in hparams["_hparams_/session_start_info"]
    for picture in ("curves.png", "confusion_matrix.png"):
        assert (run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_class = metrics["per_class_acc"]
    assert len(per_class) == 10 and all(0 <= acc <= 1 for acc in per_class.values())
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2, 3]
    assert events.Scalars("val/acc")[-1].value == pytest.approx(history[-1]["val_acc"])


def test_best_checkpoint_reloads_with_the_recorded_accuracy(compose_config, idx_root, tmp_path):
    cfg = mnist_run(compose_config, idx_root, "epochs=2")
    metrics = train(cfg, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint["classes"][0].startswith("0") and checkpoint["config"]["data"]["name"] == "mnist"
    # Everything needed to rebuild the model comes from the checkpoint itself.
    model = instantiate(checkpoint["config"]["model"], num_classes=len(checkpoint["classes"]),
                        in_channels=checkpoint["in_channels"], image_size=checkpoint["image_size"])
    model.load_state_dict(checkpoint["model"])
    data = build_data(cfg.data, batch_size=64, seed=0, device=torch.device("cpu"))
    assert evaluate(model, data.val, torch.device("cpu"))["acc"] == metrics["best_val_acc"]


@pytest.mark.parametrize("scheduler", ["none", "step"])
def test_training_a_finished_run_on_equals_a_longer_run(compose_config, idx_root, tmp_path, scheduler):
    # resume=true on a finished run with more epochs trains on. (Runs stopped part-way, with dropout
    # and augmentation, resume exactly too: tests/test_faults.py, and test_sweep.py in a sweep.)
    # step: its schedule does not depend on `epochs`, so 1 epoch + 1 more = 2 epochs exactly.
    common = [f"scheduler={scheduler}", "scheduler.step_size=${steps:1}"] if scheduler == "step" \
        else [f"scheduler={scheduler}"]
    straight = train(mnist_run(compose_config, idx_root, "epochs=2", *common), tmp_path / "straight")
    train(mnist_run(compose_config, idx_root, "epochs=1", *common), tmp_path / "resumed")
    resumed = train(mnist_run(compose_config, idx_root, "epochs=2", "resume=true", *common),
                    tmp_path / "resumed")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert [r[key] for r in resumed["history"]] == [r[key] for r in straight["history"]], key
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_never_overwritten(compose_config, idx_root, tmp_path):
    cfg = mnist_run(compose_config, idx_root, "epochs=1")
    train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CnnbenchError, match="already holds a run .*resume=true"):
        train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_refused(compose_config, idx_root, tmp_path):
    with pytest.raises(CnnbenchError, match="resume=true: .*last.pt does not exist"):
        train(mnist_run(compose_config, idx_root, "resume=true"), tmp_path / "nothing")


def test_cifar10_with_augmentation_and_the_dataloader_path(compose_config, cifar_root, tmp_path):
    options = ["data=cifar10", f"data.root={cifar_root}", "data.download=false", "data.val_split=0.1", "data.loader=torch",
               "num_workers=0", "epochs=1", "batch_size=50", "model=mlp", "optimizer=adamw",
               "scheduler=onecycle", "label_smoothing=0.1", "grad_clip=1.0", "device=cpu"]
    cfg = compose_config(*options)
    assert (cfg.data.augment.crop_padding, cfg.data.augment.hflip) == (4, True)  # CIFAR-10's default
    metrics = train(cfg, tmp_path / "run")
    assert metrics["parameters"] == 3 * 32 * 32 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert 0 <= metrics["final_val_acc"] <= 1
    # It trained on augmented images: the same run (seed, order, weights) without augmentation
    # sees other pixels, so its training loss differs. (What each image becomes: test_data.py.)
    plain = train(compose_config(*options, "data.augment.crop_padding=0", "data.augment.hflip=false"),
                  tmp_path / "plain")
    assert plain["history"][0]["train_images"] == metrics["history"][0]["train_images"]
    assert plain["history"][0]["train_loss"] != metrics["history"][0]["train_loss"]


def test_image_folder_run_keeps_class_names(compose_config, image_root, tmp_path):
    cfg = compose_config("data=imagefolder", f"data.root={image_root}", "data.image_size=32",
                         "num_workers=0", "epochs=2", "batch_size=8", "device=cpu",
                         "optimizer=adam", "warmup_epochs=1")
    train(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["classes"] == ["cat", "dog", "fox"]


@pytest.mark.parametrize("model", [
    "lenet5", "lenet_bn", "lenet_bn model.norm=scratch", "small_cnn",
    pytest.param("alexnet", marks=pytest.mark.slow),  # 58 M parameters: seconds a step
    "vgg11 model.width_ratio=0.25 model.batch_norm=true", "nin", "googlenet model.aux_logits=true",
    "resnet18", "densenet_small", "resdensenet",
])
def test_one_epoch_for_a_model_of_each_family(compose_config, tmp_path, model):
    name, *options = model.split()
    cfg = compose_config(f"model={name}", *options, "data=fake", "data.num_train=32",
                         "data.num_val=16", "batch_size=16", "epochs=1", "device=cpu")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "finished" and math.isfinite(metrics["final_train_loss"])
    checkpoint = open_checkpoint(tmp_path / "run" / "last.pt")  # as cnnbench-eval/predict/export do
    assert checkpoint["config"]["model"]["_target_"].endswith(name)
    model = rebuild_model(checkpoint, tmp_path / "run" / "last.pt")  # through the registry
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(2, 3, 32, 32))).all()


def test_auxiliary_heads_add_their_weighted_loss_and_never_count_for_accuracy():
    criterion = torch.nn.CrossEntropyLoss()
    labels = torch.tensor([0, 1])
    main, aux1, aux2 = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    loss, logits = classification_loss((main, aux1, aux2), labels, criterion, 0.3)
    expected = criterion(main, labels) + 0.3 * (criterion(aux1, labels) + criterion(aux2, labels))
    torch.testing.assert_close(loss, expected)
    assert logits is main


def test_early_stopping_ends_a_run_that_stopped_improving(compose_config, idx_root, tmp_path):
    # lr 0 (almost): nothing improves after the first epoch, so patience 2 stops after epoch 3.
    cfg = mnist_run(compose_config, idx_root, "epochs=10", "early_stopping.patience=2",
                    "optimizer.lr=1e-12", "scheduler=none")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs_done"] == metrics["best_epoch"] + 2 < 10
    assert metrics["stopped_early"] and metrics["status"] == "finished"


def test_debug_fast_runs_a_few_batches(compose_config, idx_root, tmp_path):
    metrics = train(mnist_run(compose_config, idx_root, "debug=fast"), tmp_path / "run")
    assert metrics["epochs_done"] == 2
    assert metrics["history"][0]["images_per_sec"] > 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["steps_per_epoch"] == 3
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert len(events.Scalars("train/loss")) == 2


@pytest.mark.slow
def test_debug_overfit_drives_one_batch_loss_to_about_zero(compose_config, idx_root, tmp_path):
    cfg = mnist_run(compose_config, idx_root, "debug=overfit")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["final_train_loss"] < 0.05 and metrics["final_val_acc"] == 1.0


def test_one_cycle_takes_every_step_of_a_run_with_a_warmup_of_half_steps(compose_config, tmp_path):
    # 5 epochs of 1 step, 2.5 epochs of warmup: rounding the steps after warmup (2.5 -> 2) left
    # one-cycle a step short of the run, which it refused with a traceback at the last step
    cfg = compose_config("data=fake", "data.num_train=32", "data.num_val=16", "batch_size=32", "epochs=5",
                         "warmup_epochs=2.5", "scheduler=onecycle", "device=cpu")
    assert train(cfg, tmp_path / "run")["epochs_done"] == 5


def test_a_one_cycle_shorter_than_the_run_is_refused_in_one_line(compose_config, tmp_path):
    cfg = compose_config("data=fake", "data.num_train=64", "data.num_val=16", "batch_size=32", "epochs=2",
                         "scheduler=onecycle", "scheduler.total_steps=2", "device=cpu")
    with pytest.raises(CnnbenchError, match=r"scheduler.total_steps=2 is fewer than the 4 optimizer steps"):
        train(cfg, tmp_path / "run")
