"""MixUp and CutMix: augmentations of a whole training batch that blend each image with another of
the batch, and its label with that image's label in the same shares.

MixUp (Zhang et al. 2018, https://arxiv.org/abs/1710.09412) takes lam x image + (1 - lam) x partner
for a lam drawn from Beta(alpha, alpha). CutMix (Yun et al. 2019, https://arxiv.org/abs/1905.04899)
pastes a box of the partner, of about (1 - lam) of the area, into the image, and then takes lam as
the share of the image left uncovered, since the box is clipped at the image's border. Both use one
lam and one box for the whole batch, and pair the images by a random permutation of the batch, as
timm's Mixup does in its batch mode.

The target becomes a probability vector: lam on the image's class, 1 - lam on the partner's.
nn.CrossEntropyLoss takes such targets and applies label smoothing to them; because smoothing is
affine, smoothing after the mix is the same as mixing two smoothed targets.

Every random number of a batch comes from its own generator, seeded by (seed, process, epoch,
step). A batch therefore gets the same mix whether the epoch ran straight through or resumed in
its middle.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mix:
    """One batch's draw: the shares, the partners, and CutMix's box (top, bottom, left, right)."""

    lam: float  # the share of each image (and of its label) that stays its own
    partners: list[int]  # image i is blended with image partners[i]
    box: tuple[int, int, int, int] | None = None  # CutMix: the partner's pixels in this box; None: MixUp


@dataclass(frozen=True)
class Mixing:
    """MixUp and CutMix as data.augment configures them (timm's names and meanings)."""

    mixup_alpha: float = 0.0  # Beta(alpha, alpha) for MixUp's lam; 0 = no MixUp
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) for CutMix's box area; 0 = no CutMix
    prob: float = 1.0  # the share of batches that are mixed at all
    switch_prob: float = 0.5  # with both on: the share of mixed batches that get CutMix, not MixUp

    @classmethod
    def from_config(cls, augment) -> "Mixing":
        """The mixing a `data.augment` config asks for (keys a saved config lacks are off)."""
        return cls(mixup_alpha=float(augment.get("mixup_alpha", 0.0) or 0.0),
                   cutmix_alpha=float(augment.get("cutmix_alpha", 0.0) or 0.0),
                   prob=float(augment.get("mixup_prob", 1.0)),
                   switch_prob=float(augment.get("mixup_switch_prob", 0.5)))

    @property
    def active(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def draw(self, seed: tuple[int, ...], size: int, height: int, width: int) -> Mix | None:
        """The mix of a batch of `size` images, or None when the batch is left as it is."""
        generator = np.random.default_rng(seed)
        if generator.random() >= self.prob:
            return None
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or generator.random() < self.switch_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(generator.beta(alpha, alpha))
        partners = generator.permutation(size).tolist()
        if not cutmix:
            return Mix(lam, partners)
        centre = int(generator.integers(height)), int(generator.integers(width))
        box = cutmix_box(lam, height, width, centre)
        return Mix(1 - box_area(box) / (height * width), partners, box)


def cutmix_box(lam: float, height: int, width: int, centre: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box of about (1 - lam) of the image's area around `centre`, clipped to the image: its
    sides are sqrt(1 - lam) of the image's (top, bottom, left, right; bottom and right excluded)."""
    side = math.sqrt(1 - lam)
    half_height, half_width = int(height * side) // 2, int(width * side) // 2
    top, left = centre
    return (max(top - half_height, 0), min(top + half_height, height),
            max(left - half_width, 0), min(left + half_width, width))


def box_area(box: tuple[int, int, int, int]) -> int:
    top, bottom, left, right = box
    return (bottom - top) * (right - left)


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, mix: Mix
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixed images, their probability targets, the label of the larger share of each).

    The last is what training accuracy is counted against under mixing: the class that holds at
    least half of each image (its own when lam >= 0.5)."""
    partners = torch.as_tensor(mix.partners, device=images.device)
    # lerp(partner, own, lam) = lam x own + (1 - lam) x partner; with index_select, one pass each
    # over the batch (4x faster here than indexing, multiplying and adding)
    if mix.box is None:
        mixed = torch.lerp(images.index_select(0, partners), images, mix.lam)
    else:
        top, bottom, left, right = mix.box
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images[..., top:bottom, left:right].index_select(0, partners)
    own = F.one_hot(labels, num_classes).float()
    targets = torch.lerp(own.index_select(0, partners), own, mix.lam)
    larger = labels if mix.lam >= 0.5 else labels[partners]
    return mixed, targets, larger
