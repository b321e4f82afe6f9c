"""`cnnbench-summary`: per-layer shapes, parameters and multiply-accumulates before training."""

import subprocess
import sys

import pytest

from cnnbench.cli.summary import summarize
from cnnbench.errors import CnnbenchError


def test_lenet_summary_on_fashion_mnist_matches_the_textbook(compose_config):
    text = summarize(compose_config("model=lenet", "data=fashion_mnist"))
    lines = text.splitlines()
    assert lines[0] == "lenet on fashion_mnist: input 1x28x28, 10 classes"
    shapes = [line.split()[2] for line in lines[2:-2]]
    # conv 6@28x28, pool 14x14, conv 16@10x10, pool 5x5, then 400-120-84-10
    assert shapes[:6] == ["6x28x28", "6x28x28", "6x14x14", "16x10x10", "16x10x10", "16x5x5"]
    assert shapes[-1] == "10"
    assert "total parameters: 61,706 (61,706 trainable)" in text
    # 28*28*6*25 + 10*10*16*150 + 400*120 + 120*84 + 84*10 conv/linear MACs
    assert "multiply-accumulates per image: 416,520" in text


def test_summary_follows_resize_and_channels(compose_config):
    text = summarize(compose_config("model=resnet18", "data=fashion_mnist", "data.resize=96"))
    assert text.splitlines()[0] == "resnet18 on fashion_mnist: input 1x96x96, 10 classes"
    # torchvision's 11,689,512 with a 1-channel 7x7 stem (-6,272) and a 10-class head (-507,870)
    assert "total parameters: 11,175,370" in text


def test_summary_of_images_too_small_for_the_model_names_the_smallest_size(compose_config):
    with pytest.raises(CnnbenchError, match=r"^data.image_size=4: lenet cannot take 4x4 images; the smallest "
                                            r"it takes is 12x12: use data.image_size=12 or more$"):
        summarize(compose_config("model=lenet", "data=fake", "data.image_size=4"))


@pytest.mark.slow
def test_summary_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnbench.cli.summary", "model=vgg11", "data=cifar10",
                             "model.width_ratio=0.25"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vgg11 on cifar10: input 3x32x32" in result.stdout and "total parameters:" in result.stdout
    assert list(tmp_path.iterdir()) == []  # prints only: no run folder, no log
    bad = subprocess.run([sys.executable, "-m", "cnnbench.cli.summary", "model=vgg11", "+model.depth=3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "vgg11() got an unexpected keyword argument 'depth'" in bad.stderr
