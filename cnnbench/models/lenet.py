"""LeNet: the first trained convolutional network, in the ReLU/max-pool form the labs use,
the 1998 sigmoid/average-pool original, and the BatchNorm variant of the textbook."""

from collections.abc import Callable, Sequence

from torch import nn

from cnnbench.models.batchnorm import BatchNorm
from cnnbench.models.registry import register_model

Norm = Callable[[int], nn.Module]

# `norm` option of lenet_bn -> (layer after a conv, layer after a linear layer)
_NORMS: dict[str, tuple[Norm, Norm]] = {
    "torch": (nn.BatchNorm2d, nn.BatchNorm1d),
    "scratch": (BatchNorm, BatchNorm),  # the written-out version in batchnorm.py
}


class LeNet(nn.Module):
    """Two 5x5 conv + pool stages, then three fully connected layers (120-84-classes)."""

    def __init__(self, num_classes: int, in_channels: int, activation: type[nn.Module],
                 pool: type[nn.Module], norm2d: Norm | None = None,
                 norm1d: Norm | None = None) -> None:
        super().__init__()

        # BatchNorm sits between a layer and its activation, where Ioffe & Szegedy put it
        def normed(norm: Norm | None, width: int) -> list[nn.Module]:
            return [norm(width), activation()] if norm else [activation()]

        self.features = nn.Sequential(
            # padding=2 keeps 28x28 inputs at 28x28, as the original did with 32x32 inputs
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), *normed(norm2d, 6),
            pool(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), *normed(norm2d, 16),
            pool(kernel_size=2, stride=2),
            # identity at 28x28; lets the same weights shapes serve 32, 96 or 224 px inputs
            nn.AdaptiveAvgPool2d((5, 5)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), *normed(norm1d, 120),
            nn.Linear(120, 84), *normed(norm1d, 84),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def lenet(num_classes: int = 10, in_channels: int = 1,
          image_size: int | Sequence[int] = 28) -> LeNet:
    """LeNet-5 with ReLU and max-pooling (LeCun et al. 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf)."""
    return LeNet(num_classes, in_channels, activation=nn.ReLU, pool=nn.MaxPool2d)


@register_model
def lenet5(num_classes: int = 10, in_channels: int = 1,
           image_size: int | Sequence[int] = 28) -> LeNet:
    """Textbook LeNet-5 with sigmoid and average pooling (LeCun et al. 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf)."""
    return LeNet(num_classes, in_channels, activation=nn.Sigmoid, pool=nn.AvgPool2d)


@register_model
def lenet_bn(num_classes: int = 10, in_channels: int = 1,
             image_size: int | Sequence[int] = 28, norm: str = "torch") -> LeNet:
    """LeNet-5 with BatchNorm after every conv and hidden linear layer (Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167)."""
    if norm not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(_NORMS)}")
    norm2d, norm1d = _NORMS[norm]
    # the textbook keeps LeNet-5's sigmoid and average pooling: BatchNorm is what makes them train fast
    return LeNet(num_classes, in_channels, activation=nn.Sigmoid, pool=nn.AvgPool2d,
                 norm2d=norm2d, norm1d=norm1d)
