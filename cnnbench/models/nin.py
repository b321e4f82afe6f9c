"""Network in Network: every conv followed by two 1x1 convs ("micro MLPs"), and no FC layer at all."""

from collections.abc import Sequence

from torch import nn

from cnnbench.models.layers import MaxPool2dIfFits
from cnnbench.models.registry import register_model

# (out_channels, kernel, stride, padding) of the first conv of each NiN block: AlexNet's shapes;
# the last block's width is the number of classes, so None here
_BLOCKS: list[tuple[int | None, int, int, int]] = [
    (96, 11, 4, 0),
    (256, 5, 1, 2),
    (384, 3, 1, 1),
    (None, 3, 1, 1),
]


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int,
              padding: int) -> nn.Sequential:
    """One conv and two 1x1 convs, each with ReLU: a small MLP slid over every pixel."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(inplace=True),
    )


class NiN(nn.Module):
    """Four NiN blocks with max-pooling between them; the last one outputs one map per class."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for index, (out_channels, kernel, stride, padding) in enumerate(_BLOCKS):
            if out_channels is None:
                # dropout before the class maps, as the paper does between NiN blocks
                layers.append(nn.Dropout(dropout))
                out_channels = num_classes
            layers.append(nin_block(width, out_channels, kernel, stride, padding))
            if index < len(_BLOCKS) - 1:
                layers.append(MaxPool2dIfFits(kernel_size=3, stride=2))
            width = out_channels
        self.features = nn.Sequential(*layers)
        # global average pooling replaces the FC layers: each class map is averaged to its logit
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))


@register_model
def nin(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
        dropout: float = 0.5) -> NiN:
    """Network in Network (Lin et al. 2013, https://arxiv.org/abs/1312.4400)."""
    return NiN(num_classes, in_channels, dropout)
