"""The chapter's presets (conf/experiment/): each one composes and trains two steps on tiny data in
its dataset's real format; and the pieces they brought: pixel permutation, colour jitter, flip TTA,
ResNet-9, the CIFAR labs' VGG, the MLP-vs-CNN sweep."""

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, write_cifar10, write_idx_dataset
from omegaconf import OmegaConf
from PIL import Image
from test_configs import run_cli
from test_datasets_more import write_cifar100
from torch import nn
from torchvision.transforms import v2

from cnnbench.config.checks import check_config
from cnnbench.data import build_data, permute_pixels, pixel_permutation, sample_transform
from cnnbench.engine.train import train
from cnnbench.engine.validation import evaluate
from cnnbench.errors import CnnbenchError
from cnnbench.inference.predict import preprocess
from cnnbench.models import get_model

EXPERIMENTS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))
D2L = [name for name in EXPERIMENTS if name.startswith("d2l_")]
# two steps of these take 5-10 s on a 2-core CPU: a 224 px input and 40-60 M parameters to update
SLOW_PRESETS = {"d2l_alexnet", "d2l_vgg11"}
CPU = torch.device("cpu")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """One data root holding tiny MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, each in its real format."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", train=64, test=16)
    write_idx_dataset(root / "FashionMNIST" / "raw", train=64, test=16)
    write_cifar10(root, per_batch=16, test=16)
    write_cifar100(root, train=200, test=20)
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny batches are many small ops: with 2 threads each op's barrier stalls whenever another
    # process shares the CPU (as in test_models); `threads=1` in a run sets it for this process
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny(data: str, data_root: Path, image_root: Path) -> list[str]:
    """Overrides that point a preset at the tiny datasets and cut it to two steps of 4 images."""
    where = ([f"data.root={image_root}"] if data == "imagefolder"
             else [f"data.root={data_root}", "data.download=false", "data.val_split=0.1"])
    return [*where, "epochs=1", "warmup_epochs=0", "limit_batches=2", "batch_size=4", "device=cpu", "num_workers=0",
            "threads=1"]


# ---------------------------------------------------------------- every preset

def test_there_is_a_preset_for_every_experiment_of_the_issue():
    assert set(EXPERIMENTS) == {
        "lenet_mnist", "mlp_vs_cnn", "d2l_lenet", "d2l_lenet_bn", "d2l_alexnet", "d2l_vgg11", "d2l_nin",
        "d2l_googlenet", "d2l_resnet18", "d2l_densenet", "vgg_cifar10", "resnet18_cifar10",
        "densenet121_cifar10", "vgg_cifar10_long", "resnet18_cifar10_long", "densenet121_cifar10_long",
        "resdensenet_imagefolder", "fast_cifar10", "finetune_imagefolder", "finetune_cifar10",
        "resnet18_cifar100_long", "resnet18_cifar10_augmented"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_says_what_it_reproduces(name):
    text = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")  # or its keys would land under experiment.*
    assert "Reference" in text and f"cnnbench experiment={name}" in text


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_PRESETS else [])
                                  for name in EXPERIMENTS])
def test_every_preset_composes_and_trains_two_steps(name, compose_config, data_root, image_root, tmp_path,
                                                    request):
    preset = compose_config(f"experiment={name}", "data.root=/somewhere")
    check_config(preset)  # the recipe's own values are in range
    if preset.model.get("weights") == "imagenet":  # torchvision's cache holds (random) weights: no network
        request.getfixturevalue("torch_home")
    cfg = compose_config(f"experiment={name}", *tiny(preset.data.name, data_root, image_root))
    # only the size of the run changed: the model, optimizer and scheduler are the preset's
    for key in ("model", "optimizer", "scheduler", "data.name", "data.resize", "label_smoothing", "tta",
                "channels_last"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(preset, key), key
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "finished" and metrics["history"][0]["train_images"] == 8
    assert math.isfinite(metrics["final_train_loss"])


def test_a_preset_wins_over_the_defaults_and_loses_to_debug_and_the_command_line(compose_config):
    cfg = compose_config("experiment=d2l_alexnet")
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer.lr, cfg.data.resize) == (10, 128, 0.01, 224)
    fast = compose_config("experiment=d2l_alexnet", "debug=fast")
    assert (fast.epochs, fast.limit_batches, fast.optimizer.lr) == (2, 3, 0.01)
    assert compose_config("experiment=d2l_alexnet", "epochs=3", "optimizer.lr=0.5").optimizer.lr == 0.5


@pytest.mark.parametrize("name", D2L)
def test_d2l_presets_train_as_the_book(name, compose_config):
    cfg = compose_config(f"experiment={name}")
    assert cfg.data.name == "fashion_mnist" and cfg.epochs == 10
    # plain SGD at a constant rate: no momentum, no weight decay, no schedule
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.momentum, cfg.optimizer.nesterov, cfg.optimizer.weight_decay) == (0.0, False, 0.0)
    assert cfg.scheduler._target_.endswith("ConstantLR") and cfg.scheduler.factor == 1.0
    assert cfg.warmup_epochs == 0 and cfg.label_smoothing == 0.0 and not cfg.data.augment.hflip


def test_the_d2l_vgg_has_a_quarter_of_the_channels_and_4096_wide_fc_layers(compose_config):
    cfg = compose_config("experiment=d2l_vgg11")
    with torch.device("meta"):
        model = get_model("vgg11", num_classes=10, in_channels=1, image_size=224,
                          **{k: v for k, v in cfg.model.items() if k != "_target_"})
    assert model.features[0].out_channels == 16 and model.classifier[1].out_features == 4096
    assert _count(model) == 43_093_322


def test_the_wheel_lists_every_config_group():
    # setuptools ships only the packages pyproject names: a group folder left out is missing from
    # the wheel (test_configs builds one, slowly; this catches the omission at once)
    pyproject = (REPO / "pyproject.toml").read_text()
    for group in (path for path in (REPO / "conf").iterdir() if path.is_dir() and path.name != "__pycache__"):
        assert f'"cnnbench.conf.{group.name}"' in pyproject, group.name


# ---------------------------------------------------------------- the MLP-vs-CNN sweep

def test_mlp_vs_cnn_compares_equal_parameter_counts(compose_config):
    cfg = compose_config("experiment=mlp_vs_cnn")
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.epochs, cfg.batch_size) == (0.01, 0.5, 1, 64)
    mnist = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    assert _count(get_model("small_mlp", **mnist)) == 6_442
    assert _count(get_model("small_cnn", **mnist)) == 6_422


@pytest.mark.slow
def test_mlp_vs_cnn_is_a_sweep_that_ends_in_its_own_leaderboard(data_root, tmp_path):
    # no -m: the preset itself is a sweep; one seed here instead of three (4 runs, not 12)
    result = run_cli("experiment=mlp_vs_cnn", f"data.root={data_root}", "data.download=false",
                     "data.val_split=0.1", "limit_batches=2", "hydra.sweeper.params.seed=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "outputs" / "multirun" / "mlp_vs_cnn"
    names = sorted(path.name for path in folder.iterdir() if path.is_dir() and path.name != ".hydra")
    # (the sweeper writes the booleans it swept over as Python does; the tiny MNIST's 64 images
    # need a smaller validation split than the default's 5000)
    assert names == [f"{model}_mnist_data.permute_pixels={permuted}_data.val_split=0.1_experiment=mlp_vs_cnn_"
                     "limit_batches=2_seed=0" for model in ("small_cnn", "small_mlp") for permuted in ("False", "True")]
    with open(folder / "leaderboard.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted((row["model"], row["config"]) for row in rows) == sorted(
        (model, f"data.permute_pixels={permuted} data.val_split=0.1 experiment=mlp_vs_cnn limit_batches=2")
        for model in ("small_cnn", "small_mlp") for permuted in ("False", "True"))
    assert {row["parameters"] for row in rows} == {"6422", "6442"}


# ---------------------------------------------------------------- pixel permutation

def mnist_data(compose_config, data_root: Path, *overrides: str, seed: int = 0):
    cfg = compose_config("data=mnist", f"data.root={data_root}", "data.download=false", "data.val_split=0.1", *overrides)
    return build_data(cfg.data, batch_size=16, seed=seed, device=CPU)


def test_permuted_pixels_are_one_fixed_invertible_shuffle_of_train_and_val(compose_config, data_root):
    plain = mnist_data(compose_config, data_root)
    permuted = mnist_data(compose_config, data_root, "data.permute_pixels=true")
    permutation = pixel_permutation(28, 28, seed=0)
    assert sorted(permutation.tolist()) == list(range(28 * 28))
    for split in ("train", "val"):  # the same permutation for both splits
        original, shuffled = getattr(plain, split).images, getattr(permuted, split).images
        assert shuffled.shape == original.shape and not torch.equal(shuffled, original)
        assert torch.equal(shuffled, permute_pixels(original, permutation))
        # undone by the inverse permutation: nothing is lost, only moved
        assert torch.equal(permute_pixels(shuffled, permutation.argsort()), original)
        assert torch.equal(getattr(permuted, split).labels, getattr(plain, split).labels)


def test_the_permutation_belongs_to_the_data_not_to_the_run_seed(compose_config, data_root):
    runs = [mnist_data(compose_config, data_root, "data.permute_pixels=true", seed=seed) for seed in (0, 1)]
    assert torch.equal(runs[0].train.images, runs[1].train.images)
    other = mnist_data(compose_config, data_root, "data.permute_pixels=true", "data.permute_seed=1")
    assert not torch.equal(other.train.images, runs[0].train.images)
    # the DataLoader path serves the very same images
    loader = mnist_data(compose_config, data_root, "data.permute_pixels=true", "data.loader=torch")
    for (a, _), (b, _) in zip(runs[0].val, loader.val, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_permutation_moves_every_channel_of_a_pixel_together():
    images = torch.arange(2 * 3 * 4 * 5).view(2, 3, 4, 5)
    permutation = pixel_permutation(4, 5, seed=3)
    moved = permute_pixels(images, permutation)
    for index, source in enumerate(permutation.tolist()):
        assert torch.equal(moved.flatten(2)[:, :, index], images.flatten(2)[:, :, source])


def test_predict_shuffles_new_images_as_the_model_was_trained(compose_config):
    data_cfg = compose_config("data=mnist").data
    images = [Image.fromarray((torch.rand(28, 28) * 255).to(torch.uint8).numpy()) for _ in range(2)]
    plain = preprocess(images, data_cfg, (28, 28))
    data_cfg.permute_pixels = True
    assert torch.equal(preprocess(images, data_cfg, (28, 28)),
                       permute_pixels(plain, pixel_permutation(28, 28, seed=0)))
    data_cfg.resize = 56
    with pytest.raises(CnnbenchError, match="permute_pixels=true and data.resize"):
        preprocess(images, data_cfg, (56, 56))


# ---------------------------------------------------------------- colour jitter

def test_color_jitter_is_a_per_image_training_transform(compose_config):
    cfg = compose_config("data=imagefolder", "data.root=/x", "data.augment.color_jitter=0.4").data
    jitter = [step for step in sample_transform(cfg, train=True, size=(8, 8)).transforms
              if isinstance(step, v2.ColorJitter)]
    assert len(jitter) == 1 and jitter[0].brightness == (0.6, 1.4) and jitter[0].saturation == (0.6, 1.4)
    assert not any(isinstance(step, v2.ColorJitter) for step in sample_transform(cfg, False, (8, 8)).transforms)
    cfg.augment.color_jitter = 0.0
    assert not any(isinstance(step, v2.ColorJitter) for step in sample_transform(cfg, True, (8, 8)).transforms)


def test_color_jitter_on_an_image_folder_run(compose_config, image_root):
    batches = {}
    for strength in (0.0, 0.5):
        cfg = compose_config("data=imagefolder", f"data.root={image_root}", "data.image_size=16",
                             "data.augment.hflip=false", f"data.augment.color_jitter={strength}").data
        batches[strength] = next(iter(build_data(cfg, batch_size=8, seed=0, device=CPU).train))[0]
    assert batches[0.5].shape == (8, 3, 16, 16)
    assert not torch.equal(batches[0.0], batches[0.5])  # the same images (seeded order), other colours
    grey = compose_config("data=imagefolder", f"data.root={image_root}", "data.image_size=16",
                          "data.grayscale=true", "data.mean=[0.5]", "data.std=[0.5]",
                          "data.augment.color_jitter=0.5").data
    assert next(iter(build_data(grey, batch_size=8, seed=0, device=CPU).train))[0].shape == (8, 1, 16, 16)


@pytest.mark.parametrize("loader", ["memory", "torch"])
def test_color_jitter_works_on_both_paths(compose_config, loader):
    # it once needed data.loader=torch: the in-memory loader now jitters each image on the device
    plain, jittered = (compose_config("data=fake", f"data.loader={loader}", "num_workers=0",
                                      f"data.augment.color_jitter={strength}").data for strength in (0.0, 0.3))
    images, _ = next(iter(build_data(jittered, batch_size=8, seed=0, device=CPU).train))
    reference, _ = next(iter(build_data(plain, batch_size=8, seed=0, device=CPU).train))
    assert images.shape == (8, 3, 32, 32) and not torch.equal(images, reference)
    with pytest.raises(CnnbenchError, match="data.augment.color_jitter=-0.1 is out of range"):
        check_config(compose_config("data.augment.color_jitter=-0.1"))


# ---------------------------------------------------------------- flip test-time augmentation

class LeftHalf(nn.Module):
    """Logits from the left half of the image only: its mirror image gives other logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[..., :4].flatten(1))


def test_tta_scores_the_mean_logits_of_each_image_and_its_mirror_image():
    torch.manual_seed(0)
    model = LeftHalf()
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    with torch.no_grad():
        mean_logits = (model(images) + model(images.flip(-1))) / 2
    scored = evaluate(model, loader, CPU, tta=True)
    assert scored["loss"] == pytest.approx(F.cross_entropy(mean_logits, labels).item(), rel=1e-5)
    assert scored["acc"] == (mean_logits.argmax(1) == labels).float().mean().item()
    assert evaluate(model, loader, CPU)["loss"] != pytest.approx(scored["loss"])  # it did change


# ---------------------------------------------------------------- the models the presets brought

def test_resnet9_has_pages_layout_and_parameter_count():
    model = get_model("resnet9", num_classes=10, in_channels=3, image_size=32)
    assert _count(model) == 6_573_120  # Page's ResNet-9: about 6.57 M
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    features = model.features(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, 512, 4, 4)  # three max-pools: 32 -> 4


def test_the_cifar_labs_vgg_is_vgg11_with_batchnorm_and_one_linear_layer():
    model = get_model("vgg11", num_classes=10, in_channels=3, image_size=32, batch_norm=True,
                      classifier="linear")
    assert _count(model) == 9_231_114
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 8
    assert [type(m) for m in model.classifier] == [nn.Flatten, nn.Linear]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="classifier"):
        get_model("vgg11", classifier="mlp")
