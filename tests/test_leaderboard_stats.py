"""The leaderboard as a scientist reads it (#16): confidence intervals and Welch's test against the
best row or a baseline, the averaged weights, time to accuracy, the hardware note, and the pictures
of a sweep. Most tests build run folders as a run leaves them (metrics.json, config.json,
.hydra/overrides.yaml) with chosen numbers, and run cnnbench-report on them."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnbench.cli import report
from cnnbench.engine.figures import palette
from cnnbench.leaderboard.pictures import COST, CURVES, pareto_front
from cnnbench.leaderboard.statistics import confidence_interval, row_labels, welch_p

EPYC = {"cnnbench": "0.1.0", "python": "3.12.3", "torch": "2.6.0", "torchvision": "0.21.0", "cuda": None,
        "cudnn": None, "device": "cpu", "device_name": "AMD EPYC 7B13", "cpu_cores": 2, "hostname": "a",
        "command": "cnnbench -m model=lenet,mlp seed=0,1,2", "git_commit": None}


def make_run(folder: Path, model: str, seed: int, accuracies: list[float], overrides: tuple[str, ...] = (),
             **extra) -> Path:
    """A finished run folder whose validation accuracy per epoch is `accuracies`; `extra` goes into
    metrics.json as it is (time_to_accuracy, provenance, best_val_acc_ema...)."""
    folder.mkdir(parents=True)
    history = [{"epoch": epoch, "val_acc": acc, "val_loss": 2 * (1 - acc), "epoch_time_s": 4.0}
               for epoch, acc in enumerate(accuracies, 1)]
    metrics = {"status": "finished", "protocol": "validation", "model": model, "data": "fake", "seed": seed,
               "epochs_done": len(accuracies), "epochs": len(accuracies), "best_val_acc": max(accuracies),
               "best_epoch": accuracies.index(max(accuracies)) + 1, "final_val_acc": accuracies[-1],
               "parameters": 1000 * (len(model) + 1), "images_per_sec": 500.0 * len(model),
               "wall_time_s": 4.0 * len(accuracies), "history": history, **extra}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    config = {"model": {"name": model}, "data": {"name": "fake"}, "seed": seed}
    for override in overrides:
        key, value = override.split("=", 1)
        config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", *overrides,
                                                                      f"seed={seed}"]))
    return folder


def make_row(root: Path, model: str, best: list[float], overrides: tuple[str, ...] = (), **extra) -> None:
    """One configuration: a run per value of `best` (its seeds), one epoch each."""
    for seed, accuracy in enumerate(best):
        name = "_".join([model, *overrides, f"seed={seed}"])
        make_run(root / name, model, seed, [accuracy], overrides, **extra)


def leaderboard(folder: Path, *options: str) -> dict[str, dict[str, str]]:
    """Run cnnbench-report; its csv's rows by model (and overrides)."""
    report.main([str(folder), *options])
    with open(folder / "leaderboard.csv", newline="") as file:
        return {" ".join([row["model"], *row["config"].split()]): row for row in csv.DictReader(file)}


# ---------------------------------------------------------------- the statistics, checked by hand

def test_welch_p_values_match_closed_forms_of_the_t_distribution():
    # n = 2 each, equal variances: the means differ by 0.04, each variance is 0.0002, so the standard
    # error is sqrt(0.0002/2 + 0.0002/2) = sqrt(0.0002), t = 0.04 / sqrt(0.0002) = 2·sqrt(2), and
    # Welch-Satterthwaite gives exactly 2 degrees of freedom. With 2 degrees of freedom the t
    # distribution has a closed form: two-sided p = 1 - t / sqrt(t² + 2) = 1 - sqrt(8/10) = 0.105573.
    assert welch_p([0.90, 0.92], [0.86, 0.88]) == pytest.approx(1 - math.sqrt(0.8), abs=1e-6)
    assert 1 - math.sqrt(0.8) == pytest.approx(0.105573, abs=1e-6)
    # n = 3 each, variance 0.0004 each: t = 0.04 / sqrt(2 · 0.0004/3) = sqrt(6) = 2.449490, 4 degrees of
    # freedom; for 4 the two-sided p is 1 - 3x/2 + x³/2 with x = t / sqrt(t² + 4) = sqrt(0.6):
    # 1 - 1.161895 + 0.232379 = 0.070484 (at t = 2.776, the table's t(0.975, 4), it gives 0.0500).
    assert welch_p([0.90, 0.92, 0.94], [0.86, 0.88, 0.90]) == pytest.approx(0.070484, abs=1e-5)
    assert welch_p([0.86, 0.88, 0.90], [0.90, 0.92, 0.94]) == pytest.approx(0.070484, abs=1e-5)  # two-sided
    # seeds that all agree: no spread to test against; the same number on both sides is no difference
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch_p([0.5, 0.5], [0.4, 0.4]) == 0.0
    assert welch_p([0.9], [0.8, 0.85]) is None  # one seed: not computed


def test_the_confidence_interval_uses_students_t():
    # mean 0.92, s = 0.02, n = 3: 0.92 ± t(0.975, 2) · 0.02 / sqrt(3), t(0.975, 2) = 4.303 in the tables
    low, high = confidence_interval([0.90, 0.92, 0.94])
    half = 4.303 * 0.02 / math.sqrt(3)  # 0.049687
    assert (low, high) == (pytest.approx(0.92 - half, abs=1e-4), pytest.approx(0.92 + half, abs=1e-4))
    # n = 2: t(0.975, 1) = 12.706; mean 0.91, s = sqrt(0.0002)
    low, high = confidence_interval([0.90, 0.92])
    assert high - 0.91 == pytest.approx(12.706 * math.sqrt(0.0002) / math.sqrt(2), abs=1e-4)
    assert confidence_interval([0.9]) is None and confidence_interval([0.9, 0.9]) == (0.9, 0.9)


# ---------------------------------------------------------------- the leaderboard's new columns

def test_each_row_has_its_interval_and_rows_indistinguishable_from_the_best_are_marked(tmp_path, capsys):
    make_row(tmp_path, "lenet", [0.90, 0.92, 0.94])
    make_row(tmp_path, "mlp", [0.86, 0.88, 0.90])  # the hand-computed example above: p = 0.0705
    make_row(tmp_path, "alexnet", [0.50, 0.51, 0.52])
    rows = leaderboard(tmp_path)
    out = capsys.readouterr().out
    assert rows["lenet"]["comparison"] == "reference" and rows["lenet"]["welch_p"] == ""
    assert float(rows["lenet"]["best_val_acc_ci_high"]) == pytest.approx(0.92 + 4.303 * 0.02 / math.sqrt(3),
                                                                         abs=1e-4)
    assert float(rows["mlp"]["diff_from_reference"]) == pytest.approx(-0.04)
    assert float(rows["mlp"]["welch_p"]) == pytest.approx(0.070484, abs=1e-5)
    assert rows["mlp"]["comparison"] == "indistinguishable"
    assert rows["alexnet"]["comparison"] == "different" and float(rows["alexnet"]["welch_p"]) < 0.001
    mlp_line = next(line for line in out.splitlines() if line.startswith("mlp "))
    assert "≈ -0.0400 (p 0.07)" in mlp_line and "0.8303–0.9297" in mlp_line
    assert "≈" not in next(line for line in out.splitlines() if line.startswith("alexnet "))
    assert "≈: indistinguishable from it (p ≥ 0.05)" in out and "vs the best row (lenet)" in out
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| ≈ -0.0400 (p 0.07) |" in markdown and "| reference |" in markdown
    table = [line for line in out.splitlines() if line.startswith(("model ", "lenet ", "mlp ", "alexnet "))]
    assert len(table) == 4 and max(map(len, table)) <= 130  # the console's view stays narrow


def test_a_row_of_one_seed_says_so_and_computes_nothing(tmp_path, capsys):
    make_row(tmp_path, "lenet", [0.90, 0.92, 0.94])
    make_row(tmp_path, "mlp", [0.88])
    rows = leaderboard(tmp_path)
    assert [rows["mlp"][key] for key in ("best_val_acc_ci_low", "best_val_acc_ci_high", "diff_from_reference",
                                         "welch_p", "comparison")] == ["", "", "", "", ""]
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mlp "))
    assert "1 seed: no interval" in line and "1 seed: no test" in line
    # the one-seed row as the reference: the others cannot be tested against it either
    one = tmp_path / "one"
    make_row(one, "lenet", [0.99])
    make_row(one, "mlp", [0.86, 0.88])
    rows = leaderboard(one)
    assert rows["mlp"]["welch_p"] == "" and rows["mlp"]["best_val_acc_ci_low"] != ""
    assert "reference has 1 seed: no test" in capsys.readouterr().out
    # a baseline whose runs all failed: named, and nothing to compare with
    (one / "vgg" / ".hydra").mkdir(parents=True)
    (one / "vgg" / ".hydra" / "overrides.yaml").write_text("- model=vgg\n")
    (one / "vgg" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"model": "vgg", "data": "fake"}}}}))  # as Hydra writes it
    (one / "vgg" / "error.txt").write_text("out of memory\n")
    rows = leaderboard(one, "--baseline", "vgg")
    assert rows["mlp"]["welch_p"] == "" and "reference has no result" in capsys.readouterr().out


def test_a_baseline_row_is_named_by_its_model_and_overrides(tmp_path, capsys):
    make_row(tmp_path, "small_cnn", [0.96, 0.97], ("data.permute_pixels=false",))
    make_row(tmp_path, "small_cnn", [0.80, 0.81], ("data.permute_pixels=true",))
    make_row(tmp_path, "small_mlp", [0.87, 0.88], ("data.permute_pixels=false",))
    rows = leaderboard(tmp_path, "--baseline", "small_mlp")  # the only small_mlp row
    assert rows["small_mlp data.permute_pixels=false"]["comparison"] == "reference"
    assert float(rows["small_cnn data.permute_pixels=false"]["diff_from_reference"]) == pytest.approx(0.09)
    assert "vs baseline" in capsys.readouterr().out
    rows = leaderboard(tmp_path, "--baseline", "small_cnn permute_pixels=true")  # words of a row, or parts
    assert rows["small_cnn data.permute_pixels=true"]["comparison"] == "reference"
    for ambiguous, says in [("small_cnn", "names 2 rows (small_cnn data.permute_pixels=false; small_cnn "
                                          "data.permute_pixels=true): add words to name one"),
                            ("resnet18", "names no row; the rows: small_cnn data.permute_pixels=false; ")]:
        with pytest.raises(SystemExit) as refused:
            report.main([str(tmp_path), "--baseline", ambiguous])
        assert refused.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"cnnbench-report: error: --baseline '{ambiguous}' {says}" in error


def test_a_row_named_whole_is_picked_among_rows_it_is_part_of(tmp_path):
    make_row(tmp_path, "lenet", [0.90, 0.91])
    make_row(tmp_path, "lenet", [0.95, 0.96], ("optimizer.lr=0.1",))
    rows = leaderboard(tmp_path, "--baseline", "lenet")  # the row named lenet and nothing more
    assert rows["lenet"]["comparison"] == "reference"
    rows = leaderboard(tmp_path, "--baseline", "lenet optimizer.lr=0.1")
    assert rows["lenet optimizer.lr=0.1"]["comparison"] == "reference"


def test_the_mlp_vs_cnn_rows_are_named_by_model_and_the_overrides_that_differ():
    config = "data.permute_pixels={} experiment=mlp_vs_cnn"
    rows = [{"model": model, "data": "mnist", "config": config.format(permuted)}
            for model in ("small_mlp", "small_cnn") for permuted in ("false", "true")]
    assert row_labels(rows) == ["small_mlp data.permute_pixels=false", "small_mlp data.permute_pixels=true",
                                "small_cnn data.permute_pixels=false", "small_cnn data.permute_pixels=true"]


def test_time_to_accuracy_columns_average_the_seeds_that_reached_each_target(tmp_path, capsys):
    reached = [{"0.90": {"seconds": 10.0, "epoch": 2}, "0.99": None},
               {"0.90": {"seconds": 14.6, "epoch": 2}, "0.99": None},
               {"0.90": None, "0.99": None}]
    for seed, times in enumerate(reached):
        make_run(tmp_path / f"lenet_{seed}", "lenet", seed, [0.8, 0.95], time_to_accuracy=times)
    make_run(tmp_path / "mlp_old", "mlp", 0, [0.8, 0.85])  # made before time to accuracy was recorded
    rows = leaderboard(tmp_path)
    lenet = rows["lenet"]
    assert float(lenet["time_to_0.90_s_mean"]) == pytest.approx(12.3)
    assert float(lenet["time_to_0.90_epochs_mean"]) == 2.0 and lenet["time_to_0.90_reached"] == "2"
    assert lenet["time_to_0.99_s_mean"] == "" and lenet["time_to_0.99_reached"] == "0"
    assert rows["mlp"]["time_to_0.90_s_mean"] == rows["mlp"]["time_to_0.90_reached"] == ""
    out = capsys.readouterr().out
    assert "time to 0.90" in out and "time to 0.99" in out
    assert "12.3 s / 2.0 ep (2/3)" in out and "not reached (0/3)" in out
    report.main([str(tmp_path), "--sort", "time_to_0.90_s_mean", "--ascending"])  # a column to sort by
    # without any run that recorded it: no such columns
    make_run(tmp_path / "old" / "a", "mlp", 0, [0.8])
    assert "time_to_0.90_s_mean" not in leaderboard(tmp_path / "old")["mlp"]


def test_the_averaged_weights_get_columns_when_a_run_has_them(tmp_path, capsys):
    for seed, (best, final) in enumerate([(0.93, 0.92), (0.95, 0.95)]):
        make_run(tmp_path / f"ema_{seed}", "lenet", seed, [0.9, 0.91], ("ema.decay=0.999",),
                 best_val_acc_ema=best, final_val_acc_ema=final)
    make_run(tmp_path / "live", "mlp", 0, [0.8])
    rows = leaderboard(tmp_path)
    ema = rows["lenet ema.decay=0.999"]
    assert float(ema["best_val_acc_ema_mean"]) == pytest.approx(0.94)
    assert float(ema["best_val_acc_ema_std"]) == pytest.approx(math.sqrt(0.0002))
    assert float(ema["final_val_acc_ema_mean"]) == pytest.approx(0.935)
    assert rows["mlp"]["best_val_acc_ema_mean"] == ""
    assert "best val acc (EMA)" in capsys.readouterr().out
    assert "| final val acc (EMA) |" in (tmp_path / "leaderboard.md").read_text()
    make_run(tmp_path / "none" / "a", "mlp", 0, [0.8])
    assert "best_val_acc_ema_mean" not in leaderboard(tmp_path / "none")["mlp"]
    assert "EMA" not in capsys.readouterr().out


def test_rows_measured_on_different_machines_are_said_to_be(tmp_path, capsys):
    xeon = {**EPYC, "device_name": "Intel Xeon Platinum 8481C", "torch": "2.5.1"}
    make_run(tmp_path / "lenet", "lenet", 0, [0.9], provenance=EPYC)
    make_run(tmp_path / "mlp", "mlp", 0, [0.8], provenance=EPYC)
    leaderboard(tmp_path)
    assert "different hardware" not in capsys.readouterr().out  # one machine: nothing to say
    make_run(tmp_path / "vgg", "vgg", 0, [0.7], provenance=xeon)
    rows = leaderboard(tmp_path)
    note = ("measured on different hardware or versions: device_name AMD EPYC 7B13 (2 runs), Intel Xeon "
            "Platinum 8481C (1 runs); torch 2.5.1 (1 runs), 2.6.0 (2 runs): compare speeds only between rows "
            "measured alike (csv column hardware)")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"note: {note}"  # above the table
    assert rows["vgg"]["hardware"] == "Intel Xeon Platinum 8481C (2 cores), torch 2.5.1"
    assert rows["lenet"]["hardware"] == "AMD EPYC 7B13 (2 cores), torch 2.6.0"
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert f"**Note: {note}.**" in markdown and "| hardware |" in markdown
    make_run(tmp_path / "old", "alexnet", 0, [0.6])  # made before provenance was recorded
    leaderboard(tmp_path)
    assert "not recorded by 1 runs (made before provenance was)" in capsys.readouterr().out


# ---------------------------------------------------------------- the pictures of a sweep

def colours_in(image: Image.Image) -> set[tuple[int, int, int]]:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return {tuple(int(c) for c in colour) for colour in np.unique(pixels, axis=0)}


@pytest.mark.parametrize("epochs", [1, 4])
def test_a_report_draws_one_curve_and_one_point_per_configuration(tmp_path, epochs):
    for model, level in (("lenet", 0.9), ("mlp", 0.8), ("vgg", 0.7)):
        for seed in range(3):
            make_run(tmp_path / f"{model}_{seed}", model, seed,
                     [level - 0.1 / epoch + 0.01 * seed for epoch in range(1, epochs + 1)])
    report.main([str(tmp_path)])
    one_per_row = palette(3)
    for name in (CURVES, COST):
        image = Image.open(tmp_path / name)
        assert image.format == "PNG" and 900 <= image.width <= 1100
        found = colours_in(image)
        assert set(one_per_row) <= found, name  # each configuration drawn in its own colour...
        assert palette(4)[3] not in found, name  # ...and no fourth one
    curves = Image.open(tmp_path / CURVES)
    plots = curves.crop((0, 60, curves.width, curves.height - 80))  # the panels, without title and legend
    for colour in one_per_row:
        assert (np.asarray(plots.convert("RGB")) == colour).all(-1).sum() > 30, colour
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert f"]({CURVES})" in markdown and f"]({COST})" in markdown


def test_the_pareto_front_is_the_points_nothing_beats():
    # (parameters, accuracy): the third is beaten by the first (cheaper and better), the others not
    points = [(1000, 0.90), (5000, 0.95), (8000, 0.91), (20000, 0.97)]
    assert pareto_front(points) == [0, 1, 3]
    # images/s: more is better, so the front runs the other way
    assert pareto_front([(100, 0.9), (300, 0.85), (200, 0.80)], more_is_better=True) == [0, 1]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]  # equal points: neither beats the other


# ---------------------------------------------------------------- files of the user's (#23)

def users_picture(path: Path) -> None:
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)  # a PNG of the user's: no marker of cnnbench's


@pytest.mark.parametrize("name", ["leaderboard.md", "leaderboard.csv", CURVES])
def test_a_report_never_replaces_a_leaderboard_file_it_did_not_write(tmp_path, capsys, name):
    make_row(tmp_path, "lenet", [0.8, 0.9])
    mine = tmp_path / name
    if name.endswith(".png"):
        users_picture(mine)
    else:
        mine.write_text("# Leaderboard\n\nmy own notes on these runs\n")
    before = mine.read_bytes()
    with pytest.raises(SystemExit) as refused:
        report.main([str(tmp_path)])
    assert refused.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cnnbench-report: error: {mine} exists and was not written by cnnbench-report; "
                           f"move it out of {tmp_path}")
    assert mine.read_bytes() == before  # the release before wrote over it
    others = {"leaderboard.md", "leaderboard.csv", CURVES, COST} - {name}
    assert not any((tmp_path / other).exists() for other in others)  # refused before writing any


def test_a_report_replaces_its_own_files_and_those_of_the_release_before(tmp_path):
    make_row(tmp_path, "lenet", [0.8, 0.9])
    report.main([str(tmp_path)])
    report.main([str(tmp_path)])  # each of its files says it is cnnbench's
    for name in (CURVES, COST):  # the release before drew its pictures without the marker
        Image.open(tmp_path / name).convert("RGB").save(tmp_path / name)
    make_row(tmp_path, "mlp", [0.5, 0.6])
    report.main([str(tmp_path)])  # known by the leaderboard.md of cnnbench's that shows them
    assert "| mlp |" in (tmp_path / "leaderboard.md").read_text()
    assert Image.open(tmp_path / COST).info.get("Software") == "cnnbench-report"
