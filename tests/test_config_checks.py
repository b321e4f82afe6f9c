"""Every option of every config group is checked before any data loads (issue #17): an
out-of-range optimizer, scheduler, data or model value is one line naming the key, the value and
what is allowed, never a traceback from torch or a run with a nonsensical schedule."""

import pytest
from conftest import REPO
from test_cli import assert_one_line_error
from test_configs import run_cli

from cnnbench.config.checks import check_config
from cnnbench.errors import CnnbenchError

SCHEDULERS = sorted(p.stem for p in (REPO / "conf" / "scheduler").glob("*.yaml"))
OPTIMIZERS = sorted(p.stem for p in (REPO / "conf" / "optimizer").glob("*.yaml"))

# (preset, override, the message) for every literal option each preset sets
BAD_SCHEDULER_OPTIONS = [
    ("cosine", "scheduler.eta_min=-0.1", "scheduler.eta_min=-0.1 is out of range: must be a number >= 0"),
    ("cosine", "scheduler.T_max=0", "scheduler.T_max=0 is out of range: must be an integer >= 1"),
    ("multistep", "scheduler.gamma=0", "scheduler.gamma=0 is out of range: must be a number in (0, 1]"),
    ("multistep", "scheduler.milestones=[0]",
     "scheduler.milestones[0]=0 is out of range: must be an integer >= 1"),
    ("multistep", "scheduler.milestones=[8,5]", "scheduler.milestones=[8, 5] must rise"),
    ("none", "scheduler.factor=1.5", "scheduler.factor=1.5 is out of range: must be a number in (0, 1]"),
    ("none", "scheduler.total_iters=-1", "scheduler.total_iters=-1 is out of range: must be an integer >= 0"),
    ("onecycle", "scheduler.max_lr=0", "scheduler.max_lr=0 is out of range: must be a number > 0"),
    ("onecycle", "scheduler.pct_start=1.0", "scheduler.pct_start=1.0 is out of range: must be a number in (0, 1)"),
    ("onecycle", "scheduler.anneal_strategy=cosine",
     "scheduler.anneal_strategy='cosine' is not one of: cos, linear"),
    ("onecycle", "scheduler.total_steps=0", "scheduler.total_steps=0 is out of range: must be an integer >= 1"),
    ("step", "scheduler.step_size=0", "scheduler.step_size=0 is out of range: must be an integer >= 1"),
    ("step", "scheduler.gamma=2", "scheduler.gamma=2 is out of range: must be a number in (0, 1]"),
    ("step", "scheduler.step_size=1.5", "scheduler.step_size=1.5 is not an integer >= 1"),
]
BAD_OPTIMIZER_OPTIONS = [
    ("sgd", "optimizer.lr=0", "optimizer.lr=0 is out of range: must be a number > 0"),
    ("sgd", "optimizer.momentum=1", "optimizer.momentum=1 is out of range: must be a number in [0, 1)"),
    ("sgd", "optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is out of range: must be a number >= 0"),
    ("sgd", "optimizer.nesterov=yes", "optimizer.nesterov='yes' is not true or false"),
    ("sgd", "optimizer.momentum=0", "optimizer.nesterov=true needs optimizer.momentum > 0"),
    ("adam", "optimizer.lr=-1", "optimizer.lr=-1 is out of range: must be a number > 0"),
    ("adam", "optimizer.betas=[0.9,1.0]", "optimizer.betas[1]=1.0 is out of range: must be a number in [0, 1)"),
    ("adam", "optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 is out of range"),
    ("adamw", "optimizer.lr=0", "optimizer.lr=0 is out of range: must be a number > 0"),
    ("adamw", "optimizer.betas=[-0.1,0.999]", "optimizer.betas[0]=-0.1 is out of range"),
    ("adamw", "optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is out of range"),
]


def test_every_preset_has_its_bad_values_listed():
    assert {preset for preset, _, _ in BAD_SCHEDULER_OPTIONS} == set(SCHEDULERS)
    assert {preset for preset, _, _ in BAD_OPTIMIZER_OPTIONS} == set(OPTIMIZERS)


@pytest.mark.parametrize("preset, override, message", BAD_SCHEDULER_OPTIONS + BAD_OPTIMIZER_OPTIONS)
def test_out_of_range_options_of_every_preset_are_refused(compose_config, preset, override, message):
    group = override.split(".")[0]
    cfg = compose_config(f"{group}={preset}", override)
    with pytest.raises(CnnbenchError) as error:
        check_config(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, message", [
    (["data=cifar10", "data.augment.crop_padding=-4"],
     "data.augment.crop_padding=-4 is out of range: must be an integer >= 0"),
    (["data=cifar10", "data.std=[0.2,0,0.2]"], "data.std[1]=0 is out of range: must be a number > 0"),
    (["data=cifar10", "data.augment.hflip=maybe"], "data.augment.hflip='maybe' is not true or false"),
    (["data=imagefolder", "data.root=/x", "data.image_size=[0,32]"],
     "data.image_size[0]=0 is out of range: must be an integer >= 1"),
    (["data=mnist", "data.resize=-96"], "data.resize=-96 is out of range: must be an integer >= 1"),
    (["model=mlp", "model.dropout=1.5"], "model.dropout=1.5 is out of range: must be a number in [0, 1)"),
    (["model=mlp", "model.hidden=[256,0]"], "model.hidden[1]=0 is out of range: must be an integer >= 1"),
    (["model=vgg11", "model.width_ratio=0"], "model.width_ratio=0 is out of range: must be a number > 0"),
    (["model=resnet18", "model.stem=tiny"], "model.stem='tiny' is not one of: auto, imagenet, cifar"),
    (["model=lenet_bn", "model.norm=batch"], "model.norm='batch' is not one of: torch, scratch"),
    (["model=resdensenet", "model.block_config=[3,0,6,4]"], "model.block_config[1]=0 is out of range"),
    (["compile=sometimes"], "compile='sometimes' is not true or false"),
])
def test_out_of_range_data_and_model_options_are_refused(compose_config, overrides, message):
    with pytest.raises(CnnbenchError) as error:
        check_config(compose_config(*overrides))
    assert str(error.value).startswith(message)


# Values of the wrong shape or type (issue #23): each ended in a traceback from torch, numpy or
# Python, some after the data had loaded
@pytest.mark.parametrize("overrides, message", [
    (["optimizer.lr=[0.1]"], "optimizer.lr=[0.1] is a list: give one value, a number > 0"),
    (["label_smoothing=[0.1]"], "label_smoothing=[0.1] is a list: give one value, a number in [0, 1)"),
    (["warmup_epochs=[1]"], "warmup_epochs=[1] is a list"),
    (["early_stopping.patience=[1]"], "early_stopping.patience=[1] is a list"),
    (["log_every=[5]"], "log_every=[5] is a list"),
    (["ema.decay=[0.5]"], "ema.decay=[0.5] is a list"),
    (["scheduler=step", "scheduler.gamma=[0.5]"], "scheduler.gamma=[0.5] is a list"),
    (["scheduler=onecycle", "scheduler.max_lr=[0.1]"], "scheduler.max_lr=[0.1] is a list"),
    (["data=fake", "data.num_classes=[3]"],
     "data.num_classes=[3] is a list: give one value, an integer >= 2"),
    (["optimizer=adam", "optimizer.betas=0.9"], "optimizer.betas=0.9 is not a list: give two numbers"),
    (["optimizer=adamw", "optimizer.betas=[0.9,0.99,0.5]"],
     "optimizer.betas=[0.9, 0.99, 0.5] has 3 value(s)"),
    (["scheduler=multistep", "scheduler.milestones=5"],
     "scheduler.milestones=5 is not a list: give a list of steps"),
    (["data.accuracy_targets=0.5"], "data.accuracy_targets=0.5 is not a list: give a list of accuracies"),
    (["data=fake", "data.mean=0.5"], "data.mean=0.5 is not a list: give one number per channel"),
    (["data=fake", "data.std=[]"],
     "data.std=[] (0 values): fake images with data.in_channels=3 have 3 channel(s)"),
    (["data=cifar10", "data.mean=[0.5]"], "data.mean=[0.5] (1 value): cifar10 images have 3 channel(s)"),
    (["data=mnist", "data.resize=[32,32,32]"], "data.resize=[32, 32, 32] is not a size"),
    (["data=imagefolder", "data.root=/x", "data.image_size=[]"], "data.image_size=[] is not a size"),
    (["epochs=2.0"], "epochs=2.0 is not an integer >= 1"),
    (["seed=1e3"], "seed=1000.0 is not an integer in [0, 4294967295]"),
    (["data=fake", "data.permute_seed=4294967296"], "data.permute_seed=4294967296 is out of range"),
    (["device=[cpu]"], "device=['cpu'] is not a name: give one device: auto, cpu, cuda, cuda:N or mps"),
    (["data=mnist", "data.root=2024"],
     ("""data.root=2024 is not a name: give one folder (a name that reads as a number goes in quotes: """
      """'data.root="2024"')""")),
    (["threads=100000"], "threads=100000 is more than this machine's"),
    (["data=fashion_mnist", "data.search_dirs=5"], "data.search_dirs=5 is not a list of names: give a list"),
    (["data=fashion_mnist", "data.search_dirs=[5]"], "data.search_dirs=[5] is not a list of names"),
    (["+optimizer.dampening=0.5"],
     ("optimizer.dampening=0.5: Nesterov momentum (optimizer.nesterov=true) takes no dampening; set "
      "optimizer.dampening=0, or optimizer.nesterov=false")),
    (["data=fake", "data.num_classes=1000000000"],
     ("data.num_classes=1000000000: 512 training and 128 validation fake images of 3x32x32 in 1,000,000,000 "
      "classes need")),
    (["data=fake", "data.num_train=1000000000"], "data.num_train=1000000000: 1,000,000,000 training and 128"),
])
def test_values_of_the_wrong_shape_or_type_are_refused(compose_config, overrides, message):
    with pytest.raises(CnnbenchError) as error:
        check_config(compose_config(*overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_sizes_and_lists_of_the_right_shape_pass(compose_config):
    check_config(compose_config("data=imagefolder", "data.root=/x", "data.image_size=[24,32]",
                                "data.grayscale=true", "data.mean=[0.5]", "data.std=[0.25]"))
    check_config(compose_config("data=mnist", "data.resize=[32,48]", "seed=4294967295",
                                "batch_size=100000000"))
    check_config(compose_config("model=mlp", "model.hidden=[]", "data.accuracy_targets=[]"))
    check_config(compose_config("model=vgg11", "model.hidden=64", "data=fake", "data.in_channels=1",
                                "data.mean=[0.5]", "data.std=[0.5]"))


def test_interpolated_durations_are_left_to_the_run_and_good_values_pass(compose_config):
    for preset in SCHEDULERS:  # ${steps:...} and ${decay_steps:} need steps_per_epoch: not read yet
        check_config(compose_config(f"scheduler={preset}"))
    check_config(compose_config("scheduler=multistep", "scheduler.milestones=[2,4]", "optimizer=adam"))


def test_a_bad_scheduler_option_is_one_line_on_the_command_line(tmp_path):
    result = run_cli("scheduler=step", "scheduler.gamma=5", "data=mnist", "data.root=/nowhere", cwd=tmp_path)
    assert_one_line_error(result, "scheduler.gamma=5 is out of range: must be a number in (0, 1]")
    assert result.returncode == 2  # before any data loads: /nowhere was never looked at
