"""Small pieces several families share: reading image_size, the ResNet/DenseNet stem, a safe pool."""

from collections.abc import Sequence

from torch import Tensor, nn

# Below this many pixels on the short side the ImageNet stem (stride-2 conv + max-pool, 4x
# smaller) leaves a 7x7 map or less before the first stage: ResNet ends at 1x1 and DenseNet's
# transitions would pool it to nothing, so small inputs get the CIFAR stem instead.
SMALL_INPUT_SIZE = 64

STEMS = ("auto", "imagenet", "cifar")


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Return (height, width) from an int or an (H, W) pair (a list from a YAML file works too)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def resolve_stem(stem: str, image_size: int | Sequence[int]) -> str:
    """Turn `stem: auto` into "cifar" or "imagenet" from the input size; check the name."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if stem == "auto":
        return "cifar" if min(image_hw(image_size)) < SMALL_INPUT_SIZE else "imagenet"
    return stem


def make_stem(in_channels: int, out_channels: int, stem: str) -> nn.Sequential:
    """The ResNet/DenseNet input stem: 7x7/2 conv + 3x3/2 max-pool ("imagenet") or a 3x3/1 conv ("cifar")."""
    if stem == "imagenet":
        return nn.Sequential(
            # no conv bias: the BatchNorm right after it has its own shift
            nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    if stem == "cifar":
        # the stem of He et al.'s CIFAR experiments: keep full resolution, 32 px is small already
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )
    raise ValueError(f"unknown stem {stem!r}; resolve 'auto' with resolve_stem() first")


class MaxPool2dIfFits(nn.MaxPool2d):
    """A max-pool that passes a map through unchanged when it is smaller than the pooling window.

    AlexNet and NiN were designed for 224 px; on a 28 px input their stride-4 first conv and
    three 3x3/2 pools would shrink the map below one pixel and crash. At 224 px every pool fits,
    so the network there is exactly the published one.
    """

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.kernel_size:
            return x
        return super().forward(x)


def kaiming_init(model: nn.Module) -> None:
    """He et al. 2015 init for convs (keeps activations' scale through ReLUs), BatchNorm as identity.

    https://arxiv.org/abs/1502.01852
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
