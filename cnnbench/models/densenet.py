"""DenseNet: every layer receives the feature maps of all earlier layers in its block, concatenated."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnnbench.models.layers import make_stem, resolve_stem
from cnnbench.models.registry import register_model
from cnnbench.models.torchvision_weights import load_torchvision_weights

# (growth_rate, layers per dense block, stem width, bottleneck width factor or None for plain layers)
_CONFIGS: dict[str, tuple[int, list[int], int, int | None]] = {
    "densenet121": (32, [6, 12, 24, 16], 64, 4),
    "densenet169": (32, [6, 12, 32, 32], 64, 4),
    "densenet201": (32, [6, 12, 48, 32], 64, 4),
    # the textbook's small DenseNet: plain BN-ReLU-3x3 layers, four blocks of four
    "densenet_small": (32, [4, 4, 4, 4], 64, None),
}
# DenseNet-BC's compression: a transition keeps half of the channels
_COMPRESSION = 0.5


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-conv3x3 adding `growth_rate` maps, with an optional 1x1 bottleneck first.

    With `bn_size` the layer is DenseNet-B's BN-ReLU-1x1(bn_size*growth)-BN-ReLU-3x3(growth): the
    1x1 squeezes the ever wider concatenated input before the expensive 3x3. Without, it is the
    plain conv_block of the textbook.
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        if bn_size:
            layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, bn_size * growth_rate, kernel_size=1, bias=False)]
            width = bn_size * growth_rate
        layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=False)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DenseBlock(nn.Module):
    """`num_layers` dense layers; each one's output is concatenated onto the running feature stack."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size) for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def bn_relu_conv1x1(in_channels: int, out_channels: int) -> nn.Sequential:
    """Pre-activation BN-ReLU-1x1 conv: changes the width of a concatenated stack."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
    )


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv to change the width, then 2x2 average pooling to halve the resolution."""
    return nn.Sequential(
        bn_relu_conv1x1(in_channels, out_channels),
        # ceil_mode: a 1x1 map (stem=imagenet forced on a 28 px input) stays 1x1 instead of
        # vanishing; identical to floor on the even sizes of 32, 96 and 224 px inputs
        nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True),
    )


class DenseNet(nn.Module):
    """Stem, dense blocks joined by compressing transitions, final BN-ReLU, global average pool, FC."""

    def __init__(self, growth_rate: int, block_config: Sequence[int], num_init_features: int,
                 bn_size: int | None, num_classes: int, in_channels: int, stem: str) -> None:
        super().__init__()
        layers: list[nn.Module] = [make_stem(in_channels, num_init_features, stem)]
        width = num_init_features
        for index, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, width, growth_rate, bn_size)
            layers.append(block)
            width = block.out_channels
            if index < len(block_config) - 1:
                layers.append(transition(width, int(width * _COMPRESSION)))
                width = int(width * _COMPRESSION)
        # the layers are pre-activation, so the last block's output still needs its BN-ReLU
        layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _densenet(name: str, num_classes: int, in_channels: int, image_size: int | Sequence[int],
              stem: str, weights: str | None = None) -> DenseNet:
    growth_rate, block_config, num_init_features, bn_size = _CONFIGS[name]
    model = DenseNet(growth_rate, block_config, num_init_features, bn_size, num_classes, in_channels,
                     resolve_stem(stem, image_size))
    if weights:  # torchvision's: the same layers under other names (torchvision_weights.py)
        load_torchvision_weights(model, name, weights)
    return model


@register_model
def densenet121(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
                stem: str = "auto", weights: str | None = None) -> DenseNet:
    """DenseNet-BC-121 (Huang et al. 2016, https://arxiv.org/abs/1608.06993)."""
    return _densenet("densenet121", num_classes, in_channels, image_size, stem, weights)


@register_model
def densenet169(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
                stem: str = "auto", weights: str | None = None) -> DenseNet:
    """DenseNet-BC-169 (Huang et al. 2016, https://arxiv.org/abs/1608.06993)."""
    return _densenet("densenet169", num_classes, in_channels, image_size, stem, weights)


@register_model
def densenet201(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
                stem: str = "auto", weights: str | None = None) -> DenseNet:
    """DenseNet-BC-201 (Huang et al. 2016, https://arxiv.org/abs/1608.06993)."""
    return _densenet("densenet201", num_classes, in_channels, image_size, stem, weights)


@register_model
def densenet_small(num_classes: int = 10, in_channels: int = 1, image_size: int | Sequence[int] = 96,
                   stem: str = "auto") -> DenseNet:
    """The textbook's small DenseNet, 4 blocks of 4 plain layers (Huang et al. 2016, https://arxiv.org/abs/1608.06993)."""
    return _densenet("densenet_small", num_classes, in_channels, image_size, stem)
