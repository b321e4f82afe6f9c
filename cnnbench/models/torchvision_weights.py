"""torchvision's pretrained weights in cnnbench's models: where each of torchvision's state-dict keys
lives here, reading the weights (torchvision's own weight API for `imagenet`, or a state-dict file),
and what fine-tuning needs to know of a loaded model (its new head, the frozen rest).

cnnbench's standard ResNet, VGG and DenseNet variants have exactly torchvision's layers in the same
order; only the names differ (`layer2.0.conv1` is `stages.1.0.residual.0.0` here). Renamed key by
key, a state dict of torchvision's makes a cnnbench model compute what the torchvision model
computes (tests/test_finetune.py proves it for every family). torchvision is imported only to fetch
`imagenet` weights: its import costs a run over a second (data/loader.py).
"""

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import pretrained_models

# The normalisation torchvision's ImageNet weights were trained with (every model's transforms())
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# ---------------------------------------------------------------- torchvision's keys, renamed

# ResNet: torchvision's stem and head are top-level modules, each block names its layers
_RESNET_TOP = {"conv1": "stem.0", "bn1": "stem.1", "fc": "head.2"}
_RESNET_BLOCK = {"conv1": "residual.0.0", "bn1": "residual.0.1", "conv2": "residual.2.0", "bn2": "residual.2.1",
                 "conv3": "residual.4.0", "bn3": "residual.4.1", "downsample": "shortcut"}


def _resnet_key(key: str) -> str:
    # layer2.0.conv1.weight -> stages.1.0.residual.0.0.weight; conv1.weight -> stem.0.weight
    block = re.fullmatch(r"layer(\d)\.(\d+)\.([a-z]+\d?)\.(.+)", key)
    if block:
        stage, index, layer, rest = block.groups()
        return f"stages.{int(stage) - 1}.{index}.{_RESNET_BLOCK[layer]}.{rest}"
    module, _, rest = key.partition(".")
    return f"{_RESNET_TOP[module]}.{rest}"


def _vgg_key(key: str) -> str:
    # the same features.N; cnnbench's classifier starts with a Flatten, so its linear layers are one on
    classifier = re.fullmatch(r"classifier\.(\d+)\.(.+)", key)
    if classifier:
        return f"classifier.{int(classifier[1]) + 1}.{classifier[2]}"
    if not key.startswith("features."):
        raise KeyError(key)
    return key


# torchvision's downloadable DenseNet files still name a dense layer's parts norm.1, conv.2 (before
# torchvision 0.3); its own loader renames them with this pattern, and so does this one
_DENSENET_OLD_NAMES = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
# cnnbench's DenseLayer is one Sequential: BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv
_DENSE_LAYER = {"norm1": 0, "conv1": 2, "norm2": 3, "conv2": 5}
# features: the stem (conv0, norm0, pool0) is one Sequential here, then blocks and transitions
# alternate (1, 2, 3, ... 7) and the final BatchNorm (norm5) comes eighth
_DENSENET_TOP = {"features.conv0": "features.0.0", "features.norm0": "features.0.1", "features.norm5": "features.8",
                 "classifier": "head.2"}


def _densenet_key(key: str) -> str:
    # features.denseblock2.denselayer3.conv1.weight -> features.3.layers.2.layers.2.weight
    key = _DENSENET_OLD_NAMES.sub(r"\1\2", key)
    layer = re.fullmatch(r"features\.denseblock(\d)\.denselayer(\d+)\.(\w+)\.(.+)", key)
    if layer:
        block, index, part, rest = layer.groups()
        return f"features.{2 * int(block) - 1}.layers.{int(index) - 1}.layers.{_DENSE_LAYER[part]}.{rest}"
    transition = re.fullmatch(r"features\.transition(\d)\.(norm|conv)\.(.+)", key)
    if transition:  # BN-ReLU-1x1 conv (one Sequential), then the pool
        number, part, rest = transition.groups()
        return f"features.{2 * int(number)}.0.{0 if part == 'norm' else 2}.{rest}"
    module, _, rest = key.rpartition(".")
    return f"{_DENSENET_TOP[module]}.{rest}"


# family -> (key renaming, torchvision's first convolution: the one a 1-channel model adapts)
_FAMILIES: dict[str, tuple[Callable[[str], str], str]] = {
    "resnet": (_resnet_key, "conv1.weight"),
    "vgg": (_vgg_key, "features.0.weight"),
    "densenet": (_densenet_key, "features.conv0.weight"),
}
# How to build a model of each family as torchvision's weights need it, for the refusals
_AS_TORCHVISION = {
    "resnet": "model.stem=imagenet",
    "vgg": "model.width_ratio=1.0, model.hidden=null, 224 px images (data.resize=224), or model.classifier=linear "
           "(the convolutions only)",
    "densenet": "model.stem=imagenet",
}

# Why the two textbook models with an ImageNet counterpart in torchvision take none of its weights
_NOT_TORCHVISIONS = {
    "alexnet": "this is the paper's AlexNet, 96-256-384-384-256 channels; torchvision's weights are for its "
               "64-192-384-256-256 variant",
    "googlenet": "this is the paper's GoogLeNet, with a real 5x5 branch; torchvision's weights are for its port, "
                 "which has a 3x3 there, BatchNorm eps 1e-3 and its own input transform",
}


def _family(architecture: str) -> str:
    return re.match(r"[a-z]+", architecture)[0]


def from_torchvision(architecture: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision state dict of `architecture` (resnet18, vgg11_bn, densenet121...) under the
    names of cnnbench's model: every key, the head too."""
    return {ours: tensor for _, ours, tensor in _renamed(architecture, state_dict)}


def _renamed(architecture: str, state_dict: Mapping[str, Tensor]) -> list[tuple[str, str, Tensor]]:
    rename, _ = _FAMILIES[_family(architecture)]
    renamed = []
    for key, tensor in state_dict.items():
        try:
            renamed.append((key, rename(key), tensor))
        except (KeyError, TypeError):
            raise CnnbenchError(f"model.weights: {key} is not a key of torchvision's {architecture}: give "
                                f"the state dict of a torchvision {architecture}") from None
    return renamed


# ---------------------------------------------------------------- reading the weights

def read_weights(architecture: str, weights: str) -> dict[str, Tensor]:
    """torchvision's state dict of `architecture`: its default ImageNet weights (`imagenet`, fetched
    and hash-checked by torchvision's weight API into TORCH_HOME, read from there after), or the
    state-dict file `weights` names; loaded with weights_only=True (tensors only, no code)."""
    if weights == "imagenet":
        return _imagenet_weights(architecture)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CnnbenchError(f"model.weights={weights}: no such file; give imagenet (torchvision's weights) or "
                            f"the path of a torchvision {architecture} state dict (torch.save(model.state_dict()))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (unpickling refusals, zip and EOF errors: one line each)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CnnbenchError(f"model.weights={weights} cannot be read as a state dict of tensors only "
                            f"(torch.load weights_only=True): {reason}") from None
    return _state_dict_in(state, weights)


def _imagenet_weights(architecture: str) -> dict[str, Tensor]:
    from torch.hub import get_dir
    from torchvision.models import get_model_weights  # here only: see the module's docstring

    default = get_model_weights(architecture).DEFAULT
    cached = Path(get_dir()) / "checkpoints" / Path(default.url).name
    try:
        return _state_dict_in(default.get_state_dict(progress=True, check_hash=True, weights_only=True),
                              str(cached))
    except OSError as error:  # offline: urllib's URLError; a full disk
        reason = getattr(error, "reason", None) or error.strerror or error
        raise CnnbenchError(f"model.weights=imagenet: cannot fetch torchvision's {default} from {default.url} "
                            f"({reason}); offline, copy that file to {cached} (TORCH_HOME sets the folder), or "
                            "give model.weights=PATH of a state-dict file") from None
    except RuntimeError as error:  # a download whose hash is wrong, a damaged file in the cache
        raise CnnbenchError(f"model.weights=imagenet: {cached}: {str(error).strip().splitlines()[0]}; delete "
                            "it to fetch it again") from None


def _state_dict_in(state: Any, source: str) -> dict[str, Tensor]:
    # a bare state dict, or one inside a training checkpoint ({"model": ...}, as torchvision's
    # reference scripts save; {"state_dict": ...}); DistributedDataParallel's `module.` prefix dropped
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CnnbenchError(f"model.weights: {source} holds no state dict (a dict of tensors, as "
                            "torch.save(model.state_dict()) writes)")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


# ---------------------------------------------------------------- loading them into a model

def load_torchvision_weights(model: nn.Module, architecture: str, weights: str, only: str | None = None) -> None:
    """Fill `model` with torchvision's `architecture` weights (read_weights), all but its head (the
    last linear layer, built for the data's classes); a 1-channel model gets the first convolution
    summed over RGB. `only`: load just the keys under this prefix (VGG's linear classifier has none
    of the paper's FC layers). A layer that does not fit is a one-line error naming the key."""
    family = _family(architecture)
    first_conv = _FAMILIES[family][1]
    own, head = model.state_dict(), f"{head_name(model)}."
    loaded = {}
    for theirs, ours, tensor in _renamed(architecture, read_weights(architecture, weights)):
        if ours.startswith(head) or (only and not ours.startswith(only)):
            continue
        if ours not in own:
            raise CnnbenchError(f"model.weights: torchvision's {theirs} has no place in this {architecture} "
                                f"(no {ours}): give the state dict of a torchvision {architecture}")
        if tensor.shape != own[ours].shape:
            tensor = _fitted(theirs, ours, tensor, own[ours], architecture, first=theirs == first_conv)
        loaded[ours] = tensor
    # num_batches_tracked: absent from torchvision's older files; BatchNorm keeps its own then
    missing = [key for key in own if key not in loaded and not key.startswith(head)
               and not key.endswith("num_batches_tracked")]
    if missing:
        raise CnnbenchError(f"model.weights: the weights have nothing for {missing[0]} (and {len(missing) - 1} more "
                            f"of this model's tensors): give the state dict of a torchvision {architecture}")
    model.load_state_dict(loaded, strict=False)


def _fitted(theirs: str, ours: str, tensor: Tensor, own: Tensor, architecture: str, first: bool) -> Tensor:
    """`tensor` made to fit a layer of another shape, where one exactly can; else a one-line error
    with the fix."""
    fix = f"build it as torchvision does: {_AS_TORCHVISION[_family(architecture)]}"
    if first and tensor.shape[2:] != own.shape[2:]:
        raise CnnbenchError(
            f"model.weights: torchvision's {theirs} is the {tensor.shape[-2]}x{tensor.shape[-1]} convolution of the "
            f"ImageNet stem, and this {architecture} has the CIFAR stem's {own.shape[-2]}x{own.shape[-1]} ({ours}; "
            "stem=auto picks it below 64 px): set model.stem=imagenet (small images: also data.resize=224)")
    if first and tensor.shape[0] == own.shape[0] and tensor.shape[2:] == own.shape[2:]:
        if own.shape[1] == 1:
            # greyscale images are R = G = B: the RGB filters summed over their inputs compute exactly
            # what the RGB network computes on the grey image repeated three times
            return tensor.sum(dim=1, keepdim=True)
        fix = (f"give RGB images (3 channels) or greyscale ones (1: the RGB filters are summed); this data has "
               f"{own.shape[1]}")
    raise CnnbenchError(f"model.weights: torchvision's {theirs} is {list(tensor.shape)}, this {architecture}'s "
                        f"{ours} is {list(own.shape)}: {fix}")


# ---------------------------------------------------------------- fine-tuning a loaded model

def head_name(model: nn.Module) -> str:
    """The name of a model's classifier head: its last linear layer (ResNet, DenseNet: head.2; VGG:
    classifier.7, or classifier.1 with the linear classifier), which pretrained weights leave new."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The head's parameters and those of the rest (the pretrained part), each in the model's order."""
    head = {id(parameter) for parameter in model.get_submodule(head_name(model)).parameters()}
    parameters = list(model.parameters())
    return ([p for p in parameters if id(p) in head], [p for p in parameters if id(p) not in head])


def freeze_pretrained(model: nn.Module, frozen: bool) -> None:
    """Freeze everything but the head (no gradients, so the optimizer leaves it exactly as it is, and
    its BatchNorm layers in eval mode, so their running statistics stay the pretrained ones), or
    let it all train again. Call it after model.train(), which puts BatchNorm back in training mode."""
    _, pretrained = split_head(model)
    for parameter in pretrained:
        parameter.requires_grad_(not frozen)
    if frozen:
        head = head_name(model)
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(head):
                module.eval()


def imagenet_normalisation(channels: int) -> tuple[list[float], list[float]]:
    """The mean and std a model with ImageNet weights expects: ImageNet's per channel; for 1 channel
    (the summed RGB filters) their averages."""
    if channels == 1:
        return [round(sum(IMAGENET_MEAN) / 3, 3)], [round(sum(IMAGENET_STD) / 3, 3)]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def weights_refusal(name: str) -> str:
    """The one line that refuses `model.weights` for a model that takes none, naming those that do."""
    why = _NOT_TORCHVISIONS.get(name, "torchvision has no weights for it")
    # resnet18 before resnet101: by family, then depth
    names = sorted(pretrained_models(), key=lambda model: (_family(model), int(re.sub(r"\D", "", model) or 0)))
    return (f"model.weights: {name} takes no pretrained weights ({why}); the models that do: {', '.join(names)} "
            "(VGG with model.batch_norm true or false; README, Fine-tuning)")
