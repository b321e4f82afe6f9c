"""Numbers you can publish (issue #24): three splits for every dataset, everything chosen on
validation only, the test split scored once at the end on the chosen checkpoint.

- Splits are stratified, reproducible, disjoint, and fixed by data.split_seed, not the run's seed.
- A run whose test labels are scrambled trains exactly as one whose labels are not.
- best.pt is chosen on validation, also where validation and test disagree about the best epoch.
- The test metrics equal cnnbench-eval split=test on best.pt; the leaderboard's test columns are
  the mean, interval and Welch test of those numbers.
- data.val_split=0 (the textbook's protocol) chooses nothing; image folders split three ways,
  and copies of training images in validation and test are found.
"""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import learnable_images, write_cifar10, write_idx, write_idx_dataset, write_image_folder

from cnnbench.data import build_data
from cnnbench.engine import checkpoint as checkpoints
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.engine.validation import evaluate
from cnnbench.errors import CnnbenchError
from cnnbench.inference.checkpoints import rebuild_model
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.leaderboard.statistics import confidence_interval, welch_p
from cnnbench.leaderboard.table import rebuild_leaderboard

CPU = torch.device("cpu")


def labels_of(loader) -> list[int]:
    return torch.cat([labels for _, labels in loader]).tolist()


def test_built_in_datasets_hold_out_a_stratified_validation_split_fixed_by_its_own_seed(compose_config, tmp_path):
    write_idx_dataset(tmp_path / "mnist", train=1000, test=200)
    write_cifar10(tmp_path, per_batch=200, test=100)
    for data in ("mnist", "cifar10"):
        root = tmp_path / "mnist" if data == "mnist" else tmp_path
        cfg = compose_config(f"data={data}", f"data.root={root}", "data.download=false", "data.val_split=100")
        built = build_data(cfg.data, batch_size=64, seed=0, device=CPU)
        counts = built.split["counts"]
        assert counts == {"train": 900, "val": 100, "test": counts["test"]} and counts["test"] > 0
        assert Counter(labels_of(built.val)) == Counter({label: 10 for label in range(10)})  # stratified
        members = built.split["members"]
        # the same images whatever the run's seed; others with another split_seed
        again = build_data(cfg.data, batch_size=64, seed=7, device=CPU)
        assert again.split["members"]["val"] == members["val"] and again.split["digest"] == built.split["digest"]
        other = compose_config(f"data={data}", f"data.root={root}", "data.download=false", "data.val_split=100",
                               "data.split_seed=1")
        assert build_data(other.data, batch_size=64, seed=0, device=CPU).split["members"]["val"] != members["val"]
        # a fraction works too, and too large a count is refused in one line
        half = compose_config(f"data={data}", f"data.root={root}", "data.download=false", "data.val_split=0.2")
        assert build_data(half.data, batch_size=64, seed=0, device=CPU).split["counts"]["val"] == 200
        with pytest.raises(CnnbenchError, match=r"data.val_split=5000 would hold out more than half of the 1,000"):
            build_data(compose_config(f"data={data}", f"data.root={root}", "data.download=false").data,
                       batch_size=64, seed=0, device=CPU)


def test_the_validation_rows_are_disjoint_from_the_training_rows(compose_config, tmp_path):
    write_idx_dataset(tmp_path, train=1000, test=200)
    cfg = compose_config("data=mnist", f"data.root={tmp_path}", "data.download=false", "data.val_split=0.25")
    built = build_data(cfg.data, batch_size=1000, seed=0, device=CPU)
    images = torch.cat([batch for batch, _ in built.train] + [batch for batch, _ in built.val])
    assert len(images) == 1000 and len({tuple(image.flatten()[:200].tolist()) for image in images}) == 1000
    assert built.split["counts"] == {"train": 750, "val": 250, "test": 200}


def mnist(tmp_path: Path, name: str, test_labels: torch.Tensor | None = None) -> Path:
    """A small MNIST-format dataset; `test_labels` replaces its test split's labels."""
    folder = write_idx_dataset(tmp_path / name, train=800, test=200)
    if test_labels is not None:
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_labels.to(torch.uint8))
    return folder


def run_on(compose_config, root: Path, *overrides: str):
    return compose_config("data=mnist", f"data.root={root}", "data.download=false", "data.val_split=200",
                          "model=mlp", "model.hidden=[32]", "batch_size=64", "epochs=3", "device=cpu", *overrides)


def test_scrambled_test_labels_change_nothing_until_the_final_score(compose_config, tmp_path):
    _, labels = learnable_images(200, 10, (28, 28), 2)
    scrambled = labels[torch.randperm(200, generator=torch.Generator().manual_seed(5))]
    plain = train(run_on(compose_config, mnist(tmp_path, "plain")), tmp_path / "plain-run")
    other = train(run_on(compose_config, mnist(tmp_path, "scrambled", scrambled)), tmp_path / "scrambled-run")
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[r[k] for k in keys] for r in plain["history"]] == [[r[k] for k in keys] for r in other["history"]]
    assert plain["best_epoch"] == other["best_epoch"]
    for name in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / run / name)["model"] for run in ("plain-run", "scrambled-run"))
        assert all(torch.equal(a[key], b[key]) for key in a)  # to the last bit
    assert plain["test_acc"] != other["test_acc"]  # only the final score saw the test labels


def test_best_pt_is_chosen_on_validation_where_test_would_choose_another_epoch(compose_config, tmp_path,
                                                                                monkeypatch):
    # test labels drawn at random: the test accuracy of each epoch is chance's, and the epoch a
    # runner choosing on the test split would keep is not the one validation picks (here: fixed
    # data and seed, so the same epochs on every CPU)
    labels = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(3))
    root = mnist(tmp_path, "random", labels)
    saved, real_save = [], checkpoints.save_checkpoint

    def keep_every_epoch(state, path):
        if path.name == "last.pt":
            saved.append({key: value.clone() for key, value in state["model"].items()})
        real_save(state, path)

    monkeypatch.setattr("cnnbench.engine.train.save_checkpoint", keep_every_epoch)
    metrics = train(run_on(compose_config, root, "epochs=4", "optimizer.lr=0.005"), tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    cfg = run_on(compose_config, root)
    test = build_data(cfg.data, batch_size=64, seed=0, device=CPU).test
    model = rebuild_model(checkpoint, tmp_path / "run" / "best.pt")
    per_epoch = []
    for weights in saved:
        model.load_state_dict(weights)
        per_epoch.append(evaluate(model, test, CPU)["acc"])
    val = [record["val_acc"] for record in metrics["history"]]
    assert metrics["best_epoch"] == val.index(max(val)) + 1  # chosen on validation...
    assert metrics["best_epoch"] != per_epoch.index(max(per_epoch)) + 1  # ...not where test would choose
    assert metrics["test_acc"] == per_epoch[metrics["best_epoch"] - 1]  # and best.pt's test score reported
    assert metrics["final_test_acc"] == per_epoch[-1]


def test_the_test_metrics_equal_cnnbench_eval_on_best_pt(compose_config, tmp_path):
    root = mnist(tmp_path, "data")
    metrics = train(run_on(compose_config, root, "ema.decay=0.9"), tmp_path / "run")
    assert metrics["protocol"] == "validation" and metrics["test_weights"] == "ema"
    result = evaluate_checkpoint(tmp_path / "run" / "best.pt")  # split=test is the default
    assert result["accuracy"] == metrics["test_acc"] == result["recorded_acc"]
    assert result["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert result["images"] == 200
    assert evaluate_checkpoint(tmp_path / "run" / "best.pt", split="val", weights="live")["accuracy"] == \
        metrics["best_val_acc"]
    last = evaluate_checkpoint(tmp_path / "run" / "last.pt", weights="live")
    assert last["accuracy"] == metrics["final_test_acc"] == last["recorded_acc"]
    per_class = metrics["test_per_class_acc"]
    assert set(per_class) == set(result["per_class"]) and per_class == pytest.approx(result["per_class"])


def test_the_leaderboard_ranks_on_validation_and_prints_the_test_accuracy_with_its_statistics(tmp_path,
                                                                                            compose_config):
    root = mnist(tmp_path, "data")
    sweep = tmp_path / "sweep"
    runs = {}
    for hidden in (8, 32):
        for seed in (0, 1, 2):
            folder = sweep / f"mlp{hidden}_seed={seed}"
            runs[hidden, seed] = train(run_on(compose_config, root, f"model.hidden=[{hidden}]", f"seed={seed}",
                                              "epochs=2"), folder)
    table, _, problems = rebuild_leaderboard(sweep)
    assert not problems and "test acc" in table and "test 95% CI" in table
    with open(sweep / "leaderboard.csv", newline="") as file:
        rows = list(csv.DictReader(file))

    def hidden_of(row: dict) -> int:
        return int(row["folders"].split("_")[0].removeprefix("mlp"))  # the run folders it was computed from

    by_val = sorted((sum(runs[h, s]["best_val_acc"] for s in range(3)) / 3, h) for h in (8, 32))
    assert hidden_of(rows[0]) == by_val[-1][1]  # ranked on validation
    for row in rows:
        test = [runs[hidden_of(row), s]["test_acc"] for s in range(3)]
        assert float(row["test_acc_mean"]) == pytest.approx(sum(test) / 3)
        low, high = confidence_interval(test)
        assert (float(row["test_acc_ci_low"]), float(row["test_acc_ci_high"])) == pytest.approx((low, high))
        assert row["protocol"] == "validation"
    reference = next(row for row in rows if row["test_comparison"] == "reference")
    other = next(row for row in rows if row is not reference)
    p = welch_p([runs[hidden_of(other), s]["test_acc"] for s in range(3)],
                [runs[hidden_of(reference), s]["test_acc"] for s in range(3)])
    assert float(other["test_welch_p"]) == pytest.approx(p)


def test_val_split_0_is_the_textbooks_protocol(compose_config, tmp_path):
    root = mnist(tmp_path, "data")
    metrics = train(run_on(compose_config, root, "data.val_split=0", "epochs=2"), tmp_path / "run")
    assert metrics["protocol"] == "none" and metrics["best_val_acc"] is None
    assert metrics["best_epoch"] == 2 and [r["val_acc"] for r in metrics["history"]] == [None, None]
    assert metrics["test_acc"] == metrics["final_test_acc"] is not None  # best.pt is the last epoch
    assert metrics["split"]["counts"] == {"train": 800, "test": 200}
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2
    with pytest.raises(CnnbenchError, match="early_stopping.patience needs a validation split"):
        train(run_on(compose_config, root, "data.val_split=0", "early_stopping.patience=2"), tmp_path / "other")


def image_run(compose_config, root: Path, *overrides: str):
    return compose_config("data=imagefolder", f"data.root={root}", "data.image_size=16", *overrides)


def split_of(compose_config, root: Path, *overrides: str):
    return build_data(image_run(compose_config, root, *overrides).data, batch_size=8, seed=0, device=CPU)


def test_an_image_folder_splits_three_ways_by_fraction_or_by_its_folders(compose_config, tmp_path, caplog):
    flat = write_image_folder(tmp_path / "flat", classes=("cat", "dog"), per_class=20, size=(16, 16))
    data = split_of(compose_config, flat)
    assert data.split["counts"] == {"train": 28, "val": 6, "test": 6}  # 70/15/15 of 40, per class
    members = data.split["members"]
    assert not (set(members["train"]) & set(members["val"]) or set(members["train"]) & set(members["test"])
                or set(members["val"]) & set(members["test"]))
    assert Counter(Path(path).parts[0] for path in members["test"]) == {"cat": 3, "dog": 3}
    assert split_of(compose_config, flat, "seed=5").split["digest"] == data.split["digest"]  # not the run's seed
    # train/, val/ and test/ folders are used as they are
    for part, count in (("train", 8), ("val", 3), ("test", 2)):
        write_image_folder(tmp_path / "tree" / part, classes=("cat", "dog"), per_class=count, size=(16, 16))
    assert split_of(compose_config, tmp_path / "tree").split["counts"] == {"train": 16, "val": 6, "test": 4}
    # train/ and test/: validation held out of train/
    shutil.rmtree(tmp_path / "tree" / "val")
    assert split_of(compose_config, tmp_path / "tree", "data.val_split=4").split["counts"] == \
        {"train": 12, "val": 4, "test": 4}
    # train/ and val/ alone: no test split, said in a warning
    shutil.rmtree(tmp_path / "tree" / "test")
    write_image_folder(tmp_path / "tree" / "val", classes=("cat", "dog"), per_class=3, size=(16, 16))
    data = split_of(compose_config, tmp_path / "tree")
    assert data.test is None and data.split["counts"] == {"train": 16, "val": 6}
    assert "no test split" in caplog.text


def test_copies_of_training_images_in_validation_and_test_are_found_and_can_be_left_out(compose_config, tmp_path,
                                                                                         caplog):
    flat = write_image_folder(tmp_path / "flat", classes=("cat", "dog"), per_class=20, size=(16, 16))
    plain = split_of(compose_config, flat)
    assert plain.split["how"]["duplicates_across_splits"] == {}
    # a copy of every validation and test image among the training images: a scraped folder
    for part in ("val", "test"):
        for index, path in enumerate(plain.split["members"][part]):
            shutil.copy(flat / path, flat / Path(path).parent / f"copy-{part}-{index}.png")
    copied = split_of(compose_config, flat)
    found = copied.split["how"]["duplicates_across_splits"]
    assert found and sum(found.values()) >= 1 and "exact copies of training images" in caplog.text
    dropped = split_of(compose_config, flat, "data.drop_duplicates=true")
    kept = {part: copied.split["counts"][part] - found.get(part, 0) for part in ("val", "test")}
    assert {part: dropped.split["counts"][part] for part in ("val", "test")} == kept
    # the DataLoader path finds byte-identical copies the same way
    torch_path = split_of(compose_config, flat, "data.loader=torch", "num_workers=0")
    assert torch_path.split["how"]["duplicates_across_splits"] == found


def test_a_run_records_its_split(compose_config, tmp_path):
    root = mnist(tmp_path, "data")
    metrics = train(run_on(compose_config, root, "epochs=1"), tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["counts"] == metrics["split"]["counts"] == {"train": 600, "val": 200, "test": 200}
    assert len(split["members"]["val"]) == 200 and split["digest"] == metrics["split"]["digest"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["split"]["digest"] == split["digest"]
