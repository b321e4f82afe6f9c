"""What TensorBoard is shown of the network (#27 items 2, 3, 6): gradient norms and activation
statistics against a hand computation, the filter and feature-map pictures, the training curves
between epochs, and the switches that turn each off."""

import math

import pytest
import torch
from conftest import SMALL_RUN
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from cnnbench.engine.figures import CARD_WIDTH, FONT_SIZE, feature_maps_image, filters_caption, filters_image
from cnnbench.engine.train import train
from cnnbench.errors import CnnbenchError
from cnnbench.insight.features import first_convolution, stage_outputs, strongest_channels
from cnnbench.insight.gradients import LayerWatch
from cnnbench.models import get_model


def tiny_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3))


def test_gradient_norms_and_activation_statistics_match_a_hand_computation():
    model = tiny_network()
    inputs, labels = torch.randn(8, 4) * 3, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    watch = LayerWatch(model)
    with watch.activations_of_next_forward():
        loss = nn.functional.cross_entropy(model(inputs), labels)
    loss.backward()
    measured = watch.measure()
    # by hand: the layers' outputs computed again, the gradients' norms summed by hand
    hidden = torch.relu(inputs @ model[0].weight.T + model[0].bias)
    squashed = torch.sigmoid(hidden @ model[2].weight.T + model[2].bias)
    for index in (0, 2, 4):
        by_hand = math.sqrt(sum(g * g for g in model[index].weight.grad.flatten().tolist()))
        assert measured["gradient_norm"][str(index)] == pytest.approx(by_hand, rel=1e-5)
    assert measured["mean"]["1"] == pytest.approx(hidden.mean().item(), rel=1e-5)
    assert measured["std"]["3"] == pytest.approx(squashed.std().item(), rel=1e-5)
    never_positive = [all(hidden[i, unit] <= 0 for i in range(8)) for unit in range(6)]
    assert measured["dead"] == {"1": pytest.approx(sum(never_positive) / 6)}
    flat = ((squashed <= 0.01) | (squashed >= 0.99)).float().mean().item()
    assert measured["saturated"] == {"3": pytest.approx(flat)}
    # the mixed-precision loss scale is divided out
    scaled = watch.measure(gradient_scale=4.0)["gradient_norm"]["0"]
    assert scaled == pytest.approx(measured["gradient_norm"]["0"] / 4)


def test_a_dead_unit_is_counted_and_a_twice_used_activation_averages_its_calls():
    model = tiny_network()
    with torch.no_grad():
        model[0].bias[:2] = -1e3  # two of the six units can never fire
    watch = LayerWatch(model)
    with watch.activations_of_next_forward():
        model(torch.randn(16, 4))
    assert watch.measure()["dead"]["1"] >= 2 / 6 - 1e-6

    relu = nn.ReLU()
    twice = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    watch = LayerWatch(twice)
    inputs = torch.randn(4, 3)
    with watch.activations_of_next_forward():
        twice(inputs)
    first = torch.relu(twice[0](inputs))
    second = torch.relu(twice[2](first))
    assert list(watch.measure()["mean"]) == ["1"]  # one module, measured once, named once
    assert watch.measure()["mean"]["1"] == pytest.approx((first.mean() + second.mean()).item() / 2, rel=1e-5)
    # no hook stays behind: a later forward records nothing
    watch._sums = {}
    twice(inputs)
    assert watch.measure()["mean"] == {}


def test_the_filter_grid_shows_each_filter_with_a_caption_of_its_shape():
    weights = torch.randn(20, 3, 5, 5)
    picture = filters_image("conv1", weights)
    cell = CARD_WIDTH // 8
    assert picture.size == (8 * cell, FONT_SIZE + 10 + 3 * cell)  # 20 filters: three rows of eight
    assert filters_caption("conv1", weights) == "conv1: 20 filters, 3x5x5"
    grey = filters_image("conv1", torch.randn(70, 2, 3, 3))  # not RGB: the mean over its inputs; 64 at most
    assert grey.size == (8 * cell, FONT_SIZE + 10 + 8 * cell)
    assert filters_caption("stem", torch.randn(70, 2, 3, 3)) == "stem: 70 filters, 2x3x3 (mean over inputs)"
    # each filter is stretched by its own largest weight: a filter of tiny weights is not flat grey
    tiny = torch.zeros(1, 1, 3, 3)
    tiny[0, 0, 1, 1] = 1e-6
    tile = filters_image("c", tiny).crop((2, FONT_SIZE + 12, cell - 2, FONT_SIZE + 8 + cell))
    assert tile.convert("L").getextrema()[1] == 255


def test_stages_are_found_where_each_family_downsamples():
    resnet = get_model("resnet18", num_classes=10, in_channels=3)
    stages = stage_outputs(resnet, torch.randn(3, 64, 64))
    assert [name for name, _ in stages] == ["stem.2", "stages.0", "stages.1", "stages.2", "stages.3"]
    assert [maps.shape[-1] for _, maps in stages] == [32, 16, 8, 4, 2]
    assert resnet.training  # its mode is put back
    vgg = get_model("vgg11", num_classes=10, in_channels=3).eval()
    sizes = [maps.shape[-1] for _, maps in stage_outputs(vgg, torch.randn(3, 32, 32))]
    assert sizes == [32, 16, 8, 4, 2]  # the adaptive pooling that enlarges to 7x7 is no stage
    assert not vgg.training
    maps = torch.zeros(5, 4, 4)
    maps[3] += 2
    maps[1] += 1
    assert strongest_channels(maps, 2).tolist() == [3, 1]
    picture = feature_maps_image(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(),
                                 [(name, maps, strongest_channels(maps, 8)) for name, maps in stages])
    cell = CARD_WIDTH // 8
    assert picture.size == (8 * cell, 2 * cell + 8 + len(stages) * (FONT_SIZE + 6 + cell))
    assert first_convolution(get_model("mlp", num_classes=10, in_channels=1, image_size=(8, 8))) is None


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_a_run_shows_curves_between_epochs_gradients_and_the_network(compose_config, tmp_path):
    # a LeNet on 32x32 fake images: 2 epochs of 8 optimizer steps
    cfg = compose_config("data=fake", "data.num_train=256", "data.num_val=32", "data.num_test=32",
                         "batch_size=32", "epochs=3", "device=cpu", "log_every=3",
                         "insight.gradient_stats_every=5", "insight.pictures_every=2")
    train(cfg, tmp_path / "run")
    board = events(tmp_path / "run")
    # the curves between epochs: every log_every-th optimizer step of each epoch, counted over the run
    assert [e.step for e in board.Scalars("step/train_loss")] == [1, 4, 7, 9, 12, 15, 17, 20, 23]
    assert [round(e.value, 6) for e in board.Scalars("step/lr")][-1] < board.Scalars("step/lr")[0].value
    # a point is the mean over the batches since the last: the epoch's mean lies within their range
    epoch_one = [e.value for e in board.Scalars("step/train_loss")][:3]
    assert min(epoch_one) <= board.Scalars("train/loss")[0].value <= max(epoch_one)
    # the gradients of every fifth optimizer step, for each convolution and linear layer
    assert [e.step for e in board.Scalars("gradient_norm/features.0")] == [1, 6, 11, 16, 21]
    assert {"gradient_norm/classifier.5", "activation_dead/features.1", "activation_mean/features.1"} \
        <= set(board.Tags()["scalars"])
    assert [e.step for e in board.Images("gradient_flow")] == [1, 2, 3]
    # filters and feature maps after the first and last epochs and every second
    assert [e.step for e in board.Images("network/filters")] == [1, 2, 3]
    assert [e.step for e in board.Images("network/feature_maps")] == [1, 2, 3]
    assert board.Images("network/filters")[0].width == CARD_WIDTH // 8 * 8


def test_the_switches_turn_the_pictures_and_statistics_off(compose_config, tmp_path):
    cfg = compose_config(*SMALL_RUN, "insight.gradient_stats_every=0", "insight.pictures=false")
    train(cfg, tmp_path / "run")
    board = events(tmp_path / "run")
    assert not [tag for tag in board.Tags()["scalars"] if tag.startswith(("gradient_norm", "activation_"))]
    assert not [tag for tag in board.Tags()["images"] if tag.startswith(("network", "gradient_flow"))]
    assert board.Scalars("step/train_loss")  # the curves between epochs stay
    for bad, words in (("insight.gradient_stats_every=-1", "insight.gradient_stats_every"),
                       ("insight.pictures=maybe", "insight.pictures")):
        with pytest.raises(CnnbenchError, match=words):
            train(compose_config(*SMALL_RUN, bad), tmp_path / "bad")
