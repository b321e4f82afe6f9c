"""VGG: deep stacks of 3x3 convolutions in five blocks, each block ending in a 2x2 max-pool."""

import math
from collections.abc import Sequence

from torch import nn

from cnnbench.models.layers import image_hw
from cnnbench.models.registry import register_model
from cnnbench.models.torchvision_weights import load_torchvision_weights

# conv output channels, "M" = 2x2 max-pool; the four depths of Simonyan & Zisserman's table 1
_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
_HIDDEN = 4096
# the five pools shrink the input 32x: 224 px ends at the paper's 7x7
_DOWNSAMPLE = 32
# fc: the paper's two 4096-wide hidden layers; linear: global average pool + one linear layer
_CLASSIFIERS = ("fc", "linear")


def make_layers(cfg: list[int | str], in_channels: int, batch_norm: bool,
                width_ratio: float) -> nn.Sequential:
    """Build the conv part of a VGG from its config list."""
    layers: list[nn.Module] = []
    width = in_channels
    for item in cfg:
        if item == "M":
            # ceil_mode: a 28 px input goes 28-14-7-4-2-1 instead of reaching 0 at the fifth
            # pool; at 32, 96 and 224 px every size is even, so it changes nothing there
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        out_channels = max(1, int(item * width_ratio))
        # a conv bias before BatchNorm is redundant, but torchvision keeps it and we match its counts
        layers.append(nn.Conv2d(width, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        width = out_channels
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG conv blocks, then two hidden FC layers with dropout and the classifier (`classifier="fc"`),
    or global average pooling and one linear layer (`classifier="linear"`)."""

    def __init__(self, features: nn.Sequential, out_channels: int, pooled: tuple[int, int],
                 num_classes: int, hidden: int, dropout: float, classifier: str = "fc") -> None:
        super().__init__()
        self.features = features
        if classifier == "linear":
            # The simplified VGG of the CIFAR-10 labs (and of kuangliu/pytorch-cifar): at 32 px the
            # five pools leave a 1x1x512 map, which needs no hidden FC layers to be classified;
            # at larger sizes the map is averaged to 1x1 first.
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(out_channels, num_classes))
        else:
            # identity at the configured image size; other sizes still fit the classifier
            self.avgpool = nn.AdaptiveAvgPool2d(pooled)
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(out_channels * pooled[0] * pooled[1], hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def _vgg(name: str, num_classes: int, in_channels: int, image_size: int | Sequence[int],
         batch_norm: bool, width_ratio: float, dropout: float, classifier: str,
         hidden: int | None, weights: str | None) -> VGG:
    if classifier not in _CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose one of {', '.join(_CLASSIFIERS)}")
    cfg = _CFGS[name]
    # pool to the map the features produce at this image size (7x7 at 224 px, 1x1 at 32 px):
    # pooling a 1x1 CIFAR map up to 7x7 would copy it 49 times into ~100M useless FC weights
    pooled = tuple(math.ceil(side / _DOWNSAMPLE) for side in image_hw(image_size))
    out_channels = max(1, int(cfg[-2] * width_ratio))
    model = VGG(make_layers(cfg, in_channels, batch_norm, width_ratio), out_channels, pooled,
                num_classes, hidden=hidden or max(1, int(_HIDDEN * width_ratio)), dropout=dropout,
                classifier=classifier)
    if weights:  # torchvision's vgg11 ... vgg19_bn; the linear classifier has none of its FC layers to fill
        load_torchvision_weights(model, f"{name}_bn" if batch_norm else name, weights,
                                 only="features." if classifier == "linear" else None)
    return model


@register_model
def vgg11(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
          batch_norm: bool = False, width_ratio: float = 1.0, dropout: float = 0.5,
          classifier: str = "fc", hidden: int | None = None, weights: str | None = None) -> VGG:
    """VGG-11, configuration A (Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556)."""
    return _vgg("vgg11", num_classes, in_channels, image_size, batch_norm, width_ratio, dropout,
                classifier, hidden, weights)


@register_model
def vgg13(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
          batch_norm: bool = False, width_ratio: float = 1.0, dropout: float = 0.5,
          classifier: str = "fc", hidden: int | None = None, weights: str | None = None) -> VGG:
    """VGG-13, configuration B (Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556)."""
    return _vgg("vgg13", num_classes, in_channels, image_size, batch_norm, width_ratio, dropout,
                classifier, hidden, weights)


@register_model
def vgg16(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
          batch_norm: bool = False, width_ratio: float = 1.0, dropout: float = 0.5,
          classifier: str = "fc", hidden: int | None = None, weights: str | None = None) -> VGG:
    """VGG-16, configuration D (Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556)."""
    return _vgg("vgg16", num_classes, in_channels, image_size, batch_norm, width_ratio, dropout,
                classifier, hidden, weights)


@register_model
def vgg19(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
          batch_norm: bool = False, width_ratio: float = 1.0, dropout: float = 0.5,
          classifier: str = "fc", hidden: int | None = None, weights: str | None = None) -> VGG:
    """VGG-19, configuration E (Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556)."""
    return _vgg("vgg19", num_classes, in_channels, image_size, batch_norm, width_ratio, dropout,
                classifier, hidden, weights)
