"""The multilayer perceptron baseline that every CNN in the chapter is compared with."""

from collections.abc import Sequence

from torch import nn

from cnnbench.models.registry import register_model


def _pixels(in_channels: int, image_size: int | Sequence[int]) -> int:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return in_channels * height * width


@register_model
def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int | Sequence[int] = 28,
        hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> nn.Sequential:
    """A fully connected network on flattened pixels (Rumelhart et al. 1986, https://doi.org/10.1038/323533a0)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _pixels(in_channels, image_size)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model
def small_mlp(num_classes: int = 10, in_channels: int = 1,
              image_size: int | Sequence[int] = 28) -> nn.Sequential:
    """The lab's MLP matched to small_cnn: two hidden layers of 8 units (Rumelhart et al. 1986, https://doi.org/10.1038/323533a0)."""
    # 6,442 parameters on 1x28x28 with 10 classes, next to small_cnn's 6,422: the lab's FC2Layer
    # with n_hidden=8 (each of its two hidden layers has 8 units)
    return mlp(num_classes, in_channels, image_size, hidden=(8, 8))
