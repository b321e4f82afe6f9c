"""The lab's small two-conv CNN, sized to match an MLP's parameter count for a fair comparison."""

from collections.abc import Sequence

from torch import nn

from cnnbench.models.registry import register_model

_KERNEL = 5
_HIDDEN = 50  # the lab's fully connected width
# 28 px -> conv 24 -> pool 12 -> conv 8 -> pool 4: the classifier reads a 4x4 map
_POOLED = 4


class SmallCNN(nn.Module):
    """conv(5x5) -> ReLU -> max-pool, twice, then a 50-unit hidden layer and the classifier."""

    def __init__(self, num_classes: int, in_channels: int, channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=_KERNEL), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(channels, channels, kernel_size=_KERNEL), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
            # identity at 28 px; keeps the parameter count fixed at any other input size
            nn.AdaptiveAvgPool2d((_POOLED, _POOLED)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * _POOLED * _POOLED, _HIDDEN), nn.ReLU(),
            nn.Linear(_HIDDEN, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def small_cnn(num_classes: int = 10, in_channels: int = 1,
              image_size: int | Sequence[int] = 28, channels: int = 6) -> SmallCNN:
    """The "CNN vs MLP at equal parameter count" lab network (LeCun et al. 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf)."""
    # channels=6 on 1x28x28 with 10 classes gives 6,422 parameters, next to mlp(hidden=[8, 8])'s 6,442
    return SmallCNN(num_classes, in_channels, channels)
