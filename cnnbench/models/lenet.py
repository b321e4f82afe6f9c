"""LeNet: the first trained convolutional network, in the ReLU/max-pool form the labs use."""

from collections.abc import Sequence

from torch import nn

from cnnbench.models.registry import register_model


class LeNet(nn.Module):
    """Two 5x5 conv + pool stages, then three fully connected layers (120-84-classes)."""

    def __init__(self, num_classes: int, in_channels: int, activation: type[nn.Module],
                 pool: type[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # padding=2 keeps 28x28 inputs at 28x28, as the original did with 32x32 inputs
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), activation(),
            pool(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), activation(),
            pool(kernel_size=2, stride=2),
            # identity at 28x28; lets the same weights shapes serve 32, 96 or 224 px inputs
            nn.AdaptiveAvgPool2d((5, 5)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), activation(),
            nn.Linear(120, 84), activation(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def lenet(num_classes: int = 10, in_channels: int = 1,
          image_size: int | Sequence[int] = 28) -> LeNet:
    """LeNet-5 with ReLU and max-pooling (LeCun et al. 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf)."""
    return LeNet(num_classes, in_channels, activation=nn.ReLU, pool=nn.MaxPool2d)
