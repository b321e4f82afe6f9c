"""Automatic augmentation policies, drawn and applied per image for a whole batch on the training
device: RandAugment (Cubuk et al. 2019, arXiv:1909.13719), TrivialAugment Wide (Müller and Hutter
2021, arXiv:2103.10158) and the policies AutoAugment learned for CIFAR-10, SVHN and ImageNet
(Cubuk et al. 2018, arXiv:1805.09501), with the operations, magnitudes and geometry of
torchvision's `RandAugment`, `TrivialAugmentWide` and `AutoAugment`.

torchvision's transforms draw one operation per call: per image only in a DataLoader's per-sample
pipeline. Here each image of a batch draws its own operations and magnitudes (`Policy.draw`), and
`apply_policy` sorts the batch by operation so that each operation runs once, on the images that
drew it: a few dozen tensor operations per batch instead of one pipeline per image.

Pixels are float32 holding whole numbers in [0, 255]. Every operation truncates its result to a
whole number as torchvision's uint8 operations do, so that posterize, solarize and equalize see
the levels they would see there. The pixel operations work in place on their slice of the sorted
batch: a copy per operation was a third of the policy's time on a CPU.
"""

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The operations, by number. The geometric ones are neighbours: they share one resampling.
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
       "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize", "invert")
(IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS,
 POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE, INVERT) = range(len(OPS))
GEOMETRIC = range(SHEAR_X, ROTATE + 1)
SIGNED = range(SHEAR_X, SHARPNESS + 1)  # each draw of these goes either way: a shear left or right
RANDOM_CHOICE = INVERT  # RandAugment and TrivialAugment choose among the operations before INVERT

# AutoAugment's learned sub-policies: two (operation, probability, magnitude level of 10) each; an
# image gets one sub-policy, and each of its two operations with its probability. The tables of
# the paper's appendix, as torchvision lists them.
_AUTOAUGMENT = {
    "cifar10": [
        (("invert", 0.1, 0), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)), (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.5, 0), ("equalize", 0.9, 0)), (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)), (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, 0), ("equalize", 0.5, 0)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)), (("equalize", 0.3, 0), ("autocontrast", 0.4, 0)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, 0)), (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
        (("equalize", 0.2, 0), ("equalize", 0.6, 0)), (("color", 0.9, 9), ("equalize", 0.6, 0)),
        (("autocontrast", 0.8, 0), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("autocontrast", 0.9, 0)), (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.9, 0), ("solarize", 0.8, 3)), (("equalize", 0.8, 0), ("invert", 0.1, 0)),
        (("translate_y", 0.7, 9), ("autocontrast", 0.9, 0)),
    ],
    "svhn": [
        (("shear_x", 0.9, 4), ("invert", 0.2, 0)), (("shear_y", 0.9, 8), ("invert", 0.7, 0)),
        (("equalize", 0.6, 0), ("solarize", 0.6, 6)), (("invert", 0.9, 0), ("equalize", 0.6, 0)),
        (("equalize", 0.6, 0), ("rotate", 0.9, 3)), (("shear_x", 0.9, 4), ("autocontrast", 0.8, 0)),
        (("shear_y", 0.9, 8), ("invert", 0.4, 0)), (("shear_y", 0.9, 5), ("solarize", 0.2, 6)),
        (("invert", 0.9, 0), ("autocontrast", 0.8, 0)), (("equalize", 0.6, 0), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("solarize", 0.3, 3)), (("shear_y", 0.8, 8), ("invert", 0.7, 0)),
        (("equalize", 0.9, 0), ("translate_y", 0.6, 6)), (("invert", 0.9, 0), ("equalize", 0.6, 0)),
        (("contrast", 0.3, 3), ("rotate", 0.8, 4)), (("invert", 0.8, 0), ("translate_y", 0.0, 2)),
        (("shear_y", 0.7, 6), ("solarize", 0.4, 8)), (("invert", 0.6, 0), ("rotate", 0.8, 4)),
        (("shear_y", 0.3, 7), ("translate_x", 0.9, 3)), (("shear_x", 0.1, 6), ("invert", 0.6, 0)),
        (("solarize", 0.7, 2), ("translate_y", 0.6, 7)), (("shear_y", 0.8, 4), ("invert", 0.8, 0)),
        (("shear_x", 0.7, 9), ("translate_y", 0.8, 3)), (("shear_y", 0.8, 5), ("autocontrast", 0.7, 0)),
        (("shear_x", 0.7, 2), ("invert", 0.1, 0)),
    ],
    "imagenet": [
        (("posterize", 0.4, 8), ("rotate", 0.6, 9)), (("solarize", 0.6, 5), ("autocontrast", 0.6, 0)),
        (("equalize", 0.8, 0), ("equalize", 0.6, 0)), (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
        (("equalize", 0.4, 0), ("solarize", 0.2, 4)), (("equalize", 0.4, 0), ("rotate", 0.8, 8)),
        (("solarize", 0.6, 3), ("equalize", 0.6, 0)), (("posterize", 0.8, 5), ("equalize", 1.0, 0)),
        (("rotate", 0.2, 3), ("solarize", 0.6, 8)), (("equalize", 0.6, 0), ("posterize", 0.4, 6)),
        (("rotate", 0.8, 8), ("color", 0.4, 0)), (("rotate", 0.4, 9), ("equalize", 0.6, 0)),
        (("equalize", 0.0, 0), ("equalize", 0.8, 0)), (("invert", 0.6, 0), ("equalize", 1.0, 0)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)), (("rotate", 0.8, 8), ("color", 1.0, 2)),
        (("color", 0.8, 8), ("solarize", 0.8, 7)), (("sharpness", 0.4, 7), ("invert", 0.6, 0)),
        (("shear_x", 0.6, 5), ("equalize", 1.0, 0)), (("color", 0.4, 0), ("equalize", 0.6, 0)),
        (("equalize", 0.4, 0), ("solarize", 0.2, 4)), (("solarize", 0.6, 5), ("autocontrast", 0.6, 0)),
        (("invert", 0.6, 0), ("equalize", 1.0, 0)), (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("equalize", 0.8, 0), ("equalize", 0.6, 0)),
    ],
}
POLICIES = ("randaugment", "trivialaugment", *(f"autoaugment_{name}" for name in _AUTOAUGMENT))
LEVELS = 31  # RandAugment's and TrivialAugment's magnitude levels (torchvision's default)
AUTOAUGMENT_LEVELS = 10


@functools.lru_cache(maxsize=16)
def magnitude_table(levels: int, height: int, width: int, wide: bool, device: torch.device) -> torch.Tensor:
    """len(OPS) x levels: each operation's magnitude at each level, weakest first (shear as a
    slope, translation in pixels, rotation in degrees, brightness/colour/contrast/sharpness as the
    factor minus 1, posterize as bits kept, solarize as the threshold). `wide`: TrivialAugment's."""
    table = torch.zeros(len(OPS), levels)
    shear, shift_x, shift_y, degrees, enhance, bits_dropped = (
        (0.99, 32.0, 32.0, 135.0, 0.99, 6) if wide
        else (0.3, 150 / 331 * width, 150 / 331 * height, 30.0, 0.9, 4))  # 150 of 331 pixels: the paper's
    for op, top in ((SHEAR_X, shear), (SHEAR_Y, shear), (TRANSLATE_X, shift_x), (TRANSLATE_Y, shift_y),
                    (ROTATE, degrees), (BRIGHTNESS, enhance), (COLOR, enhance), (CONTRAST, enhance),
                    (SHARPNESS, enhance)):
        table[op] = torch.linspace(0.0, top, levels)
    table[POSTERIZE] = 8 - (torch.arange(levels) / ((levels - 1) / bits_dropped)).round()
    table[SOLARIZE] = torch.linspace(255.0, 0.0, levels)
    return table.to(device)


@functools.lru_cache(maxsize=8)
def autoaugment_rules(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A learned policy as tensors (sub-policies x 2): operation, probability, magnitude level."""
    rules = _AUTOAUGMENT[name]
    op = torch.tensor([[OPS.index(step[0]) for step in rule] for rule in rules], device=device)
    probability = torch.tensor([[step[1] for step in rule] for rule in rules], device=device)
    level = torch.tensor([[step[2] for step in rule] for rule in rules], device=device)
    return op, probability, level


@dataclass(frozen=True)
class Policy:
    """One of POLICIES; `ops` and `magnitude` are RandAugment's N and M."""

    name: str
    ops: int = 2
    magnitude: int = 9

    def draw(self, count: int, height: int, width: int, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """count x steps operations and their signed magnitudes, for images of height x width."""
        device = generator.device
        if self.name == "randaugment":  # N operations, each at magnitude M
            table = magnitude_table(LEVELS, height, width, False, device)
            op = torch.randint(0, RANDOM_CHOICE, (count, self.ops), generator=generator, device=device)
            level = torch.full_like(op, self.magnitude)
        elif self.name == "trivialaugment":  # one operation, at a random magnitude
            table = magnitude_table(LEVELS, height, width, True, device)
            op = torch.randint(0, RANDOM_CHOICE, (count, 1), generator=generator, device=device)
            level = torch.randint(0, LEVELS, (count, 1), generator=generator, device=device)
        else:  # a random sub-policy, each of its two operations with its probability
            table = magnitude_table(AUTOAUGMENT_LEVELS, height, width, False, device)
            rule_op, probability, rule_level = autoaugment_rules(self.name.removeprefix("autoaugment_"), device)
            choice = torch.randint(0, len(rule_op), (count,), generator=generator, device=device)
            applied = torch.rand(count, 2, generator=generator, device=device) <= probability[choice]
            op = torch.where(applied, rule_op[choice], IDENTITY)
            level = rule_level[choice]
        flip = torch.randint(0, 2, op.shape, generator=generator, device=device).bool()
        signed = (op >= SIGNED.start) & (op < SIGNED.stop)
        magnitude = table[op, level]
        return op, torch.where(signed & flip, -magnitude, magnitude)


def apply_policy(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """N x C x H x W images (uint8, or float holding whole numbers in [0, 255]), image i transformed
    by ops[i, 0] at magnitudes[i, 0], then ops[i, 1]..., as torchvision's operations would
    transform it: float32 out."""
    rows = torch.arange(len(images), device=images.device)  # which image each row of `images` holds
    for step in range(ops.shape[1]):
        # sorted by operation, each operation's images are one slice: it runs once per batch
        order = torch.argsort(ops[:, step].index_select(0, rows), stable=True)
        images, rows = images.index_select(0, order).float(), rows.index_select(0, order)
        transform_sorted(images, ops[:, step].index_select(0, rows), magnitudes[:, step].index_select(0, rows))
    # back in the batch's order (index_select with the inverse order: 4x faster than index_copy_)
    return images.index_select(0, torch.argsort(rows))


def transform_sorted(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> None:
    """Each image of `images`, sorted by `op`, transformed in place by its operation."""
    # the slice of each operation: one wait for the device per step of the policy
    counts = torch.bincount(op, minlength=len(OPS)).tolist()
    ends = list(itertools.accumulate(counts))
    starts = [end - count for end, count in zip(ends, counts)]
    first, last = starts[GEOMETRIC.start], ends[GEOMETRIC.stop - 1]
    if last > first:  # the geometric operations: one resampling for all their images
        images[first:last] = affine(images[first:last], op[first:last], magnitude[first:last])
    for index in range(GEOMETRIC.stop, len(OPS)):
        if counts[index]:
            part = slice(starts[index], ends[index])
            PIXEL_OPS[index](images[part], magnitude[part].view(-1, 1, 1, 1))


def affine(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Each image sheared, translated or rotated (`op`) by its magnitude, read from its nearest
    pixel, zeros where a pixel comes from outside, in torchvision's geometry (shears about the
    top-left corner, whole-pixel shifts, rotation about the centre): one gather for them all
    (affine_grid and grid_sample took 4x as long on a CPU)."""
    count, channels, height, width = images.shape
    # A policy draws few distinct (operation, magnitude) pairs (RandAugment: 10 geometric ones):
    # each pair's map is computed once per batch. One float64 number per pair, since no magnitude
    # reaches 2**15 (unique over rows, dim=0, took 10x as long), on the CPU (MPS has no float64;
    # these are a batch's worth of numbers, and the device waited for the counts already).
    keys = op.cpu().double() * 2**16 + magnitude.cpu().double()
    pairs, pair_of_image = torch.unique(keys, return_inverse=True)
    first = torch.empty(len(pairs), dtype=torch.long).scatter_(0, pair_of_image, torch.arange(count))
    first, pair_of_image = first.to(op.device), pair_of_image.to(op.device)  # an image of each pair
    maps = source_pixels(op.index_select(0, first), magnitude.index_select(0, first), height, width)
    index = maps.index_select(0, pair_of_image).view(count, 1, -1).expand(-1, channels, -1)
    framed = F.pad(images, (1, 1, 1, 1)).flatten(2)  # one pixel of zeros around each image
    return framed.gather(2, index).view_as(images)


def source_pixels(op: torch.Tensor, magnitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """len(op) x (height x width): for each output pixel of each (operation, magnitude), the
    pixel it is read from in the image framed by one pixel of zeros (a source outside the image is
    clamped onto the frame)."""
    zero = torch.zeros_like(magnitude)
    angle = torch.deg2rad(torch.where(op == ROTATE, magnitude, zero))
    cos, sin = torch.cos(angle), torch.sin(angle)
    shear_x, shear_y = (torch.where(op == kind, magnitude, zero) for kind in (SHEAR_X, SHEAR_Y))
    shift_x, shift_y = (torch.where(op == kind, magnitude.trunc(), zero) for kind in (TRANSLATE_X, TRANSLATE_Y))
    # The inverse map (output pixel -> input pixel), in pixels from the image's centre; one
    # operation each, so the others' terms are 0 (and cos 1, sin 0).
    x = (torch.arange(width, device=op.device) + 0.5 - width / 2).view(1, 1, width)
    y = (torch.arange(height, device=op.device) + 0.5 - height / 2).view(1, height, 1)
    def each(value: torch.Tensor) -> torch.Tensor:
        return value.view(-1, 1, 1)
    # (side - 1) / 2 from the centre back to pixel indices
    source_x = each(cos) * x + each(shear_x - sin) * y + each(shear_x * height / 2 - shift_x + (width - 1) / 2)
    source_y = each(sin + shear_y) * x + each(cos) * y + each(shear_y * width / 2 - shift_y + (height - 1) / 2)
    # the nearest pixel, ties to even as grid_sample's nearest mode rounds
    column = source_x.round_().clamp_(-1, width)
    row = source_y.round_().clamp_(-1, height)
    index = row.mul_(width + 2).add_(column).add_(width + 3)  # (row + 1) x framed width + column + 1
    return index.long().view(len(op), height * width)


# ITU-R 601 luma weights (torchvision's rgb_to_grayscale rounds the first to 0.2989)
LUMA = (0.299, 0.587, 0.114)


def grey_levels(images: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W brightness of N x C x H x W images (C = 1 or 3)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def blend_(images: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> None:
    """images = factor x images + (1 - factor) x other, clipped and truncated to whole levels
    (torchvision's _blend on uint8), in place. (torchvision's float sum can land a hair below a
    whole level, which truncation then lowers by one: at most one level apart.)"""
    # other + factor x (images - other): lerp does it in one pass over the images
    if not isinstance(other, torch.Tensor):
        other = torch.tensor(other, device=images.device)
    torch.lerp(other, images, factor, out=images).clamp_(0, 255).floor_()


def brightness(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    images.mul_(1 + magnitude).clamp_(0, 255).floor_()


def color(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    """Saturation: a blend with the image's grey levels (none for a greyscale image)."""
    if images.shape[1] == 3:
        blend_(images, grey_levels(images).floor_(), 1 + magnitude)


def contrast(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    """A blend with the image's mean grey level."""
    blend_(images, grey_levels(images).floor().mean(dim=(1, 2, 3), keepdim=True), 1 + magnitude)


def sharpness(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    """A blend with the image smoothed by PIL's 3x3 kernel (centre weight 5 of 13), its border
    pixels kept: a factor above 1 sharpens."""
    height, width = images.shape[-2:]
    if height <= 2 or width <= 2:
        return
    # the 3x3 sums as shifted slices, rows then columns (a grouped conv2d took 10x as long on a CPU)
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = ((box + 4 * images[..., 1:-1, 1:-1]) / 13).round_()
    blend_(images[..., 1:-1, 1:-1], smooth, 1 + magnitude)  # the border pixels are kept


def posterize(images: torch.Tensor, bits: torch.Tensor) -> None:
    """Only the top `bits` bits of each level kept."""
    step = 2 ** (8 - bits)
    images.div_(step).floor_().mul_(step)


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> None:
    """Levels at or above the threshold inverted."""
    torch.where(images >= threshold, 255 - images, images, out=images)


def autocontrast(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    """Each channel stretched so that its darkest level becomes 0 and its brightest 255."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    flat = high == low  # one level only: left as it is
    scale = torch.where(flat, 1.0, 255 / (high - low).clamp_(min=1))
    images.sub_(low.masked_fill_(flat, 0.0)).mul_(scale).clamp_(0, 255).floor_()


def equalize(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    """Each channel's histogram equalised, by PIL's rule (as torchvision): a level's new value is
    the share of pixels below it, in steps of (pixels not at the brightest level present) / 255."""
    count, channels, height, width = images.shape
    levels = images.reshape(count * channels, height * width).long()
    histogram = torch.zeros(count * channels, 256, device=images.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=histogram.dtype))
    brightest = histogram.gather(1, levels.amax(1, keepdim=True))
    step = torch.div(height * width - brightest, 255, rounding_mode="floor")
    table = torch.div(histogram.cumsum(1) + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                      rounding_mode="floor")
    table = F.pad(table, (1, 0))[:, :-1].clamp_(max=255)  # level 0 maps to 0, level k to table[k - 1]
    equalised = torch.where(step == 0, levels.to(images.dtype), table.gather(1, levels))
    images.copy_(equalised.view(count, channels, height, width))


def invert(images: torch.Tensor, magnitude: torch.Tensor) -> None:
    images.neg_().add_(255)


PIXEL_OPS = {BRIGHTNESS: brightness, COLOR: color, CONTRAST: contrast, SHARPNESS: sharpness, POSTERIZE: posterize,
             SOLARIZE: solarize, AUTOCONTRAST: autocontrast, EQUALIZE: equalize, INVERT: invert}
