"""The model zoo: registry, configs, forward/backward at every input size, parameter counts."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from cnnbench.models import get_model, list_models, register_model
from cnnbench.models.batchnorm import BatchNorm

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"

# (in_channels, height, width): MNIST, CIFAR, the textbook's resized 96 px, ImageNet, non-square
SIZES = [(1, 28, 28), (3, 32, 32), (3, 96, 96), (3, 224, 224), (3, 64, 48)]
# a 224 px training step of these takes seconds on a 2-core CPU; the fast run still builds and
# steps them at 28 and 32 px, where shrinking to nothing is the risk
BIG_MODELS = {"alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet101", "resnet152",
              "densenet169", "densenet201"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # batch-2 steps are hundreds of tiny ops: with 2 threads, every op's thread barrier stalls
    # whenever another process shares the CPU (seen here: densenet121 0.2 s -> 15 s per step)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_count(name: str, **kwargs) -> int:
    # on the meta device no memory is allocated and init is free: counting VGG's 138M is instant
    with torch.device("meta"):
        return _count(get_model(name, **kwargs))


def _forward_cases() -> list:
    cases = []
    for name in list_models():
        for size in SIZES:
            marks = [pytest.mark.slow] if name in BIG_MODELS and size[1] > 32 else []
            cases.append(pytest.param(name, size, marks=marks, id=f"{name}-{size[0]}x{size[1]}x{size[2]}"))
    return cases


def test_every_model_has_one_config_and_every_config_one_model():
    names = {path.stem for path in MODEL_CONFIGS.glob("*.yaml")}
    assert names == set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_config_targets_its_builder_and_instantiates(name):
    cfg = OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")
    builder = cfg._target_.rsplit(".", 1)
    assert builder[1] == name
    assert builder[0].startswith("cnnbench.models.")
    assert get_model.__globals__["_BUILDERS"][name].__module__ == builder[0]
    with torch.device("meta"):
        model = instantiate(cfg, num_classes=7, in_channels=3, image_size=(64, 48))
    assert isinstance(model, nn.Module)
    assert _count(model) > 0


@pytest.mark.parametrize(("name", "size"), _forward_cases())
def test_forward_backward(name, size):
    torch.manual_seed(0)
    channels, height, width = size
    num_classes = 5
    model = get_model(name, num_classes=num_classes, in_channels=channels, image_size=(height, width))
    x = torch.randn(2, channels, height, width)
    model.train()
    out = model(x)
    assert out.shape == (2, num_classes)
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, num_classes)


# torchvision's counts at 3x224x224 with 1000 classes
TORCHVISION_COUNTS = {
    ("vgg11", False): 132_863_336,
    ("vgg11", True): 132_868_840,
    ("vgg16", False): 138_357_544,
    ("vgg16", True): 138_365_992,
    ("vgg19", False): 143_667_240,
    ("resnet18", None): 11_689_512,
    ("resnet34", None): 21_797_672,
    ("resnet50", None): 25_557_032,
    ("resnet101", None): 44_549_160,
    ("resnet152", None): 60_192_808,
    ("densenet121", None): 7_978_856,
    ("densenet169", None): 14_149_480,
    ("densenet201", None): 20_013_928,
}


@pytest.mark.parametrize(("name", "batch_norm"), TORCHVISION_COUNTS)
def test_parameter_count_matches_torchvision(name, batch_norm):
    options = {"stem": "imagenet"} if batch_norm is None else {"batch_norm": batch_norm}
    count = _meta_count(name, num_classes=1000, in_channels=3, image_size=224, **options)
    assert count == TORCHVISION_COUNTS[name, batch_norm]


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("lenet", {}, 61_706),
    ("lenet5", {}, 61_706),
    # the lab's "CNN vs MLP at equal parameter count": 6,422 against 6,442
    ("small_cnn", {"channels": 6}, 6_422),
    ("mlp", {"hidden": [8, 8]}, 6_442),
])
def test_parameter_count_on_mnist(name, options, expected):
    assert _meta_count(name, num_classes=10, in_channels=1, image_size=28, **options) == expected


def test_resdensenet_parameter_count():
    assert _meta_count("resdensenet", num_classes=3, in_channels=3, image_size=224) == 1_986_691


def test_stem_auto_picks_cifar_stem_for_small_inputs():
    assert get_model("resnet18", image_size=32).stem[0].kernel_size == (3, 3)
    assert get_model("resnet18", image_size=(224, 160)).stem[0].kernel_size == (7, 7)
    with pytest.raises(ValueError, match="stem"):
        get_model("resnet18", stem="tiny")


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError):
        get_model("vgg11", widthratio=0.25)


@pytest.mark.parametrize(("torch_bn", "shape"), [
    (nn.BatchNorm2d, (8, 3, 5, 4)),
    (nn.BatchNorm1d, (8, 6)),
])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_scratch_batchnorm_matches_torch(torch_bn, shape, momentum):
    torch.manual_seed(0)
    channels = shape[1]
    ours, theirs = BatchNorm(channels, momentum=momentum), torch_bn(channels, momentum=momentum)
    with torch.no_grad():  # non-trivial gamma/beta so that they are tested too
        ours.gamma.uniform_(0.5, 1.5)
        ours.beta.normal_()
        theirs.weight.copy_(ours.gamma)
        theirs.bias.copy_(ours.beta)
    for _ in range(3):  # several steps: the moving averages must compound the same way
        x = (torch.randn(shape) * 3 + 2).requires_grad_()
        x_torch = x.detach().clone().requires_grad_()
        out, out_torch = ours(x), theirs(x_torch)
        torch.testing.assert_close(out, out_torch)
        weights = torch.randn(shape)
        (out * weights).sum().backward()
        (out_torch * weights).sum().backward()
        torch.testing.assert_close(x.grad, x_torch.grad)
    torch.testing.assert_close(ours.gamma.grad, theirs.weight.grad)
    torch.testing.assert_close(ours.beta.grad, theirs.bias.grad)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval()
    theirs.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x))


def test_lenet_bn_norm_choice():
    scratch = get_model("lenet_bn", norm="scratch")
    assert any(isinstance(m, BatchNorm) for m in scratch.modules())
    assert _count(scratch) == _count(get_model("lenet_bn", norm="torch"))
    with pytest.raises(ValueError, match="norm"):
        get_model("lenet_bn", norm="layer")


def test_googlenet_aux_heads_only_in_training():
    torch.manual_seed(0)
    model = get_model("googlenet", num_classes=4, in_channels=3, image_size=32, aux_logits=True)
    x = torch.randn(2, 3, 32, 32)
    outputs = model.train()(x)
    assert len(outputs) == 3 and all(o.shape == (2, 4) for o in outputs)
    loss = sum(nn.functional.cross_entropy(o, torch.tensor([0, 1])) * w
               for o, w in zip(outputs, (1.0, 0.3, 0.3), strict=True))
    loss.backward()
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


def test_register_model_rejects_duplicate_name():
    def lenet(num_classes: int = 10) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(lenet)


def test_get_model_unknown_name_lists_known_models():
    with pytest.raises(KeyError, match="resnet18"):
        get_model("resnet19")
