"""Using a trained model: cnnbench-eval, -predict and -export on a run trained here, and the
checkpoints they refuse."""

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, progress, require_module, write_idx_dataset, write_image_folder
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from cnnbench.data import build_data
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.files import check_output, written_by
from cnnbench.inference.checkpoints import rebuild_model
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.inference.export import export
from cnnbench.inference.predict import find_images, predict, write_predictions
from cnnbench.models import registry


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compose_config):
    """A 2-epoch LeNet run on MNIST-format files (600 train, 200 val): its folder, metrics, data."""
    base = tmp_path_factory.mktemp("use")
    root = base / "data"
    write_idx_dataset(root / "MNIST" / "raw")
    cfg = compose_config("data=mnist", f"data.root={root}", "data.download=false", "data.val_split=0.1", "epochs=2",
                         "batch_size=32", "device=cpu")
    metrics = train(cfg, base / "run")
    return SimpleNamespace(run=base / "run", best=base / "run" / "best.pt", metrics=metrics, root=root)


@pytest.fixture(scope="module")
def trained_rgb(tmp_path_factory, compose_config) -> Path:
    """best.pt of a 2-epoch LeNet run on an RGB image folder (3 classes, 16x16, ImageNet mean/std)."""
    base = tmp_path_factory.mktemp("use-rgb")
    write_image_folder(base / "images", size=(16, 16), per_class=16)
    cfg = compose_config("data=imagefolder", f"data.root={base / 'images'}", "data.image_size=16",
                         "num_workers=0", "epochs=2", "batch_size=8", "optimizer=adam", "device=cpu")
    train(cfg, base / "run")
    return base / "run" / "best.pt"


def run_tool(module: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m cnnbench.cli.<module> ARGS`, as a user types it (seconds each: torch loads again)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"cnnbench.cli.{module}", *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def call_tool(capsys, monkeypatch, tmp_path):
    """call_tool(module, *arguments) -> (exit status, stdout, stderr) of its main() in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def _call(module: str, *arguments: str) -> subprocess.CompletedProcess:
        main = importlib.import_module(f"cnnbench.cli.{module}").main
        monkeypatch.setattr(sys, "argv", [module, *arguments])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(arguments, exit_info.value.code, out, err)
    return _call


def assert_one_line_error(result: subprocess.CompletedProcess, tool: str, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_test_images(folder: Path) -> list[str]:
    """Images in every mode a folder may hold, at odd sizes, plus files predict must skip or report."""
    (folder / "nested").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (50, 17, 3), dtype=np.uint8)  # 17 wide, 50 high
    rgb = Image.fromarray(pixels)
    rgb.save(folder / "rgb.png")
    rgb.save(folder / "nested" / "photo.jpg")
    rgb.convert("L").resize((61, 13)).save(folder / "grey.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("P").save(folder / "palette.png")
    deep = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)  # 16-bit greyscale
    Image.fromarray(deep).save(folder / "deep.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / ".hidden.png").write_bytes(b"not read at all")
    (folder / "notes.txt").write_text("not an image")
    return ["corrupt.png", "deep.png", "grey.png", "nested/photo.jpg", "palette.png", "rgb.png", "rgba.png"]


# ---------------------------------------------------------------- cnnbench-eval

def test_eval_reproduces_the_recorded_accuracy_exactly(trained):
    validation = evaluate_checkpoint(trained.best, split="val")
    recorded = progress(load_checkpoint(trained.best)).best_val_acc
    assert validation["accuracy"] == recorded == trained.metrics["best_val_acc"]
    # the default: the test split, which the run scored once, at its end
    best, last = evaluate_checkpoint(trained.best), evaluate_checkpoint(trained.run / "last.pt")
    assert best["accuracy"] == trained.metrics["test_acc"]
    assert last["accuracy"] == trained.metrics["final_test_acc"]
    assert last["loss"] == pytest.approx(trained.metrics["final_test_loss"], rel=1e-6)
    confusion = np.array(best["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == best["images"] == 200
    assert np.trace(confusion) / 200 == best["accuracy"]
    for index, name in enumerate(best["classes"]):
        assert best["per_class"][name] == confusion[index, index] / confusion[index].sum()


def test_eval_command_writes_eval_json_and_never_overwrites_a_users_file(trained, tmp_path):
    result = run_tool("evaluate", f"ckpt={trained.best}", cwd=tmp_path)  # a real process, as typed
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    written = json.loads((trained.run / "eval.json").read_text())
    assert written["accuracy"] == trained.metrics["best_val_acc"]
    assert sum(map(sum, written["confusion_matrix"])) == 200 and len(written["per_class"]) == 10
    assert written["checkpoint"] == str(trained.best) and written["data"]["name"] == "mnist"
    check_output(trained.run / "eval.json", "cnnbench-eval")  # a previous eval.json may be replaced
    with pytest.raises(CnnbenchError, match="not written by cnnbench-eval"):
        check_output(trained.run / "metrics.json", "cnnbench-eval")


def test_eval_with_data_root_elsewhere(trained, tmp_path):
    write_idx_dataset(tmp_path / "elsewhere" / "MNIST" / "raw", train=40, test=30)
    result = evaluate_checkpoint(trained.best, [f"data.root={tmp_path / 'elsewhere'}", "batch_size=7"])
    assert result["images"] == 30 and result["data"]["root"] == str(tmp_path / "elsewhere")
    assert not result["same_split"] and result["recorded_acc"] is None  # other images: not the run's score


@pytest.mark.parametrize("overrides, message", [
    (["data.rooot=/x"], "data.rooot: no such key"),
    (["model=resnet18"], "model=resnet18: the checkpoint fixes model"),
    (["+model.depth=3"], "model: lenet cannot be built"),
    (["batch_size=0"], "batch_size=0 is out of range"),
    (["data.name=fake", "+data.num_classes=3", "+data.in_channels=1", "+data.image_size=28",
      "+data.num_train=20", "+data.num_val=20"], "3 classes (class_0, class_1, class_2) of 1x28x28 images"),
])
def test_eval_refuses_overrides_that_do_not_fit(trained, overrides, message):
    with pytest.raises(CnnbenchError) as error:
        evaluate_checkpoint(trained.best, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_key_is_one_line_on_the_command_line(trained, call_tool):
    result = call_tool("evaluate", f"ckpt={trained.best}", "data.rooot=/x")
    assert_one_line_error(result, "cnnbench-eval", "data.rooot")


def test_eval_command_adds_keys_with_plus_and_replaces_only_its_own_out_file(trained, tmp_path, call_tool):
    # +key=value adds a key the stored config lacks (without the +, the same key is refused above)
    added = call_tool("evaluate", f"ckpt={trained.best}", "+data.note=relabelled", "out=first.json")
    assert added.returncode == 0, added.stderr
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["overrides"] == ["+data.note=relabelled"] and first["data"]["note"] == "relabelled"
    assert first["accuracy"] == trained.metrics["best_val_acc"]
    # out= an earlier eval.json: replaced
    again = call_tool("evaluate", f"ckpt={trained.best}", "batch_size=7", "out=first.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "first.json").read_text())["overrides"] == ["batch_size=7"]
    # out= a file of the user's: refused before any work, and left as it was
    (tmp_path / "notes.json").write_text('{"mine": true}')
    refused = call_tool("evaluate", f"ckpt={trained.best}", "out=notes.json")
    assert_one_line_error(refused, "cnnbench-eval", "notes.json exists and was not written by cnnbench-eval")
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}'


# ---------------------------------------------------------------- cnnbench-predict

def test_predict_reads_every_image_mode_and_size(trained, tmp_path):
    names = write_test_images(tmp_path / "images")
    files = find_images(str(tmp_path / "images"))
    assert [str(f.relative_to(tmp_path / "images")) for f in files] == names  # sorted, hidden/txt skipped
    rows, problems = predict(trained.best, files, topk=3, device="cpu")
    classes = load_checkpoint(trained.best)["classes"]
    assert len(rows) == len(names) - 1 and len(problems) == 1 and "corrupt.png" in problems[0]
    for row in rows:
        probabilities = [guess["probability"] for guess in row["top"]]
        assert len(row["top"]) == 3 and all(guess["class"] in classes for guess in row["top"])
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6

    write_predictions(rows, tmp_path / "preds.json", str(trained.best))
    saved = json.loads((tmp_path / "preds.json").read_text())
    assert [row["file"] for row in saved["predictions"]] == [row["file"] for row in rows]


def write_mode_images(folder: Path) -> list[Path]:
    """One picture in every mode and at sizes other than the models', made so that a wrong
    conversion shows: channels that differ (greyscale weights), 1-pixel stripes (a resize without
    antialiasing aliases them), 16-bit values above 255 (clipping instead of scaling)."""
    folder.mkdir(parents=True)
    height, width = 37, 61
    rows, columns = np.mgrid[0:height, 0:width]
    grey = np.where(rows < height // 3, 220, 30).astype(np.uint8)  # a bright band at the top
    grey[rows >= 2 * height // 3] = np.where(columns[rows >= 2 * height // 3] % 2, 0, 255)
    colour = np.stack([grey, 255 - grey, np.roll(grey, 5, axis=1)], axis=-1)
    Image.fromarray(colour).save(folder / "rgb.png")
    Image.fromarray(colour).save(folder / "photo.jpg", quality=95)
    Image.fromarray(grey).save(folder / "grey.png")
    alpha = (np.arange(width) * 4 % 256).astype(np.uint8)[None].repeat(height, 0)
    Image.fromarray(np.dstack([colour, alpha])).save(folder / "rgba.png")
    Image.fromarray(colour).convert("P").save(folder / "palette.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "deep.png")  # 16-bit greyscale
    Image.fromarray(colour).resize((11, 9)).save(folder / "small.png")  # smaller than training: enlarged
    return sorted(folder.iterdir())


def as_trained(path: Path, checkpoint: dict) -> torch.Tensor:
    """What README says predict makes of an image file, written out independently: greyscale or
    RGB as the model was trained (PIL's conversions; 16-bit scaled to 8 bits, not clipped),
    resized to the training size (bilinear, antialiased), normalised with the run's mean and std."""
    with Image.open(path) as image:
        image.load()
        if image.mode.startswith("I"):
            scaled = np.asarray(image, dtype=np.float64) * 255 / 65535
            image = Image.fromarray(scaled.round().astype(np.uint8))
        image = image.convert("L" if checkpoint["in_channels"] == 1 else "RGB")
    pixels = torch.tensor(np.asarray(image), dtype=torch.float32).reshape(image.height, image.width, -1)
    pixels = F.interpolate(pixels.permute(2, 0, 1)[None], size=tuple(checkpoint["image_size"]),
                           mode="bilinear", antialias=True, align_corners=False)[0].round().clamp(0, 255)
    mean, std = (torch.tensor(checkpoint["config"]["data"][key]).view(-1, 1, 1) for key in ("mean", "std"))
    return (pixels / 255 - mean) / std


@pytest.mark.parametrize("model", ["greyscale", "rgb"])
def test_predict_converts_every_image_mode_and_size_as_the_model_was_trained(trained, trained_rgb, tmp_path,
                                                                              model):
    best = trained.best if model == "greyscale" else trained_rgb
    files = write_mode_images(tmp_path / "images")
    checkpoint = load_checkpoint(best)
    classes = len(checkpoint["classes"])
    rows, problems = predict(best, files, topk=classes, device="cpu")
    assert problems == [] and [row["file"] for row in rows] == [str(file) for file in files]
    with torch.no_grad():
        expected = rebuild_model(checkpoint, best)(torch.stack([as_trained(f, checkpoint) for f in files]))
    for row, probabilities in zip(rows, expected.softmax(1).tolist(), strict=True):
        got = {guess["index"]: guess["probability"] for guess in row["top"]}
        # The tolerance allows another antialiased resize (one grey level here and there); each
        # wrong conversion tried (greyscale from the red channel, 16-bit clipped, resize without
        # antialiasing or nearest) moved a probability here by 0.01 to 0.99 for one model or both.
        assert [got[index] for index in range(classes)] == pytest.approx(probabilities, abs=6e-3), row["file"]


def test_predict_takes_a_recursive_glob_and_writes_each_class_index_in_json(trained, tmp_path, call_tool):
    write_test_images(tmp_path / "images")
    (tmp_path / "images" / "nested" / "deeper").mkdir()
    Image.new("RGB", (20, 20), "white").save(tmp_path / "images" / "nested" / "deeper" / "white.jpg")
    result = call_tool("predict", f"ckpt={trained.best}", "inputs=images/**/*.jpg", "topk=3",
                       "out=preds.json")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "preds.json").read_text())
    # ** reaches every depth: the top folder has no .jpg, nested/ and nested/deeper/ have one each
    assert [row["file"] for row in saved["predictions"]] == ["images/nested/deeper/white.jpg",
                                                             "images/nested/photo.jpg"]
    classes = load_checkpoint(trained.best)["classes"]
    for row in saved["predictions"]:
        assert len(row["top"]) == 3 and len({guess["index"] for guess in row["top"]}) == 3
        for guess in row["top"]:
            assert classes[guess["index"]] == guess["class"]
    assert saved["tool"] == "cnnbench-predict" and saved["checkpoint"] == str(trained.best)
    only_top = call_tool("predict", f"ckpt={trained.best}", "inputs=images/*.jpg")  # one level only
    assert only_top.returncode == 2 and "no image files there" in only_top.stderr


def test_predict_command_names_the_corrupt_file_and_writes_csv(trained, tmp_path, call_tool):
    write_test_images(tmp_path / "images")
    result = call_tool("predict", f"ckpt={trained.best}", "inputs=images", "topk=2", "out=preds.csv")
    problems = result.stderr.strip().splitlines()
    assert result.returncode == 0 and len(problems) == 1 and "images/corrupt.png" in problems[0]
    with open(tmp_path / "preds.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 6
    assert list(table[0]) == ["file", "class_1", "probability_1", "class_2", "probability_2"]
    assert all(0 <= float(row["probability_2"]) <= float(row["probability_1"]) <= 1 for row in table)

    only_corrupt = call_tool("predict", f"ckpt={trained.best}", "inputs=images/corrupt.png")
    assert only_corrupt.returncode == 2 and "none of the 1 input file(s)" in only_corrupt.stderr


def test_predict_writes_file_names_that_are_not_utf8_as_their_bytes(trained, tmp_path):
    images, names = tmp_path / "images", [b"caf\xe9.png", b"\xff\xfe.png"]
    images.mkdir()
    try:
        for name in names:
            Image.new("L", (28, 28), 128).save(os.fsdecode(os.fsencode(images) + b"/" + name), "PNG")
    except OSError:
        pytest.skip("this file system takes only UTF-8 file names")
    # PYTHONIOENCODING=utf-8: stdout as strict as in an en_US.UTF-8 locale (C.UTF-8 is lenient)
    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.predict", f"ckpt={trained.best}",
                             "inputs=images", "out=preds.csv"], cwd=tmp_path, capture_output=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                              "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert all(b"images/" + name in result.stdout for name in names)  # the console: their own bytes
    with open(tmp_path / "preds.csv", newline="", encoding="utf-8", errors="surrogateescape") as file:
        written = [os.fsencode(row["file"]) for row in csv.DictReader(file)]
    assert sorted(written) == sorted(b"images/" + name for name in names)  # the CSV: the same bytes
    check_output(tmp_path / "preds.csv", "cnnbench-predict")  # still known as predict's own, to replace
    rows, _ = predict(trained.best, find_images(str(images)))
    write_predictions(rows, tmp_path / "preds.json", str(trained.best))
    saved = json.loads((tmp_path / "preds.json").read_text())  # JSON: surrogateescape's escapes
    assert sorted(os.fsencode(row["file"]) for row in saved["predictions"]) == \
        sorted(os.fsencode(images) + b"/" + name for name in names)


def test_predict_sees_images_as_training_did(trained, tmp_path):
    # Validation images saved as PNGs must get the model's own probabilities on the in-memory batch.
    checkpoint = load_checkpoint(trained.best)
    cfg = checkpoint["config"]["data"]
    data = build_data(OmegaConf.create(cfg), batch_size=8, seed=0, device=torch.device("cpu"))
    images, _ = next(iter(data.val))
    pixels = (images * cfg["std"][0] + cfg["mean"][0]) * 255
    files = []
    for index, image in enumerate(pixels.round().clamp(0, 255).to(torch.uint8)):
        files.append(tmp_path / f"{index}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    rows, _ = predict(trained.best, files, topk=1, device="cpu")
    with torch.no_grad():
        expected = rebuild_model(checkpoint, trained.best)(images).softmax(1).max(1)
    assert [row["top"][0]["index"] for row in rows] == expected.indices.tolist()
    assert [row["top"][0]["probability"] for row in rows] == pytest.approx(expected.values.tolist(), abs=1e-5)


def test_predict_and_export_need_no_dataset(trained, tmp_path, call_tool):
    write_test_images(tmp_path / "images")
    hidden = trained.root.with_name("data-moved-away")
    trained.root.rename(hidden)  # this machine has the checkpoint only
    try:
        result = call_tool("predict", f"ckpt={trained.best}", "inputs=images/*.png", "out=preds.json")
        check = export(trained.best, "torchscript", tmp_path / "model.torchscript.pt")
    finally:
        hidden.rename(trained.root)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((tmp_path / "preds.json").read_text())["predictions"]) == 5
    assert "random inputs" in check["inputs"] and check["matches"] and check["difference"] <= 1e-4


# ---------------------------------------------------------------- cnnbench-export

@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_torchscript_matches_pytorch(trained):
    check = export(trained.best, "torchscript")
    path = check["path"]
    assert path == trained.run / "best.torchscript.pt" and check["matches"] and check["difference"] <= 1e-4
    assert check["inputs"].startswith("32 validation images of mnist")
    images = torch.randn(5, 1, 28, 28)  # another batch size than the one traced
    model = rebuild_model(load_checkpoint(trained.best), trained.best)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(path))(images), model(images), atol=1e-4)


def test_export_onnx_matches_pytorch_at_any_batch_size(trained, tmp_path, call_tool):
    # skipped without onnxruntime, saying how to install it; in CI (which installs it) a failure
    onnxruntime = require_module("onnxruntime", "pip install 'cnnbench[onnx]'")
    result = call_tool("export", f"ckpt={trained.best}", "format=onnx", f"out={tmp_path / 'lenet.onnx'}")
    assert result.returncode == 0, result.stderr
    assert "max abs difference from PyTorch" in result.stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "lenet.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = rebuild_model(load_checkpoint(trained.best), trained.best)(images)
    logits = session.run(None, {"images": images.numpy()})[0]
    assert np.abs(logits - expected.numpy()).max() <= 1e-4


class BatchDependentNet(nn.Module):
    """Adds 1 to every logit for batches of more than 2 images: Python control flow, which
    TorchScript's tracer (given 2 images) freezes into the file, so the file no longer reproduces
    the model on the check batch."""

    def __init__(self, num_classes: int, in_channels: int, image_size: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.linear(images.flatten(1))
        return logits + 1 if images.shape[0] > 2 else logits


def batch_dependent_net(num_classes: int, in_channels: int, image_size: list[int]) -> nn.Module:
    """A user's own model (registered in the test below)."""
    return BatchDependentNet(num_classes, in_channels, image_size)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_exits_1_when_the_file_does_not_reproduce_the_model(tmp_path, compose_config, call_tool,
                                                                   monkeypatch):
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))  # registered for this test only
    registry.register_model(batch_dependent_net)
    cfg = compose_config("data=fake", "data.num_train=64", "data.num_val=32", "batch_size=32", "epochs=1",
                         "device=cpu", f"model._target_={__name__}.batch_dependent_net")
    train(cfg, tmp_path / "run")
    result = call_tool("export", f"ckpt={tmp_path / 'run' / 'best.pt'}", "format=torchscript")
    assert result.returncode == 1
    assert ("checked on 32 validation images of fake: max abs difference from PyTorch 1.00e+00"
            in result.stdout)
    assert result.stderr.splitlines() == [
        f"cnnbench-export: error: {tmp_path / 'run' / 'best.torchscript.pt'} does not reproduce the model: "
        "its logits differ by up to 1.00e+00, more than 0.0001 + 1e-05 x |logit|"]


def test_export_refuses_unknown_formats_and_overwriting_the_checkpoint(trained):
    with pytest.raises(CnnbenchError, match="format='tflite' is not supported: use onnx or torchscript"):
        export(trained.best, "tflite")
    with pytest.raises(CnnbenchError, match="exists and was not written by cnnbench-export; give out= a new "
                                            "name ending in .torchscript.pt"):
        export(trained.best, "torchscript", out=trained.best)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("file_format, name", [("onnx", "best.onnx"), ("torchscript", "best.torchscript.pt")])
def test_export_replaces_its_own_export_and_never_a_users_file_of_that_name(trained, tmp_path, call_tool,
                                                                           file_format, name):
    if file_format == "onnx":
        require_module("onnxruntime", "pip install 'cnnbench[onnx]'")
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(trained.best.read_bytes())
    (run / name).write_bytes(b"a model of the user's own, from another tool")
    refused = call_tool("export", f"ckpt={run / 'best.pt'}", f"format={file_format}")
    assert_one_line_error(refused, "cnnbench-export", f"{run / name} exists and was not written by "
                                                      "cnnbench-export")
    assert (run / name).read_bytes() == b"a model of the user's own, from another tool"
    (run / name).unlink()
    for _ in range(2):  # its own export, replaced by the next one
        done = call_tool("export", f"ckpt={run / 'best.pt'}", f"format={file_format}")
        assert done.returncode == 0, done.stderr
    assert written_by(run / name) == "cnnbench-export"


# ---------------------------------------------------------------- checkpoints that are refused

class Payload:
    """Unpickling this runs a shell command: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    # In a separate process, as a user meets it: exit status, one line, and no marker file.
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(marker), "config": {}, "classes": ["a", "b"], "epoch": 1},
               tmp_path / "best.pt")
    result = run_tool("evaluate", "ckpt=best.pt", cwd=tmp_path)
    assert_one_line_error(result, "cnnbench-eval", "was refused", "would run code")
    with pytest.raises(CnnbenchError, match="was refused"):
        load_checkpoint(tmp_path / "best.pt")
    assert not marker.exists()


@pytest.mark.parametrize("tool, arguments, problem", [
    ("evaluate", [], "does not exist"),
    ("predict", ["inputs=."], "is not a readable checkpoint (truncated or damaged?)"),
    ("export", ["format=onnx"], "is not a PyTorch checkpoint"),
])
def test_unusable_checkpoints_are_one_line(trained, tmp_path, call_tool, tool, arguments, problem):
    if tool == "predict":  # half of a real checkpoint
        data = trained.best.read_bytes()
        (tmp_path / "model.pt").write_bytes(data[:len(data) // 2])
        Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    elif tool == "export":  # a picture, not a checkpoint
        Image.new("RGB", (8, 8)).save(tmp_path / "model.pt", format="PNG")
    result = call_tool(tool, "ckpt=model.pt", *arguments)
    names = {"evaluate": "cnnbench-eval", "predict": "cnnbench-predict", "export": "cnnbench-export"}
    assert_one_line_error(result, names[tool], "model.pt", problem)
