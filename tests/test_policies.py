"""RandAugment, TrivialAugment, AutoAugment and random erasing on the device: each operation against
torchvision's own on single images, the magnitudes and probabilities of each policy, draws per
image, the batch transformed as its images one by one, reproducibility and an exact resume, the
DataLoader path's transforms, and the checks of their keys."""

import math

import pytest
import torch
from conftest import SMALL_RUN, assert_resumes_exactly
from torchvision.transforms import functional as tv
from torchvision.transforms import v2

from cnnbench.config.checks import _CHOICES, check_config
from cnnbench.data import MemoryLoader, sample_transform
from cnnbench.data.augment import Augment, erasing_boxes
from cnnbench.data.policies import (
    GEOMETRIC,
    IDENTITY,
    INVERT,
    OPS,
    POLICIES,
    POSTERIZE,
    SHEAR_X,
    SOLARIZE,
    TRANSLATE_X,
    Policy,
    apply_policy,
    magnitude_table,
)
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError

CPU = torch.device("cpu")
# a few seconds' run on colour images, which the colour operations need
SMALL = [*SMALL_RUN, "data.in_channels=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def torchvision_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """torchvision's operation `name` on one uint8 image, called as its RandAugment calls it."""
    if name == "shear_x":
        return tv.affine(image, 0.0, [0, 0], 1.0, [math.degrees(math.atan(magnitude)), 0.0], center=[0, 0])
    if name == "shear_y":
        return tv.affine(image, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(magnitude))], center=[0, 0])
    if name in ("translate_x", "translate_y"):
        shift = [int(magnitude), 0] if name == "translate_x" else [0, int(magnitude)]
        return tv.affine(image, 0.0, shift, 1.0, [0.0, 0.0])
    calls = {"rotate": lambda: tv.rotate(image, magnitude),
             "brightness": lambda: tv.adjust_brightness(image, 1 + magnitude),
             "color": lambda: tv.adjust_saturation(image, 1 + magnitude),
             "contrast": lambda: tv.adjust_contrast(image, 1 + magnitude),
             "sharpness": lambda: tv.adjust_sharpness(image, 1 + magnitude),
             "posterize": lambda: tv.posterize(image, int(magnitude)),
             "solarize": lambda: tv.solarize(image, magnitude),
             "autocontrast": lambda: tv.autocontrast(image), "equalize": lambda: tv.equalize(image),
             "invert": lambda: tv.invert(image), "identity": lambda: image}
    return calls[name]()


def photo_like(count: int, channels: int, seed: int = 0) -> torch.Tensor:
    """uint8 images with smooth regions, edges and a limited range, as photos have (uniform noise
    would leave autocontrast and equalize nothing to do)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, 5, 5, generator=generator) * 180 + 30
    images = torch.nn.functional.interpolate(coarse, size=(20, 24), mode="bilinear", align_corners=False)
    return (images + torch.randn(images.shape, generator=generator) * 8).clamp(0, 255).round().to(torch.uint8)


# (operation, magnitudes): both signs, the strongest of TrivialAugment's, torchvision's edge cases
CASES = [("shear_x", [0.3, -0.2, 0.99]), ("shear_y", [0.27, -0.99]), ("translate_x", [13.5, -7.0]),
         ("translate_y", [5.2, -10.9]), ("rotate", [30.0, -17.0, 135.0]), ("brightness", [0.9, -0.5]),
         ("color", [0.6, -0.9]), ("contrast", [0.9, -0.4]), ("sharpness", [0.9, -0.7]), ("posterize", [4, 7, 2]),
         ("solarize", [128.0, 40.0, 255.0]), ("autocontrast", [0.0]), ("equalize", [0.0]), ("invert", [0.0]),
         ("identity", [0.0])]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name, magnitudes", CASES)
def test_each_operation_transforms_an_image_as_torchvisions_does(name, magnitudes, channels):
    images = photo_like(6, channels)
    for magnitude in magnitudes:
        ours = apply_policy(images.float(), torch.full((6, 1), OPS.index(name)), torch.full((6, 1), float(magnitude)))
        theirs = torch.stack([torchvision_op(image, name, magnitude) for image in images]).float()
        difference = (ours - theirs).abs()
        if name in ("color", "sharpness"):
            # colour weighs red 0.299 (torchvision 0.2989); both blend as other + f x (x - other),
            # where torchvision's f x x + (1 - f) x other can land a hair below a whole level
            # (sharpness: on the border, where x = other) and truncation lowers it by one
            assert difference.max() <= 1 and (difference == 0).float().mean() > 0.9, (name, magnitude)
        elif OPS.index(name) in GEOMETRIC:
            # A source exactly between two pixels (a shear of 0.2 puts one on every fifth row) is
            # read from either, as float rounding falls: a few pixels come from a neighbour.
            differ = difference > 0
            assert differ.float().mean() < 0.05, (name, magnitude)
            padded = torch.nn.functional.pad(theirs, (1, 1, 1, 1), value=-1)
            height, width = theirs.shape[-2:]
            neighbours = [padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                          for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
            from_a_neighbour = torch.stack([ours == neighbour for neighbour in neighbours]).any(0)
            assert from_a_neighbour[differ].all(), (name, magnitude)
        else:
            assert torch.equal(ours, theirs), (name, magnitude, difference.max())


def test_a_batch_is_transformed_as_each_of_its_images_alone():
    images = photo_like(64, 3, seed=1).float()
    ops, magnitudes = Policy("randaugment", ops=3, magnitude=14).draw(64, 20, 24, torch.Generator().manual_seed(0))
    assert len(set(ops.flatten().tolist())) >= 12  # the batch holds nearly every operation
    batch = apply_policy(images, ops, magnitudes)
    alone = torch.cat([apply_policy(images[i:i + 1], ops[i:i + 1], magnitudes[i:i + 1]) for i in range(64)])
    assert torch.equal(batch, alone)
    # ... and each image as its operations one after the other
    for i in (0, 17, 63):
        image = images[i:i + 1]
        for step in range(3):
            image = apply_policy(image, ops[i:i + 1, step:step + 1], magnitudes[i:i + 1, step:step + 1])
        assert torch.equal(batch[i:i + 1], image)


def test_the_magnitudes_are_torchvisions():
    table = magnitude_table(31, 32, 32, False, CPU)
    level = 9  # RandAugment's default M of its 31 levels: 9/30 of each range
    assert table[SHEAR_X, level].item() == pytest.approx(0.3 * 9 / 30)
    assert table[TRANSLATE_X, level].item() == pytest.approx(150 / 331 * 32 * 9 / 30)
    assert table[OPS.index("rotate"), level].item() == pytest.approx(9.0)
    assert table[OPS.index("brightness"), level].item() == pytest.approx(0.27)
    assert table[POSTERIZE].tolist()[::10] == [8, 7, 5, 4]  # 8 - round(level / 7.5)
    assert table[SOLARIZE, level].item() == pytest.approx(255 * 21 / 30)
    wide = magnitude_table(31, 32, 32, True, CPU)  # TrivialAugment Wide's ranges
    assert wide[SHEAR_X, -1].item() == pytest.approx(0.99) and wide[TRANSLATE_X, -1].item() == 32
    assert wide[OPS.index("rotate"), -1].item() == 135 and wide[POSTERIZE, -1].item() == 2
    # torchvision's own augmentation spaces, operation by operation
    from torchvision.transforms import RandAugment, TrivialAugmentWide
    for ours, theirs in ((table, RandAugment()._augmentation_space(31, (32, 32))),
                         (wide, TrivialAugmentWide()._augmentation_space(31))):
        for name, (values, _) in theirs.items():
            row = ours[OPS.index(name.replace("X", "_x").replace("Y", "_y").lower())]  # ShearX: shear_x
            expected = values.float() if values.ndim else torch.zeros(31)
            torch.testing.assert_close(row, expected, rtol=1e-6, atol=1e-5)


def test_randaugment_draws_n_uniform_operations_per_image_at_magnitude_m_either_way():
    ops, magnitudes = Policy("randaugment", ops=2, magnitude=9).draw(28_000, 32, 32, torch.Generator().manual_seed(0))
    assert ops.shape == (28_000, 2)
    counts = torch.bincount(ops.flatten(), minlength=len(OPS))
    assert counts[INVERT] == 0  # not one of RandAugment's operations
    assert (counts[:INVERT] - 4000).abs().max() < 300  # 56,000 draws of 14 operations: 4,000 each
    shears = magnitudes[ops == SHEAR_X]
    assert torch.allclose(shears.abs(), torch.tensor(0.09)) and 0.45 < (shears > 0).float().mean() < 0.55
    assert set(magnitudes[ops == POSTERIZE].tolist()) == {7}  # unsigned


def test_trivialaugment_draws_one_operation_at_a_random_level():
    ops, magnitudes = Policy("trivialaugment").draw(20_000, 32, 32, torch.Generator().manual_seed(0))
    assert ops.shape == (20_000, 1)
    rotations = magnitudes[ops == OPS.index("rotate")]
    assert rotations.min() < -120 and rotations.max() > 120 and len(set(rotations.tolist())) > 50


def test_autoaugment_applies_each_step_of_its_sub_policy_with_its_probability():
    ops, magnitudes = Policy("autoaugment_cifar10").draw(50_000, 32, 32, torch.Generator().manual_seed(0))
    # The first step of sub-policy 1 is Invert with probability 0.1, and invert is in 3 steps of the
    # 25 sub-policies (0.1, 0.0, 0.1): it is drawn for 0.2 / 25 of the images.
    assert abs((ops == INVERT).sum().item() / 50_000 - 0.2 / 25) < 0.002
    # Equalize at 0.9 + 0.6 + 0.5 + 0.3 + 0.2 + 0.2 + 0.6 + 0.6 + 0.8 = 4.7 steps in 25
    assert abs((ops == OPS.index("equalize")).float().sum().item() / 50_000 - 4.7 / 25) < 0.01
    # translate_y at level 9 of 10: 150/331 of 32 pixels, either way
    shifts = magnitudes[ops == OPS.index("translate_y")].abs()
    assert shifts.max().item() == pytest.approx(150 / 331 * 32) and (ops == IDENTITY).any()


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_keeps_whole_levels_in_range_and_changes_most_images(name):
    images = photo_like(256, 3, seed=2).float()
    ops, magnitudes = Policy(name).draw(256, 20, 24, torch.Generator().manual_seed(1))
    out = apply_policy(images, ops, magnitudes)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, out.round())
    changed = (out != images).flatten(1).any(1).float().mean()
    assert changed > 0.5


def test_the_policies_are_the_ones_the_checks_allow():
    assert _CHOICES["data.augment.policy"] == POLICIES


def test_policies_and_erasing_are_fixed_by_seed_and_epoch_and_exact_after_a_mid_epoch_resume():
    images = photo_like(96, 3, seed=3)
    labels = torch.arange(96) % 10
    augment = Augment(crop_padding=2, hflip=True, policy=Policy("randaugment", 2, 12), erasing=0.5,
                      erasing_noise=True)

    def epoch(seed: int, number: int, start: int = 0) -> list[torch.Tensor]:
        loader = MemoryLoader(images, labels, 16, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, seed=seed,
                              augment=augment)
        loader.set_epoch(number, start)
        return [batch for batch, _ in loader]

    full = epoch(0, 3)
    assert all(torch.equal(a, b) for a, b in zip(full, epoch(0, 3), strict=True))
    assert not torch.equal(full[0], epoch(0, 4)[0]) and not torch.equal(full[0], epoch(1, 3)[0])
    resumed = epoch(0, 3, start=4)
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(resumed, full[4:], strict=True))


def test_a_run_with_a_policy_and_erasing_stopped_mid_epoch_resumes_exactly(compose_config, tmp_path):
    overrides = [*SMALL, "data.augment.policy=autoaugment_cifar10", "data.augment.random_erasing=0.5"]
    augmented = assert_resumes_exactly(compose_config, overrides, tmp_path)
    plain = train(compose_config(*SMALL), tmp_path / "plain")  # and the policy changed what the model saw
    assert plain["history"][0]["train_loss"] != augmented["history"][0]["train_loss"]


def test_random_erasing_boxes_follow_torchvisions_rule():
    boxes = erasing_boxes(20_000, 32, 32, 0.25, (0.02, 0.33), (0.3, 3.3), torch.Generator().manual_seed(0))
    top, left, height, width = boxes.unbind(1)
    erased = height * width > 0
    assert abs(erased.float().mean().item() - 0.25) < 0.01
    area = (height * width)[erased] / 1024
    assert area.min() >= 0.01 and area.max() <= 0.36  # the share of the area, up to sides rounded
    assert (height[erased] < 32).all() and (width[erased] < 32).all()  # strictly inside, as torchvision
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 32).all() and (left + width <= 32).all()
    ratio = (height / width)[erased]
    assert ratio.min() >= 0.2 and ratio.max() <= 4 and (ratio > 1).float().mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("noise", [False, True])
def test_erasing_fills_each_chosen_box_with_the_mean_colour_or_noise(noise):
    augment = Augment(erasing=1.0, erasing_noise=noise)
    draws = augment.draw(64, 16, 16, torch.Generator().manual_seed(0))
    images = torch.full((64, 3, 16, 16), 7.0)  # normalised images, far from 0
    out = augment.erase(images, draws)
    for image, (top, left, height, width) in zip(out, draws["erase"].long().tolist(), strict=True):
        box = image[:, top:top + height, left:left + width]
        if noise:
            assert height * width < 4 or box.std() > 0.5
        else:
            assert (box == 0).all()
        outside = image.clone()
        outside[:, top:top + height, left:left + width] = 7.0
        assert (outside == 7.0).all()
    assert torch.equal(out, augment.erase(images, draws))  # the noise is drawn from its seed


def test_the_dataloader_path_uses_torchvisions_transforms(compose_config):
    cfg = compose_config("data=cifar10", "data.augment.policy=randaugment", "data.augment.policy_ops=3",
                         "data.augment.policy_magnitude=5", "data.augment.random_erasing=0.3",
                         "data.augment.erasing_value=noise").data
    steps = sample_transform(cfg, True, (32, 32), (32, 32)).transforms
    policy = next(step for step in steps if isinstance(step, v2.RandAugment))
    assert (policy.num_ops, policy.magnitude) == (3, 5)
    erasing = steps[-1]
    assert isinstance(erasing, v2.RandomErasing) and erasing.p == 0.3 and erasing.value is None  # "random"
    cfg.augment.policy = "autoaugment_svhn"
    steps = sample_transform(cfg, True, (32, 32), (32, 32)).transforms
    assert any(isinstance(step, v2.AutoAugment) and step.policy == v2.AutoAugmentPolicy.SVHN for step in steps)
    evaluation = sample_transform(cfg, False, (32, 32), (32, 32)).transforms
    assert not any(isinstance(step, v2.AutoAugment | v2.RandomErasing) for step in evaluation)


def test_the_dataloader_path_trains_with_a_policy(compose_config, cifar_root, tmp_path):
    result = train(compose_config("data=cifar10", f"data.root={cifar_root}", "data.download=false",
                                  "data.val_split=0.1", "data.loader=torch", "num_workers=0", "model=mlp",
                                  "model.hidden=[16]", "epochs=1", "device=cpu",
                                  "data.augment.policy=trivialaugment", "data.augment.random_erasing=0.25"),
                   tmp_path / "run")
    assert result["status"] == "finished"


def test_a_config_saved_before_the_policies_trains_without_them():
    saved = {"crop_padding": 4, "hflip": True}  # a data.augment of an older release
    assert Augment.from_config(saved) == Augment(crop_padding=4, hflip=True)


@pytest.mark.parametrize("override, message", [
    ("data.augment.policy=randaugmentt", "data.augment.policy='randaugmentt' is not one of: randaugment, "),
    ("data.augment.policy_magnitude=31", "data.augment.policy_magnitude=31 is out of range: must be an integer "
                                         "in [0, 30]"),
    ("data.augment.policy_ops=0", "data.augment.policy_ops=0 is out of range: must be an integer >= 1"),
    ("data.augment.random_erasing=1.5", "data.augment.random_erasing=1.5 is out of range"),
    ("data.augment.erasing_scale=[0.4,0.1]", "data.augment.erasing_scale=[0.4, 0.1] must be [low, high]"),
    ("data.augment.erasing_ratio=[0.3]", "data.augment.erasing_ratio=[0.3] has 1 value(s)"),
    ("data.augment.erasing_value=zero", "data.augment.erasing_value='zero' is not one of: mean, noise"),
])
def test_bad_policy_and_erasing_options_are_refused_in_one_line(compose_config, override, message):
    with pytest.raises(CnnbenchError) as error:
        check_config(compose_config(*SMALL, override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
