"""ResNet: very deep networks that train because each block only learns a residual, x + F(x)."""

from collections.abc import Sequence

from torch import Tensor, nn

from cnnbench.models.layers import kaiming_init, make_stem, resolve_stem
from cnnbench.models.registry import register_model
from cnnbench.models.torchvision_weights import load_torchvision_weights

# (block type, blocks per stage); the four stages have 64-128-256-512 base channels and all
# but the first halve the resolution
_LAYERS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}
_STAGE_WIDTHS = [64, 128, 256, 512]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A bias-free conv (BatchNorm follows and has its own shift) and its BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # identity where shapes agree; a strided 1x1 projection where the block changes them
    # (option B of the paper)
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus the shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.residual = nn.Sequential(
            conv_bn(in_channels, width, 3, stride), nn.ReLU(inplace=True),
            conv_bn(width, out_channels, 3),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (4x) plus the shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.residual = nn.Sequential(
            conv_bn(in_channels, width, 1), nn.ReLU(inplace=True),
            # stride on the 3x3 rather than the first 1x1 ("ResNet v1.5", as torchvision):
            # a strided 1x1 would skip three of every four pixels
            conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
            conv_bn(width, out_channels, 1),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Stem, four stages of residual blocks, global average pool, FC."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int],
                 num_classes: int, in_channels: int, stem: str) -> None:
        super().__init__()
        self.stem = make_stem(in_channels, _STAGE_WIDTHS[0], stem)
        stages: list[nn.Module] = []
        width = _STAGE_WIDTHS[0]
        for index, (stage_width, blocks) in enumerate(zip(_STAGE_WIDTHS, layers, strict=True)):
            stages.append(self._make_layer(block, width, stage_width, blocks, stride=1 if index == 0 else 2))
            width = stage_width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
        kaiming_init(self)

    @staticmethod
    def _make_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, width: int,
                    blocks: int, stride: int) -> nn.Sequential:
        # only the first block of a stage downsamples and changes the width
        layers = [block(in_channels, width, stride)]
        layers += [block(width * block.expansion, width, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


def _resnet(name: str, num_classes: int, in_channels: int, image_size: int | Sequence[int],
            stem: str, weights: str | None) -> ResNet:
    block, layers = _LAYERS[name]
    model = ResNet(_BLOCKS[block], layers, num_classes, in_channels, resolve_stem(stem, image_size))
    if weights:  # torchvision's: the same layers under other names (torchvision_weights.py)
        load_torchvision_weights(model, name, weights)
    return model


@register_model
def resnet18(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
             stem: str = "auto", weights: str | None = None) -> ResNet:
    """ResNet-18 (He et al. 2015, https://arxiv.org/abs/1512.03385)."""
    return _resnet("resnet18", num_classes, in_channels, image_size, stem, weights)


@register_model
def resnet34(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
             stem: str = "auto", weights: str | None = None) -> ResNet:
    """ResNet-34 (He et al. 2015, https://arxiv.org/abs/1512.03385)."""
    return _resnet("resnet34", num_classes, in_channels, image_size, stem, weights)


@register_model
def resnet50(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
             stem: str = "auto", weights: str | None = None) -> ResNet:
    """ResNet-50 (He et al. 2015, https://arxiv.org/abs/1512.03385)."""
    return _resnet("resnet50", num_classes, in_channels, image_size, stem, weights)


@register_model
def resnet101(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
              stem: str = "auto", weights: str | None = None) -> ResNet:
    """ResNet-101 (He et al. 2015, https://arxiv.org/abs/1512.03385)."""
    return _resnet("resnet101", num_classes, in_channels, image_size, stem, weights)


@register_model
def resnet152(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
              stem: str = "auto", weights: str | None = None) -> ResNet:
    """ResNet-152 (He et al. 2015, https://arxiv.org/abs/1512.03385)."""
    return _resnet("resnet152", num_classes, in_channels, image_size, stem, weights)
