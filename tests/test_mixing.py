"""MixUp and CutMix (data.augment.mixup_alpha, cutmix_alpha): each against a hand-worked batch, the
loss with label smoothing, the draws per batch, and whole runs that mix and resume exactly."""

import math

import pytest
import torch
from conftest import SMALL_RUN, assert_resumes_exactly
from torch import nn

from cnnbench.config.checks import check_config
from cnnbench.data.mixing import Mix, Mixing, cutmix_box, mix_batch
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError

SMALL = [*SMALL_RUN, "batch_size=32"]


def test_mixup_blends_each_image_and_its_label_with_its_partners():
    images = torch.tensor([[[[0.0, 10.0]]], [[[20.0, 30.0]]], [[[40.0, 50.0]]]])  # 3 images of 1x1x2
    labels = torch.tensor([0, 2, 1])
    mixed, targets, larger = mix_batch(images, labels, 3, Mix(lam=0.7, partners=[1, 2, 0]))
    # image 0: 0.7 x (0, 10) + 0.3 x (20, 30) = (6, 16); its target 0.7 on class 0, 0.3 on class 2
    assert mixed.flatten().tolist() == pytest.approx([6, 16, 26, 36, 28, 38])
    assert torch.allclose(targets, torch.tensor([[0.7, 0, 0.3], [0, 0.3, 0.7], [0.3, 0.7, 0]]))
    assert larger.tolist() == [0, 2, 1]  # lam >= 0.5: each image's own class holds the larger share
    _, _, larger = mix_batch(images, labels, 3, Mix(lam=0.2, partners=[1, 2, 0]))
    assert larger.tolist() == [2, 1, 0]  # the partner's


def test_cutmix_pastes_the_partners_box_and_labels_by_the_area_left():
    images = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    labels = torch.tensor([0, 1])
    box = (1, 3, 0, 2)  # rows 1-2, columns 0-1: 4 of the 16 pixels
    mixed, targets, _ = mix_batch(images, labels, 2, Mix(lam=0.75, partners=[1, 0], box=box))
    expected = torch.zeros(4, 4)
    expected[1:3, 0:2] = 1
    assert torch.equal(mixed[0, 0], expected) and torch.equal(mixed[1, 0], 1 - expected)
    assert targets.tolist() == [[0.75, 0.25], [0.25, 0.75]]


def test_the_cutmix_box_covers_one_minus_lam_of_the_area_and_is_clipped_at_the_border():
    # lam 0.64: sides of sqrt(0.36) = 0.6 of the image's, 6x6 of a 10x10 image around its centre
    assert cutmix_box(0.64, 10, 10, (5, 5)) == (2, 8, 2, 8)
    # at the corner the box is cut to 3x3: the label's share follows the area the box has
    assert cutmix_box(0.64, 10, 10, (0, 0)) == (0, 3, 0, 3)
    mix = Mixing(cutmix_alpha=1.0).draw((0, 0, 0, 0), 8, 10, 10)
    top, bottom, left, right = mix.box
    assert mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / 100)


def test_label_smoothing_applies_to_the_mixed_targets():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    targets = torch.tensor([[0.7, 0.0, 0.3]])
    smoothing = 0.1
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, targets)
    # smoothing after mixing: each target x (1 - 0.1) + 0.1 / 3, the same as mixing smoothed one-hots
    smoothed = targets * (1 - smoothing) + smoothing / 3
    assert loss.item() == pytest.approx(-(smoothed * logits.log_softmax(1)).sum().item(), rel=1e-6)


def test_each_batch_draws_its_own_mix_the_same_every_time():
    mixing = Mixing(mixup_alpha=0.4, cutmix_alpha=1.0)
    first = mixing.draw((0, 0, 1, 5), 16, 32, 32)
    assert mixing.draw((0, 0, 1, 5), 16, 32, 32) == first  # the same seed, epoch and step
    draws = [mixing.draw((0, 0, 1, step), 16, 32, 32) for step in range(40)]
    # (CutMix's lam follows the box's whole pixels: two boxes may cover as many)
    assert len({(d.lam, tuple(d.partners)) for d in draws}) == 40
    assert sorted(first.partners) == list(range(16))
    cutmix = sum(d.box is not None for d in draws)
    assert 8 <= cutmix <= 32  # switch_prob 0.5: about half of them
    assert mixing.draw((0, 1, 1, 5), 16, 32, 32) != first  # another process: its own draws
    sometimes = Mixing(mixup_alpha=0.4, prob=0.25)
    assert 2 <= sum(sometimes.draw((0, 0, 0, step), 16, 32, 32) is not None for step in range(40)) <= 20
    assert not Mixing().active and not Mixing(mixup_alpha=1.0, prob=0.0).active


def test_a_mixed_run_learns_and_mixup_prob_0_trains_as_without_mixing(compose_config, tmp_path):
    plain = train(compose_config(*SMALL), tmp_path / "plain")
    # a batch mixed once in a million: every batch is drawn for, and none is mixed; the draws use
    # their own generators, so the run's random numbers (shuffle, weights) are what they were
    rarely = ["data.augment.mixup_alpha=0.4", "data.augment.mixup_prob=0.000001"]
    never = train(compose_config(*SMALL, *rarely), tmp_path / "never")
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[r[k] for k in keys] for r in never["history"]] == \
        [[r[k] for k in keys] for r in plain["history"]]
    mixed = train(compose_config(*SMALL, "data.augment.mixup_alpha=0.4", "data.augment.cutmix_alpha=1.0"),
                  tmp_path / "mixed")
    assert mixed["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    # validation and test see the images as they are: the test score of best.pt is reproducible
    assert mixed["best_val_acc"] > 0.2 and mixed["test_acc"] is not None


def test_a_mixed_run_stopped_mid_epoch_resumes_exactly(compose_config, tmp_path):
    assert_resumes_exactly(compose_config, [*SMALL, "batch_size=16", "data.augment.mixup_alpha=0.4",
                                            "data.augment.cutmix_alpha=1.0"], tmp_path)


@pytest.mark.parametrize("override, message", [
    ("data.augment.mixup_alpha=-1", "data.augment.mixup_alpha=-1 is out of range: must be a number >= 0"),
    ("data.augment.cutmix_alpha=-0.5",
     "data.augment.cutmix_alpha=-0.5 is out of range: must be a number >= 0"),
    ("data.augment.mixup_prob=1.5",
     "data.augment.mixup_prob=1.5 is out of range: must be a number in [0, 1]"),
    ("data.augment.mixup_switch_prob=-0.1",
     "data.augment.mixup_switch_prob=-0.1 is out of range: must be a number in [0, 1]"),
])
def test_mixing_options_out_of_range_are_refused(compose_config, override, message):
    with pytest.raises(CnnbenchError) as error:
        check_config(compose_config(*SMALL, override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_mixing_is_on_every_dataset_and_off_by_default(compose_config):
    for data in ("mnist", "fashion_mnist", "cifar10", "fake", "imagefolder"):
        augment = compose_config(f"data={data}").data.augment
        assert not Mixing.from_config(augment).active, data
        assert math.isclose(augment.mixup_switch_prob, 0.5), data
