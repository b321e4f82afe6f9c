"""ResNet-9: the small residual network that trains to 94% on CIFAR-10 in minutes (DAWNBench).

David Page's network from "How to train your ResNet" (https://myrtle.ai/learn/how-to-train-your-resnet/),
the base of the airbench speed-runs (Jordan 2024, https://arxiv.org/abs/2404.00498): few layers, wide
ones, max-pooling instead of strided convs, and only two residual blocks.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from cnnbench.models.layers import kaiming_init
from cnnbench.models.registry import register_model

# (output channels, residual block after the pool?) of the three stages after the prep layer;
# each stage halves the resolution: 32 -> 16 -> 8 -> 4 px on CIFAR-10
_STAGES: list[tuple[int, bool]] = [(128, True), (256, False), (512, True)]
_PREP_WIDTH = 64
# Page scales the logits down: with BatchNorm everywhere the raw logits start large, and a
# fixed 1/8 made training faster and more stable than learning the scale
_LOGIT_SCALE = 0.125


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm shifts), BatchNorm, ReLU: the network's only building block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + two conv-BN-ReLU layers of x (no ReLU after the sum, as in Page's network)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


class ResNet9(nn.Module):
    """Prep conv, three conv + max-pool stages (two with a residual block), global max-pool, linear."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, _PREP_WIDTH)]
        width = _PREP_WIDTH
        for out_channels, residual in _STAGES:
            # ceil_mode: odd sizes (28 px: 28-14-7-4) keep their border pixels instead of dropping them
            layers += [conv_bn_relu(width, out_channels), nn.MaxPool2d(2, ceil_mode=True)]
            if residual:
                layers.append(Residual(out_channels))
            width = out_channels
        self.features = nn.Sequential(*layers)
        # global max-pool: the 4x4 map at 32 px, whatever size at other inputs
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes, bias=False))
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)) * _LOGIT_SCALE


@register_model
def resnet9(num_classes: int = 10, in_channels: int = 3, image_size: int | Sequence[int] = 32) -> ResNet9:
    """ResNet-9 of the DAWNBench CIFAR-10 entry (Page 2018, https://myrtle.ai/learn/how-to-train-your-resnet/)."""
    return ResNet9(num_classes, in_channels)
