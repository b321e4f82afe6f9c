"""AlexNet: the 2012 ImageNet winner that made deep CNNs mainstream (ReLU, dropout, big FC layers)."""

from collections.abc import Sequence

from torch import nn

from cnnbench.models.layers import MaxPool2dIfFits
from cnnbench.models.registry import register_model

# (out_channels, kernel, stride, padding, pool after?) for the five conv layers of the paper
_CONVS = [
    (96, 11, 4, 2, True),
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, True),
]
_HIDDEN = 4096
# 224 px ends at 6x6 (the paper's 9,216-wide first FC layer); other sizes are pooled to it
_POOLED = 6


class AlexNet(nn.Module):
    """Five conv layers (three followed by 3x3/2 max-pooling), then 4096-4096 FC with dropout."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out_channels, kernel, stride, padding, pool in _CONVS:
            layers += [nn.Conv2d(width, out_channels, kernel, stride, padding), nn.ReLU(inplace=True)]
            if pool:
                # overlapping pooling (window 3 > stride 2), which the paper found overfits less
                layers.append(MaxPool2dIfFits(kernel_size=3, stride=2))
            width = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((_POOLED, _POOLED))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            # dropout before each big FC layer: they hold ~95% of the weights and overfit first
            nn.Dropout(dropout), nn.Linear(width * _POOLED * _POOLED, _HIDDEN), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(_HIDDEN, _HIDDEN), nn.ReLU(inplace=True),
            nn.Linear(_HIDDEN, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


@register_model
def alexnet(num_classes: int = 1000, in_channels: int = 3, image_size: int | Sequence[int] = 224,
            dropout: float = 0.5) -> AlexNet:
    """AlexNet, one-tower version without LRN (Krizhevsky et al. 2012, https://papers.nips.cc/paper/4824)."""
    return AlexNet(num_classes, in_channels, dropout)
