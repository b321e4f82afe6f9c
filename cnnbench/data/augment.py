"""Training augmentation on the device, drawn per image for a whole batch at once (torchvision's v2
random transforms draw one parameter set per call, which on a batch is one crop for all images).

`Augment.draw` makes every random number a batch needs, always in the same order; `apply` and
`erase` use them. A run resumed in the middle of an epoch draws the numbers of the batches it
skips without building those batches, so the batches after them get what an uninterrupted epoch
gives them. The automatic policies (RandAugment and the others) are in policies.py.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnbench.data.policies import Policy, apply_policy, grey_levels

Draws = dict[str, torch.Tensor]
TRIES = 10  # random-resized crop and random erasing: boxes tried per image (torchvision's rule)


@dataclass(frozen=True)
class Augment:
    """Per-image training augmentation: random-resized crop or padded crop, flip, an automatic
    policy, colour jitter, and (after normalising) random erasing."""

    crop_padding: int = 0  # a random crop of the image's size from the image padded with zeros
    hflip: bool = False  # a left-right flip of half of the images
    resized_crop_scale: tuple[float, float] | None = None  # share of the area a random box covers
    resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # the box's width / height
    color_jitter: float = 0.0  # brightness, contrast and saturation x a factor in [1 - s, 1 + s]
    policy: Policy | None = None  # RandAugment, TrivialAugment or an AutoAugment policy
    erasing: float = 0.0  # the share of images with a random box erased
    erasing_scale: tuple[float, float] = (0.02, 0.33)  # the box's share of the image's area
    erasing_ratio: tuple[float, float] = (0.3, 3.3)  # the box's height / width
    erasing_noise: bool = False  # fill the box with N(0, 1) noise, not the mean colour (0)

    @classmethod
    def from_config(cls, augment) -> "Augment":
        """The augmentation a `data.augment` config asks for (keys a saved config lacks are off)."""
        scale, ratio = augment.get("resized_crop_scale"), augment.get("resized_crop_ratio")
        policy = augment.get("policy")
        return cls(crop_padding=augment.get("crop_padding", 0), hflip=bool(augment.get("hflip", False)),
                   resized_crop_scale=tuple(scale) if scale else None,
                   resized_crop_ratio=tuple(ratio) if ratio else (3 / 4, 4 / 3),
                   color_jitter=augment.get("color_jitter", 0.0) or 0.0,
                   policy=Policy(policy, augment.get("policy_ops", 2), augment.get("policy_magnitude", 9))
                   if policy else None,
                   erasing=augment.get("random_erasing", 0.0) or 0.0,
                   erasing_scale=tuple(augment.get("erasing_scale") or (0.02, 0.33)),
                   erasing_ratio=tuple(augment.get("erasing_ratio") or (0.3, 3.3)),
                   erasing_noise=augment.get("erasing_value", "mean") == "noise")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.resized_crop_scale or self.color_jitter
                    or self.policy or self.erasing)

    def draw(self, count: int, height: int, width: int, generator: torch.Generator,
             size: tuple[int, int] | None = None) -> Draws:
        """Every random number `count` images of height x width need, in a fixed order; `size`:
        the batch's size once built, when a crop resizes it or the loader does."""
        draws: Draws = {}
        size = size or (height, width)
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
        # drawn after the others, so that a run without them draws what it drew before they existed
        if self.policy:  # on the image as cropped: resized to `size` by a resized crop, else as stored
            seen = size if self.resized_crop_scale else (height, width)
            draws["policy_ops"], draws["policy_magnitudes"] = self.policy.draw(count, *seen, generator)
        if self.erasing:
            draws["erase"] = erasing_boxes(count, *size, self.erasing, self.erasing_scale, self.erasing_ratio,
                                           generator)
            if self.erasing_noise:  # the noise itself is made only for batches that are built
                draws["erase_seed"] = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
        return draws

    def apply(self, images: torch.Tensor, draws: Draws, size: tuple[int, int]) -> torch.Tensor:
        """uint8 N x C x H x W images, augmented: float32 in [0, 255], `size` when cropped and resized."""
        if "box" in draws:  # crop, resize and flip in one resampling
            images = resized_crop(images, draws["box"], draws.get("flip"), size)
            if "policy_ops" in draws:  # the policy's operations work on whole levels, as on uint8
                images = images.round_()
        elif "top" in draws:  # crop and flip as one gather, on the uint8 pixels
            images = random_crop_flip(images, self.crop_padding, self.hflip, draws=draws)
        if "policy_ops" in draws:  # uint8 in: its first sort moves a quarter of the bytes
            images = apply_policy(images, draws["policy_ops"], draws["policy_magnitudes"])
        images = images.float()
        if "jitter" in draws:
            images = color_jitter(images, draws["jitter"])
        return images

    def erase(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Normalised images with their drawn boxes erased (torchvision's RandomErasing, which
        also works on normalised tensors): to 0, the mean colour, or to N(0, 1) noise."""
        if "erase" not in draws:
            return images
        count, _, height, width = images.shape
        top, left, box_height, box_width = draws["erase"].unbind(1)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        columns = torch.arange(width, device=images.device).view(1, 1, width)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_height).view(-1, 1, 1))
                  & (columns >= left.view(-1, 1, 1)) & (columns < (left + box_width).view(-1, 1, 1)))
        inside = inside.unsqueeze(1)  # the same box in every channel
        if "erase_seed" in draws:
            noise = torch.Generator(device=images.device).manual_seed(int(draws["erase_seed"]))
            fill = torch.randn(images.shape, generator=noise, device=images.device)
        else:
            fill = torch.zeros((), device=images.device)
        return torch.where(inside, fill, images)


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


def box_tries(count: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """count x TRIES box sides as torchvision draws them: an area share in `scale` and a
    log-uniform aspect ratio in `ratio`, as (sqrt(area x ratio), sqrt(area / ratio)) rounded."""
    device = generator.device
    area = height * width * (scale[0] + (scale[1] - scale[0])
                             * torch.rand(count, TRIES, generator=generator, device=device))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(count, TRIES, generator=generator,
                                                                     device=device))
    return torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()


def first_fit(fits: torch.Tensor, *sides: torch.Tensor) -> list[torch.Tensor]:
    """Each side at each image's first try that fits (the first try when none does)."""
    first = fits.float().argmax(1, keepdim=True)
    return [side.gather(1, first).squeeze(1) for side in sides]


def resized_crop_boxes(count: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                       generator: torch.Generator) -> torch.Tensor:
    """count x 4 boxes (top, left, box height, box width), as torchvision's RandomResizedCrop
    draws one: an area share in `scale` and a log-uniform aspect ratio (width / height) in
    `ratio`, tried up to 10 times until the box fits in the image, else the largest centred box of
    an allowed ratio."""
    device = generator.device
    box_width, box_height = box_tries(count, height, width, scale, ratio, generator)
    fits = (box_width >= 1) & (box_width <= width) & (box_height >= 1) & (box_height <= height)
    box_height, box_width = first_fit(fits, box_height, box_width)
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


def erasing_boxes(count: int, height: int, width: int, share: float, scale: Sequence[float],
                  ratio: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """count x 4 boxes (top, left, box height, box width) to erase, as torchvision's RandomErasing
    draws one: for `share` of the images, an area share in `scale` and a log-uniform aspect ratio
    (height / width) in `ratio`, tried up to 10 times until the box fits inside the image; an
    image not chosen, or whose tries all fail, gets an empty box."""
    device = generator.device
    chosen = torch.rand(count, generator=generator, device=device) < share
    box_height, box_width = box_tries(count, height, width, scale, ratio, generator)
    fits = (box_height < height) & (box_width < width)
    box_height, box_width = first_fit(fits, box_height, box_width)
    erased = chosen & fits.any(1)
    box_height, box_width = box_height * erased, box_width * erased
    corner = torch.rand(count, 2, generator=generator, device=device)
    top = (corner[:, 0] * (height - box_height + 1)).floor()
    left = (corner[:, 1] * (width - box_width + 1)).floor()
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

