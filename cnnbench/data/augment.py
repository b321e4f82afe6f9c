"""Training augmentation on the device, drawn per image for a whole batch at once (torchvision's v2
random transforms draw one parameter set per call, which on a batch is one crop for all images).

`Augment.draw` makes every random number a batch needs, always in the same order; `apply` uses
them. A run resumed in the middle of an epoch draws the numbers of the batches it skips without
building those batches, so the batches after them get what an uninterrupted epoch gives them.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Draws = dict[str, torch.Tensor]
TRIES = 10  # random-resized crop: boxes tried per image before the centre crop (torchvision's rule)


@dataclass(frozen=True)
class Augment:
    """Per-image training augmentation: random-resized crop or padded crop, flip, colour jitter."""

    crop_padding: int = 0  # a random crop of the image's size from the image padded with zeros
    hflip: bool = False  # a left-right flip of half of the images
    resized_crop_scale: tuple[float, float] | None = None  # share of the area a random box covers
    resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # the box's width / height
    color_jitter: float = 0.0  # brightness, contrast and saturation x a factor in [1 - s, 1 + s]

    @classmethod
    def from_config(cls, augment) -> "Augment":
        """The augmentation a `data.augment` config asks for (keys a saved config lacks are off)."""
        scale, ratio = augment.get("resized_crop_scale"), augment.get("resized_crop_ratio")
        return cls(crop_padding=augment.get("crop_padding", 0), hflip=bool(augment.get("hflip", False)),
                   resized_crop_scale=tuple(scale) if scale else None,
                   resized_crop_ratio=tuple(ratio) if ratio else (3 / 4, 4 / 3),
                   color_jitter=augment.get("color_jitter", 0.0) or 0.0)

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.resized_crop_scale or self.color_jitter)

    def draw(self, count: int, height: int, width: int, generator: torch.Generator) -> Draws:
        """Every random number `count` images of height x width need, in a fixed order."""
        draws: Draws = {}
        if self.resized_crop_scale:
            draws["box"] = resized_crop_boxes(count, height, width, self.resized_crop_scale,
                                              self.resized_crop_ratio, generator)
        if self.crop_padding or self.hflip:
            draws["top"], draws["left"], draws["flip"] = crop_flip_draws(count, self.crop_padding,
                                                                         self.hflip, generator)
        if self.color_jitter:
            low = max(0.0, 1 - self.color_jitter)
            # one factor each for brightness, contrast and saturation
            factors = torch.rand(count, 3, generator=generator, device=generator.device)
            draws["jitter"] = low + factors * (1 + self.color_jitter - low)
        return draws

    def apply(self, images: torch.Tensor, draws: Draws, size: tuple[int, int]) -> torch.Tensor:
        """uint8 N x C x H x W images, augmented: float32 in [0, 255], `size` when cropped and resized."""
        if "box" in draws:  # crop, resize and flip in one resampling
            images = resized_crop(images, draws["box"], draws.get("flip"), size)
        elif "top" in draws:  # crop and flip as one gather, on the uint8 pixels
            images = random_crop_flip(images, self.crop_padding, self.hflip, draws=draws).float()
        else:
            images = images.float()
        if "jitter" in draws:
            images = color_jitter(images, draws["jitter"])
        return images


def crop_flip_draws(count: int, padding: int, hflip: bool, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random numbers random_crop_flip draws for `count` images: window top, left, flip."""
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    flip = torch.rand(count, 1, generator=generator, device=device) < 0.5 if hflip else None
    return top, left, flip


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool,
                     generator: torch.Generator | None = None, draws: Draws | None = None) -> torch.Tensor:
    """Per image: a random crop of the original size from the zero-padded image, and a random
    left-right flip (half of the images), as ONE gather over the batch.

    Every output pixel is read from index (window start + row offset + column offset); a
    flipped image reads its columns right to left. One gather beat a crop gather followed by a
    flipped copy by about 2x on a 2-core CPU. The window comes from `draws`, or is drawn here.
    """
    count, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    padded_width = width + 2 * padding
    if draws is None:
        top, left, flip = crop_flip_draws(count, padding, hflip, generator)
    else:
        top, left, flip = draws["top"], draws["left"], draws["flip"]
    columns = torch.arange(width, device=device).expand(count, width)
    if hflip:
        columns = torch.where(flip, width - 1 - columns, columns)
    rows = torch.arange(height, device=device).view(1, height, 1) * padded_width
    index = (top * padded_width + left).view(count, 1, 1) + rows + columns.view(count, 1, width)
    # The index is shared by all channels (expand is a view), and never leaves the padded image.
    index = index.view(count, 1, height * width).expand(count, channels, -1)
    return padded.flatten(2).gather(2, index).view(count, channels, height, width)


def resized_crop_boxes(count: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                       generator: torch.Generator) -> torch.Tensor:
    """count x 4 boxes (top, left, box height, box width), as torchvision's RandomResizedCrop
    draws one: an area share in `scale` and a log-uniform aspect ratio in `ratio`, tried up to 10
    times until the box fits in the image, else the largest centred box of an allowed ratio."""
    device = generator.device
    area = height * width * (scale[0] + (scale[1] - scale[0])
                             * torch.rand(count, TRIES, generator=generator, device=device))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(count, TRIES, generator=generator,
                                                                     device=device))
    box_width = torch.sqrt(area * aspect).round()
    box_height = torch.sqrt(area / aspect).round()
    fits = (box_width >= 1) & (box_width <= width) & (box_height >= 1) & (box_height <= height)
    first = fits.float().argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    box_height, box_width = box_height.gather(1, first).squeeze(1), box_width.gather(1, first).squeeze(1)
    # no try fitted: the whole image, cut to the nearest allowed ratio, centred
    image_ratio = width / height
    fallback_width = width if image_ratio <= ratio[1] else round(height * ratio[1])
    fallback_height = height if image_ratio >= ratio[0] else round(width / ratio[0])
    none_fit = ~fits.any(1)
    box_height = torch.where(none_fit, float(fallback_height), box_height)
    box_width = torch.where(none_fit, float(fallback_width), box_width)
    corner = torch.rand(count, 2, generator=generator, device=device)
    top = torch.where(none_fit, (height - box_height) / 2, (corner[:, 0] * (height - box_height + 1)).floor())
    left = torch.where(none_fit, (width - box_width) / 2, (corner[:, 1] * (width - box_width + 1)).floor())
    return torch.stack([top, left, box_height, box_width], 1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor | None,
                 size: tuple[int, int]) -> torch.Tensor:
    """Each image's box (top, left, height, width in pixels) resized to `size` (bilinear), mirrored
    where `flip` says: one affine resampling of the whole batch, float32 in [0, 255]. (Bilinear
    without antialiasing: a box shrunk to less than half its size skips pixels; the stored images
    are only 1.25x the training size, see folder.CROP_MARGIN.)"""
    count, _, height, width = images.shape
    top, left, box_height, box_width = boxes.to(torch.float32).unbind(1)
    # grid_sample's coordinates run from -1 to 1 across the image (align_corners=False): the output
    # spans the box, so x_in = (box_width / width) * x_out + (2 * left + box_width) / width - 1.
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0] = box_width / width
    theta[:, 0, 2] = (2 * left + box_width) / width - 1
    theta[:, 1, 1] = box_height / height
    theta[:, 1, 2] = (2 * top + box_height) / height - 1
    grid = F.affine_grid(theta, [count, images.shape[1], *size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    # mirrored after resampling, not by a negative scale: an exact mirror image of the crop
    return out if flip is None else torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)


# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale
LUMA = (0.299, 0.587, 0.114)


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """float N x C x H x W images in [0, 255], each with its own brightness, contrast and
    saturation factor (N x 3), applied in that order (torchvision's ColorJitter picks a random
    order per call). Saturation leaves greyscale images as they are."""
    brightness, contrast, saturation = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    images = (images * brightness).clamp_(0, 255)
    grey = grey_levels(images)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    images = (contrast * images + (1 - contrast) * mean).clamp_(0, 255)
    if images.shape[1] == 3:
        images = (saturation * images + (1 - saturation) * grey_levels(images)).clamp_(0, 255)
    return images


def grey_levels(images: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W brightness of N x C x H x W images (C = 1 or 3)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)
