"""Starting from ImageNet (issue #25): torchvision's weights in cnnbench's models, and fine-tuning.

No network here: every test builds torchvision's own model with random weights, saves its state
dict where torchvision's weight API caches it (TORCH_HOME/hub/checkpoints: model.weights=imagenet)
or as a file (model.weights=PATH), and loads it through cnnbench's own code.

- The mapping is exact: for every family, a cnnbench model loaded from torchvision's state dict
  computes torchvision's logits at 224 px (eval mode); the head is new, sized for the data; a
  1-channel model computes on a grey image what torchvision's computes on it in RGB.
- What does not fit is one line naming the key and the fix: the CIFAR stem, other widths, VGG's FC
  layers at another size, models without weights, files that are not state dicts.
- Fine-tuning: frozen parameters unchanged by the head's epochs and changed after; the two
  learning-rate groups as configured; an exact resume mid-fine-tune; checkpoints that need neither
  the network nor the weights file.
"""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, GET_SHARED_DATA, require_data, torchvision_cache_file, torchvision_model, \
    write_torchvision_weights
from test_cli import assert_one_line_error
from test_configs import run_cli
from test_faults import assert_same_run, inject
from test_models import _one_thread  # noqa: F401  (autouse: big models' batch-1 forwards on one thread)
from torch import nn

from cnnbench.config.checks import check_config
from cnnbench.engine.build import build_model, build_optimizer
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.inference.evaluate import evaluate_checkpoint
from cnnbench.inference.export import export
from cnnbench.inference.predict import predict
from cnnbench.models import get_model
from cnnbench.models.torchvision_weights import IMAGENET_MEAN, IMAGENET_STD, from_torchvision, head_name

# (torchvision's name, cnnbench's model and options); the big ones take seconds to build and run
FAMILIES = [("resnet18", "resnet18", {}), ("resnet34", "resnet34", {}), ("resnet50", "resnet50", {}),
            ("resnet101", "resnet101", {}), ("resnet152", "resnet152", {}),
            *[(f"vgg{depth}{suffix}", f"vgg{depth}", {"batch_norm": bool(suffix)})
              for depth in (11, 13, 16, 19) for suffix in ("", "_bn")],
            ("densenet121", "densenet121", {}), ("densenet169", "densenet169", {}),
            ("densenet201", "densenet201", {})]
QUICK = {"resnet18", "resnet34", "resnet50", "densenet121", "densenet169", "densenet201"}

# A small fine-tuning run: ResNet-18 from the weights file at 32 px (the ImageNet stem, as the
# weights need), crops and flips, SGD with momentum, cosine; epoch 1 trains the head alone
TINY = ["model=resnet18", "model.stem=imagenet", "data=fake", "data.image_size=32", "data.num_train=64",
        "data.num_val=32", "data.num_test=32", f"data.mean=[{','.join(map(str, IMAGENET_MEAN))}]",
        f"data.std=[{','.join(map(str, IMAGENET_STD))}]", "data.augment.crop_padding=2", "data.augment.hflip=true",
        "batch_size=16", "epochs=2", "finetune.freeze_epochs=1", "finetune.backbone_lr_scale=0.1", "device=cpu",
        "num_workers=0", "threads=1"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """The network unreachable, whatever the machine: torchvision's downloads fail at once."""
    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("the network is unreachable (tests)")
    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)


def replace_head(model: nn.Module, name: str) -> nn.Module:
    """`model` with the module `name` made an identity: what it computes before its head."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def without_head(model: nn.Module) -> nn.Module:
    return replace_head(model, head_name(model))


# ---------------------------------------------------------------- the mapping is exact

@pytest.mark.parametrize("architecture, name, options", [
    pytest.param(*family, marks=[] if family[0] in QUICK else [pytest.mark.slow], id=family[0])
    for family in FAMILIES])
def test_a_model_loaded_from_torchvisions_state_dict_computes_torchvisions_logits(architecture, name, options):
    theirs = torchvision_model(architecture)
    ours = get_model(name, num_classes=1000, in_channels=3, image_size=224, **options).eval()
    ours.load_state_dict(from_torchvision(architecture, theirs.state_dict()))  # strict: every key, once
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = theirs(image)
        assert torch.isfinite(logits).all()  # (random BatchNorm statistics make deep ones large, not inf)
        torch.testing.assert_close(ours(image), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture, name, options", [
    ("resnet18", "resnet18", {}),
    ("densenet121", "densenet121", {}),
    pytest.param("vgg11_bn", "vgg11", {"batch_norm": True}, marks=pytest.mark.slow)])
def test_weights_from_a_file_fill_all_but_the_head_which_fits_the_data(tmp_path, architecture, name, options):
    path = write_torchvision_weights(architecture, tmp_path / f"{architecture}.pth")
    ours = get_model(name, num_classes=5, in_channels=3, image_size=224, weights=str(path), **options).eval()
    assert ours.get_submodule(head_name(ours)).out_features == 5  # the head: new, for the data's classes
    theirs = torchvision_model(architecture)
    image = torch.randn(2, 3, 224, 224)
    with torch.no_grad():  # what comes before the head is torchvision's
        torch.testing.assert_close(without_head(ours)(image), without_head(theirs)(image), rtol=1e-5, atol=1e-5)


def test_imagenet_weights_come_through_torchvisions_weight_api_and_its_cache(torch_home, compose_config):
    cfg = compose_config("model=resnet18", "model.weights=imagenet")
    ours = build_model(cfg.model, num_classes=3, in_channels=3, image_size=[224, 224]).eval()
    theirs = torchvision_model("resnet18")
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(without_head(ours)(image), without_head(theirs)(image), rtol=1e-5, atol=1e-5)


def test_imagenet_weights_offline_and_not_cached_are_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cached = torchvision_cache_file("resnet18", tmp_path / "empty")
    with pytest.raises(CnnbenchError) as refused:
        get_model("resnet18", num_classes=3, weights="imagenet")
    message = str(refused.value)
    assert "cannot fetch torchvision's ResNet18_Weights.IMAGENET1K_V1" in message and "\n" not in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and str(cached) in message


def test_torchvisions_own_densenet_files_with_their_old_names_load_too(tmp_path):
    # the downloadable DenseNet files predate torchvision 0.3: norm.1 for norm1, no num_batches_tracked
    theirs = torchvision_model("densenet121")
    old = {key.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): value
           for key, value in theirs.state_dict().items() if not key.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "densenet121-a639ec97.pth")
    ours = get_model("densenet121", num_classes=1000, weights=str(tmp_path / "densenet121-a639ec97.pth")).eval()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(without_head(ours)(image), without_head(theirs)(image), rtol=1e-5, atol=1e-5)


def test_a_greyscale_model_sums_the_first_convolution_over_rgb(resnet18_weights):
    ours = get_model("resnet18", num_classes=10, in_channels=1, image_size=96, weights=str(resnet18_weights)).eval()
    theirs = torchvision_model("resnet18")
    assert torch.equal(ours.stem[0].weight, theirs.conv1.weight.sum(1, keepdim=True))
    grey = torch.rand(2, 1, 96, 96)
    with torch.no_grad():  # a grey image is R = G = B: what the RGB network computes on it in colour
        torch.testing.assert_close(without_head(ours)(grey), without_head(theirs)(grey.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_vggs_linear_classifier_takes_the_convolutions_only(tmp_path):
    path = write_torchvision_weights("vgg11", tmp_path / "vgg11.pth")
    ours = get_model("vgg11", num_classes=10, image_size=32, classifier="linear", weights=str(path))
    theirs = torchvision_model("vgg11")
    assert all(torch.equal(ours.features.state_dict()[key], value) for key, value in theirs.features.state_dict().items())


# ---------------------------------------------------------------- what does not fit: one line

@pytest.mark.parametrize("options, fragments", [
    ({"image_size": 32}, ["conv1.weight is the 7x7 convolution of the ImageNet stem", "CIFAR stem's 3x3",
                          "set model.stem=imagenet"]),
    ({"in_channels": 4}, ["conv1.weight is [64, 3, 7, 7]", "stem.0.weight is [64, 4, 7, 7]", "give RGB images"]),
])
def test_a_resnet_that_torchvisions_weights_do_not_fit_is_refused_naming_the_key(resnet18_weights, options,
                                                                                  fragments):
    with pytest.raises(CnnbenchError) as refused:
        get_model("resnet18", num_classes=3, weights=str(resnet18_weights), **options)
    assert "\n" not in str(refused.value) and all(fragment in str(refused.value) for fragment in fragments)


@pytest.mark.slow
@pytest.mark.parametrize("options, fragments", [
    ({"image_size": 96}, ["classifier.0.weight is [4096, 25088]", "classifier.1.weight is [4096, 4608]",
                          "data.resize=224", "model.classifier=linear"]),
    ({"width_ratio": 0.25}, ["features.0.weight is [64, 3, 3, 3]", "[16, 3, 3, 3]", "model.width_ratio=1.0"]),
])
def test_a_vgg_that_torchvisions_weights_do_not_fit_is_refused_naming_the_key(tmp_path, options, fragments):
    path = write_torchvision_weights("vgg11", tmp_path / "vgg11.pth")
    with pytest.raises(CnnbenchError) as refused:
        get_model("vgg11", num_classes=3, weights=str(path), **options)
    assert "\n" not in str(refused.value) and all(fragment in str(refused.value) for fragment in fragments)


def test_weights_of_another_network_or_no_state_dict_are_refused(tmp_path, resnet18_weights):
    def refusal(weights: str, name: str = "resnet34") -> str:
        with pytest.raises(CnnbenchError) as refused:
            get_model(name, num_classes=3, weights=weights)
        assert "\n" not in str(refused.value)
        return str(refused.value)

    assert "the weights have nothing for stages.0.2.residual.0.0.weight" in refusal(str(resnet18_weights))
    resnet34 = write_torchvision_weights("resnet34", tmp_path / "resnet34.pth")
    assert "torchvision's layer1.2.conv1.weight has no place in this resnet18" in refusal(str(resnet34), "resnet18")
    assert "model.weights: conv1.weight is not a key of torchvision's densenet121" in refusal(
        str(resnet18_weights), "densenet121")
    assert "no such file" in refusal(str(tmp_path / "missing.pth"))
    torch.save({"epoch": 3}, tmp_path / "no-tensors.pth")
    assert "holds no state dict" in refusal(str(tmp_path / "no-tensors.pth"))
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled-module.pth")  # would unpickle code
    assert "weights_only=True" in refusal(str(tmp_path / "pickled-module.pth"))


WHY_NONE = {"alexnet": "torchvision's weights are for its 64-192-384-256-256 variant",
            "googlenet": "a real 5x5 branch"}


# the key is in no model's YAML but those with weights (googlenet), or added (+model.weights: lenet)
@pytest.mark.parametrize("model, override", [("googlenet", "model.weights=imagenet"),
                                             ("lenet", "+model.weights=imagenet")])
def test_models_without_pretrained_weights_refuse_them_in_one_line(tmp_path, model, override):
    result = run_cli(f"model={model}", override, "data=fake", "hydra.run.dir=run", cwd=tmp_path)
    assert_one_line_error(result, f"model.weights: {model} takes no pretrained weights",
                          "resnet18, resnet34, resnet50, resnet101, resnet152", "vgg11", "densenet121",
                          WHY_NONE.get(model, "torchvision has no weights for it"))
    assert not (tmp_path / "run" / ".hydra").exists()


@pytest.mark.parametrize("model", ["alexnet", "resdensenet", "densenet_small", "resnet9"])
def test_every_other_model_refuses_weights_as_it_is_built(compose_config, model):
    cfg = compose_config(f"model={model}", "+model.weights=imagenet")
    with pytest.raises(CnnbenchError, match=f"model.weights: {model} takes no pretrained weights") as refused:
        build_model(cfg.model, num_classes=3, in_channels=3, image_size=[224, 224])
    assert WHY_NONE.get(model, "torchvision has no weights for it") in str(refused.value)


@pytest.mark.parametrize("overrides, message", [
    (["finetune.freeze_epochs=1"], "finetune.freeze_epochs=1 fine-tunes pretrained weights, and this run has none"),
    (["finetune.backbone_lr_scale=0.1"], "set model.weights=imagenet (or a state-dict file), or "
                                         "finetune.backbone_lr_scale=1"),
    (["model=resnet18", "model.weights=5"], "model.weights=5 is not null, imagenet or the path of a torchvision"),
    (["model=resnet18", "model.weights=imagenet", "finetune.freeze_epochs=-1"],
     "finetune.freeze_epochs=-1 is out of range: must be an integer >= 0"),
    (["model=resnet18", "model.weights=imagenet", "finetune.backbone_lr_scale=0"],
     "finetune.backbone_lr_scale=0 is out of range: must be a number > 0"),
    (["finetune=1"], "finetune=1 would replace a group of keys"),
])
def test_bad_fine_tuning_keys_are_refused_before_any_data_loads(compose_config, overrides, message):
    with pytest.raises(CnnbenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_config(compose_config(*overrides))


# ---------------------------------------------------------------- fine-tuning

def tensors(checkpoint: dict, keys: list[str]) -> dict[str, torch.Tensor]:
    return {key: checkpoint["model"][key] for key in keys}


def test_the_pretrained_part_stays_frozen_for_freeze_epochs_then_trains(compose_config, tmp_path, resnet18_weights):
    weights = tmp_path / "resnet18.pth"  # a copy, deleted before the resume: it needs none
    weights.write_bytes(resnet18_weights.read_bytes())
    run = [*TINY, f"model.weights={weights}"]
    first = train(compose_config(*run, "epochs=1"), tmp_path / "run")
    assert "lr_pretrained" in first["history"][0]
    pretrained = from_torchvision("resnet18", torch.load(weights, weights_only=True))
    body = [key for key in pretrained if not key.startswith("head.")]  # BatchNorm statistics too
    after_one = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.equal(after_one["model"][key], pretrained[key]) for key in body)  # bit for bit
    head = tensors(after_one, ["head.2.weight", "head.2.bias"])
    weights.unlink()
    second = train(compose_config(*run, "epochs=2"), tmp_path / "run", resume_from=True)
    after_two = load_checkpoint(tmp_path / "run" / "last.pt")
    assert second["epochs_done"] == 2
    # everything trains in epoch 2: every weight, and BatchNorm's statistics (4 steps of them)
    assert not [key for key in body if torch.equal(after_two["model"][key], pretrained[key])]
    assert not torch.equal(after_two["model"]["head.2.weight"], head["head.2.weight"])
    assert after_two["model"]["stem.1.num_batches_tracked"] == after_one["model"]["stem.1.num_batches_tracked"] + 4


@pytest.mark.parametrize("scheduler, warmup", [("cosine", 0), ("onecycle", 0), ("step", 1)])
def test_the_head_and_the_pretrained_part_learn_at_the_configured_rates(compose_config, resnet18_weights,
                                                                        scheduler, warmup):
    cfg = compose_config(*TINY, f"model.weights={resnet18_weights}", f"scheduler={scheduler}",
                         f"warmup_epochs={warmup}", "optimizer=adamw", "optimizer.lr=0.002")
    cfg.steps_per_epoch = 4
    model = build_model(cfg.model, num_classes=10, in_channels=3, image_size=[32, 32])
    optimizer, schedule = build_optimizer(cfg, model)
    head, pretrained = optimizer.param_groups
    assert [id(p) for p in head["params"]] == [id(model.head[2].weight), id(model.head[2].bias)]
    assert len(head["params"]) + len(pretrained["params"]) == len(list(model.parameters()))
    for _ in range(cfg.epochs * cfg.steps_per_epoch):  # the whole run: the rates keep their ratio, 10:1
        assert pretrained["lr"] == pytest.approx(0.1 * head["lr"], rel=1e-9)
        optimizer.step()
        schedule.step()
    if scheduler == "onecycle":  # one-cycle's max_lr, one per group
        assert (head["max_lr"], pretrained["max_lr"]) == pytest.approx((0.002, 0.0002))


def test_a_run_without_weights_keeps_one_group(compose_config):
    cfg = compose_config("model=resnet18")
    cfg.steps_per_epoch = 1
    optimizer, _ = build_optimizer(cfg, get_model("resnet18", num_classes=3, image_size=32))
    assert len(optimizer.param_groups) == 1


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, resnet18_weights) -> Path:
    """The small fine-tuning run trained start to finish in its own process."""
    folder = tmp_path_factory.mktemp("finetune-uninterrupted")
    result = run_cli(*TINY, f"model.weights={resnet18_weights}", "checkpoint.every_n_steps=2", "hydra.run.dir=run",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


# the TensorBoard sample is batch 1; epoch 1 (head only) is batches 2-5, epoch 2 batches 6-9
@pytest.mark.parametrize("at, saved", [
    ("train-batch:9", (1, 2)),  # in epoch 2, the first with everything training: saved at its step 2
    pytest.param("train-batch:5", (0, 2), marks=pytest.mark.slow),  # in the frozen epoch: saved at its step 2
])
def test_a_fine_tuning_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, uninterrupted, resnet18_weights,
                                                                       at, saved):
    arguments = [*TINY, f"model.weights={resnet18_weights}", "checkpoint.every_n_steps=2", "hydra.run.dir=run"]
    killed = inject("kill", at, *arguments, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (checkpoint["epoch"], checkpoint["progress"]["step"]) == saved
    saved_groups = [{key: value for key, value in group.items() if key != "params"}
                    for group in checkpoint["optimizer"]["param_groups"]]
    assert len(saved_groups) == 2 and saved_groups[1]["lr"] == pytest.approx(0.1 * saved_groups[0]["lr"])
    resumed = run_cli(f"resume={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "run", uninterrupted)
    theirs = json.loads((uninterrupted / "metrics.json").read_text())["history"]
    ours = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [r["lr_pretrained"] for r in ours] == [r["lr_pretrained"] for r in theirs]
    groups = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert groups == load_checkpoint(uninterrupted / "last.pt")["optimizer"]["param_groups"]


@pytest.mark.slow
def test_two_processes_fine_tune_with_a_frozen_epoch_and_agree(tmp_path, resnet18_weights):
    # DistributedDataParallel meets parameters without gradients in the frozen epoch (gloo, 2 CPU processes)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "cnnbench", *TINY, f"model.weights={resnet18_weights}", "hydra.run.dir=run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reported = dict(re.findall(r"rank (\d): best val acc ([0-9.]+)", result.stdout))
    assert float(reported["0"]) == float(reported["1"]) == pytest.approx(metrics["best_val_acc"], abs=1e-6)
    assert metrics["status"] == "finished" and metrics["epochs_done"] == 2


def test_a_resume_may_change_the_pretrained_parts_rate_but_not_the_frozen_epochs(compose_config, tmp_path,
                                                                                  resnet18_weights):
    run = [*TINY, f"model.weights={resnet18_weights}"]
    train(compose_config(*run, "epochs=1"), tmp_path / "run")
    with pytest.raises(CnnbenchError, match=r"finetune.freeze_epochs=2 \(the run has 1\)"):
        train(compose_config(*run, "epochs=2", "finetune.freeze_epochs=2"), tmp_path / "run", resume_from=True)
    resumed = train(compose_config(*run, "epochs=2", "finetune.backbone_lr_scale=0.5"), tmp_path / "run",
                    resume_from=True)
    second = resumed["history"][1]
    assert second["lr_pretrained"] == pytest.approx(0.5 * second["lr"])
    assert resumed["resumes"][-1]["changed"]["finetune.backbone_lr_scale"] == [0.1, 0.5]


def test_a_run_normalising_otherwise_than_its_weights_is_warned(compose_config, tmp_path, resnet18_weights, caplog):
    train(compose_config(*TINY, f"model.weights={resnet18_weights}", "epochs=1", "data.mean=[0.5,0.5,0.5]",
                         "data.std=[0.25,0.25,0.25]"), tmp_path / "run")
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("expect images normalised with ImageNet's mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]"
               in message and "set data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225]" in message
               for message in warned), warned
    caplog.clear()
    train(compose_config(*TINY, f"model.weights={resnet18_weights}", "epochs=1"), tmp_path / "quiet")
    assert not [record for record in caplog.records if "normalised" in record.getMessage()]


def test_a_fine_tuned_checkpoint_holds_every_weight_eval_predict_export_need_no_network(
        compose_config, tmp_path, torch_home, monkeypatch):
    metrics = train(compose_config(*TINY, "model.weights=imagenet", "epochs=2"), tmp_path / "run")
    for cached in (torch_home / "hub" / "checkpoints").iterdir():
        cached.unlink()  # torchvision's cache emptied, the network unreachable (_offline): nothing to fetch
    best = tmp_path / "run" / "best.pt"
    assert evaluate_checkpoint(best, ["device=cpu"])["accuracy"] == pytest.approx(metrics["test_acc"])
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    rows, problems = predict(best, [image], topk=2, device="cpu")
    assert len(rows) == 1 and not problems
    assert export(best, "torchscript", tmp_path / "model.torchscript.pt")["matches"]
    # and as a user types the commands, in processes of their own that cannot reach the network
    offline = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.predict", f"ckpt={best}", f"inputs={image}",
                             "device=cpu"], env=offline, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- the presets

@pytest.mark.parametrize("preset, data", [("finetune_imagefolder", "imagefolder"), ("finetune_cifar10", "cifar10")])
def test_the_presets_fine_tune_imagenets_resnet18_at_224_px(compose_config, preset, data):
    cfg = compose_config(f"experiment={preset}", "data.root=/somewhere")
    assert (cfg.model._target_, cfg.model.weights, cfg.model.stem, cfg.data.name) == (
        "cnnbench.models.resnet.resnet18", "imagenet", "imagenet", data)
    assert (cfg.data.get("resize") or cfg.data.get("image_size")) == 224
    assert (list(cfg.data.mean), list(cfg.data.std)) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (cfg.finetune.freeze_epochs, cfg.finetune.backbone_lr_scale) == (1, 0.1)



@pytest.mark.slow
def test_the_finetune_imagefolder_preset_trains_end_to_end_on_real_images(tmp_path, torch_home):
    require_data(SHARED_DATA / "cifar-10-batches-py", GET_SHARED_DATA)
    from cnnbench.bench.folder import write_cifar10_test_folder

    full = tmp_path / "cifar10-test"
    write_cifar10_test_folder(str(SHARED_DATA), full)
    images = tmp_path / "images"  # a slice: 12 photos of each class
    for folder in sorted(full.iterdir()):
        (images / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir(), key=lambda p: int(p.stem))[:12]:
            path.rename(images / folder.name / path.name)
    offline = {**os.environ, "OMP_NUM_THREADS": "1", "https_proxy": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "cnnbench", "experiment=finetune_imagefolder",
                             f"data.root={images}", "epochs=2", "data.train_limit=32", "num_workers=0", "threads=1",
                             "hydra.run.dir=run"], cwd=tmp_path, env=offline, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    left = {path.name for path in run.iterdir()} | {f".hydra/{path.name}" for path in (run / ".hydra").iterdir()}
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "config.json", "split.json",
            "best.pt", "last.pt", "metrics.json", "curves.png", "confusion_matrix.png", "run.log"} <= left
    assert any(name.startswith("events.out.tfevents.") for name in left)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_done"] == 2 and metrics["test_acc"] is not None
    first, second = metrics["history"]
    # cosine from the head's 1e-3 and the pretrained part's 1e-4 down to the preset's eta_min 1e-6: halfway
    assert (first["lr"], first["lr_pretrained"]) == pytest.approx((1e-6 + (1e-3 - 1e-6) / 2, 1e-6 + (1e-4 - 1e-6) / 2))
    assert second["train_images"] == 32
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["weights"], config["data"]["image_size"], config["finetune"]["freeze_epochs"]) == \
        ("imagenet", 224, 1)
    assert "ResNet18_Weights" not in result.stderr  # read from the cache: nothing fetched, nothing refused
