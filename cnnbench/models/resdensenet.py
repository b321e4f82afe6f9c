"""ResDenseNet: the ResNet/DenseNet hybrid, dense blocks wrapped in a residual connection.

Design (1,986,691 parameters on 3x224x224 with 3 classes):
- stem: the ImageNet stem of ResNet and DenseNet, 7x7/2 conv to 64 channels (no bias) + BN +
  ReLU + 3x3/2 max-pool (`stem: auto` switches to the 3x3/1 CIFAR stem below 64 px);
- dense residual block on C channels: DenseNet's dense block (pre-activation bottleneck layers,
  BN-ReLU-1x1(4*growth)-BN-ReLU-3x3(growth), reused from densenet.py) grows the stack to
  C + L*growth channels, a pre-activation BN-ReLU-1x1 conv compresses it back to C, and the
  block's input is added: y = x + compress(dense(x)), the residual form of He et al.;
- between blocks DenseNet's transition (BN-ReLU-1x1 conv + 2x2 average pool), here doubling
  the channels as ResNet's stages do (64-128-256-512) instead of halving them;
- the layers are pre-activation, so a final BN-ReLU comes before global average pooling and FC.
block_config [3, 4, 6, 4] is ResNet-34's stage depths with a longer last stage. Moving a
BatchNorm or a bias elsewhere can give the same count; this layout is the one that is
pre-activation throughout and reuses DenseNet's parts unchanged.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from cnnbench.models.densenet import DenseBlock, bn_relu_conv1x1, transition
from cnnbench.models.layers import kaiming_init, make_stem, resolve_stem
from cnnbench.models.registry import register_model

_NUM_INIT_FEATURES = 64
_BN_SIZE = 4  # DenseNet-B bottleneck: the 1x1 conv outputs 4 * growth_rate channels


class DenseResidualBlock(nn.Module):
    """A dense block whose concatenated output is compressed back to the input width and added to it."""

    def __init__(self, num_layers: int, channels: int, growth_rate: int) -> None:
        super().__init__()
        self.dense = DenseBlock(num_layers, channels, growth_rate, _BN_SIZE)
        self.compress = bn_relu_conv1x1(self.dense.out_channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        # the shortcut keeps a clean gradient path, the dense block reuses every feature inside
        return x + self.compress(self.dense(x))


class ResDenseNet(nn.Module):
    """Stem, dense residual blocks joined by width-doubling transitions, BN-ReLU, global pool, FC."""

    def __init__(self, block_config: Sequence[int], growth_rate: int, num_classes: int,
                 in_channels: int, stem: str) -> None:
        super().__init__()
        layers: list[nn.Module] = [make_stem(in_channels, _NUM_INIT_FEATURES, stem)]
        width = _NUM_INIT_FEATURES
        for index, num_layers in enumerate(block_config):
            layers.append(DenseResidualBlock(num_layers, width, growth_rate))
            if index < len(block_config) - 1:
                layers.append(transition(width, 2 * width))
                width *= 2
        layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register_model
def resdensenet(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
                block_config: Sequence[int] = (3, 4, 6, 4), growth_rate: int = 32,
                stem: str = "auto") -> ResDenseNet:
    """ResNet/DenseNet hybrid (He et al. 2015, https://arxiv.org/abs/1512.03385; Huang et al. 2016, https://arxiv.org/abs/1608.06993)."""
    return ResDenseNet(block_config, growth_rate, num_classes, in_channels, resolve_stem(stem, image_size))
