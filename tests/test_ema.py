"""Weight averaging, time to accuracy and provenance (issue #16): the average is what its formula
says, resumes exactly, and is what eval/predict/export use; a run records when it reached each
accuracy target and what produced its numbers."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.ema import WeightAverage
from cnnbench.engine.metrics import time_to_accuracy
from cnnbench.engine.train import train
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.inference.export import export
from cnnbench.inference.predict import predict

SMALL = ["data=fake", "data.num_train=128", "data.num_val=64", "batch_size=32", "device=cpu",
         "model=mlp", "model.hidden=[32]", "model.dropout=0.2", "data.augment.hflip=true"]


def set_weight(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(0.0)


def test_decay_zero_averages_nothing_the_average_is_the_live_weights():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.0)
    set_weight(model, 5.0)
    average.update(model)
    assert torch.equal(average.model.weight, model.weight)


def test_three_updates_give_the_hand_computed_average():
    model = nn.Linear(1, 1)
    set_weight(model, 1.0)
    average = WeightAverage(model, decay=0.5)  # starts as a copy: 1.0
    for value in (3.0, 5.0, 9.0):
        set_weight(model, value)
        average.update(model)
    # 0.5 * 1 + 0.5 * 3 = 2; 0.5 * 2 + 0.5 * 5 = 3.5; 0.5 * 3.5 + 0.5 * 9 = 6.25
    assert average.model.weight.item() == 6.25 and average.updates == 3
    assert not average.model.weight.requires_grad and not average.model.training


def test_warmup_lets_the_first_updates_count_more():
    average = WeightAverage(nn.Linear(1, 1), decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(average.current_decay())
        average.update(nn.Linear(1, 1))
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])  # min(decay, (1 + t) / (10 + t))
    average.updates = 100_000
    assert average.current_decay() == 0.999


def test_batchnorm_statistics_are_copied_not_averaged():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, decay=0.9)
    model(torch.randn(16, 4) * 3 + 7)  # training mode: running statistics move
    average.update(model)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)
    assert torch.equal(average.model[1].running_var, model[1].running_var)


def test_a_run_with_ema_validates_both_and_resumes_exactly(compose_config, tmp_path):
    common = [*SMALL, "ema.decay=0.9", "ema.warmup=true", "scheduler=none"]  # a schedule not set by epochs
    straight = train(compose_config(*common, "epochs=3"), tmp_path / "straight")
    train(compose_config(*common, "epochs=1"), tmp_path / "resumed")
    resumed = train(compose_config(*common, "epochs=3", "resume=true"), tmp_path / "resumed")
    keys = ("val_acc", "val_loss", "val_acc_ema", "val_loss_ema", "train_loss")
    assert [[r[k] for k in keys] for r in resumed["history"]] == \
        [[r[k] for k in keys] for r in straight["history"]]
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["ema"] for run in ("straight", "resumed"))
    assert a["updates"] == b["updates"] == 12
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert straight["best_val_acc_ema"] == max(r["val_acc_ema"] for r in straight["history"])
    assert straight["final_val_acc_ema"] == straight["history"][-1]["val_acc_ema"]
    tags = set(EventAccumulator(str(tmp_path / "straight")).Reload().Tags()["scalars"])
    assert {"val_ema/acc", "val_ema/loss", "val/acc"} <= tags


def test_best_pt_is_picked_by_the_setting_and_the_tools_use_the_average(compose_config, tmp_path):
    metrics = train(compose_config(*SMALL, "epochs=3", "ema.decay=0.8", "ema.best_by=ema"), tmp_path / "run")
    best = tmp_path / "run" / "best.pt"
    chosen = max(metrics["history"], key=lambda r: (r["val_acc_ema"], -r["epoch"]))
    assert metrics["best_epoch"] == chosen["epoch"] and metrics["best_by"] == "ema"
    averaged = evaluate_checkpoint(best, split="val")  # weights=auto: the average the checkpoint holds
    assert averaged["weights"] == "ema" and averaged["accuracy"] == chosen["val_acc_ema"]
    live = evaluate_checkpoint(best, weights="live", split="val")
    assert live["weights"] == "live" and live["accuracy"] == chosen["val_acc"]
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "green.png")
    rows_ema, _ = predict(best, [tmp_path / "green.png"], device="cpu")
    rows_live, _ = predict(best, [tmp_path / "green.png"], device="cpu", weights="live")
    assert rows_ema[0]["top"] != rows_live[0]["top"]  # other weights, other probabilities
    assert export(best, "torchscript", tmp_path / "ema.torchscript.pt")["matches"]


def test_without_an_average_weights_ema_is_refused(compose_config, tmp_path):
    from cnnbench.errors import CnnbenchError

    train(compose_config(*SMALL, "epochs=1"), tmp_path / "run")
    assert evaluate_checkpoint(tmp_path / "run" / "best.pt")["weights"] == "live"
    with pytest.raises(CnnbenchError, match="weights=ema: this checkpoint holds no averaged weights"):
        evaluate_checkpoint(tmp_path / "run" / "best.pt", weights="ema")


def test_time_to_accuracy_from_a_history():
    history = [{"epoch": 1, "val_acc": 0.62, "epoch_time_s": 10.0},
               {"epoch": 2, "val_acc": 0.91, "epoch_time_s": 12.0},
               {"epoch": 3, "val_acc": 0.89, "epoch_time_s": 11.0},
               {"epoch": 4, "val_acc": 0.935, "epoch_time_s": 11.5}]
    assert time_to_accuracy(history, [0.9, 0.5, 0.93, 0.99]) == {
        "0.50": {"seconds": 10.0, "epoch": 1}, "0.90": {"seconds": 22.0, "epoch": 2},
        "0.93": {"seconds": 44.5, "epoch": 4}, "0.99": None}
    assert time_to_accuracy([], [0.9]) == {"0.90": None}


def test_metrics_record_time_to_accuracy_and_provenance(compose_config, tmp_path):
    metrics = train(compose_config(*SMALL, "epochs=2", "data.accuracy_targets=[0.01,1.0]"), tmp_path / "run")
    assert metrics["time_to_accuracy"]["0.01"] == {"seconds": metrics["history"][0]["epoch_time_s"], "epoch": 1}
    assert "1.00" in metrics["time_to_accuracy"]
    provenance = json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]
    assert provenance["torch"] == torch.__version__ and provenance["python"].count(".") == 2
    assert {"cnnbench", "torchvision", "cuda", "cudnn", "device", "device_name", "cpu_cores", "hostname",
            "command", "git_commit"} <= set(provenance)
    assert provenance["device"] == "cpu" and provenance["cpu_cores"] >= 1 and provenance["device_name"]
