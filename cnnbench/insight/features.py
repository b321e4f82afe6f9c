"""The pictures of what a network's convolutions learned: the first convolution's filters, and the
feature maps one image makes at the output of each stage.

A "stage" is found from the model as it runs, the same way for every family: the modules' outputs
in the order they finish, grouped by resolution; a stage's output is the last one at its
resolution before the network downsamples (a ResNet's stem and stages, VGG's last ReLU before each
pooling, a DenseNet's transitions). No family needs its own list, and a new model gets the same.
"""

import torch
from torch import nn


def first_convolution(model: nn.Module) -> tuple[str, torch.Tensor] | None:
    """The name and weights (out x in x kh x kw) of the model's first 2-d convolution; None for a
    model with none (the MLP)."""
    return next(((name, module.weight.detach()) for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d)), None)


@torch.no_grad()
def stage_outputs(model: nn.Module, image: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(module name, C x H x W feature maps) at the end of each stage, for one normalised image
    (C x H x W, on the model's device), in evaluation mode; the model's mode is put back after.
    Stages of one pixel (after global pooling) are left out: there is no map to see."""
    stages: list[tuple[str, torch.Tensor]] = []

    def keep(name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if not (isinstance(output, torch.Tensor) and output.dim() == 4):
                return
            # a copy: an in-place ReLU after this module would change the output it returned
            maps = output[0].detach().float().clone()
            if stages and stages[-1][1].shape[-2:] == maps.shape[-2:]:
                # the stage goes on: a later output at the same resolution names it, unless that is a
                # container of several stages ending (ResNet's `stages` ends with its stages.3)
                spans_stages = any(earlier.startswith(f"{name}.") for earlier, _ in stages[:-1])
                stages[-1] = (stages[-1][0] if spans_stages else name, maps)
            elif not stages or maps[0].numel() < stages[-1][1][0].numel():
                stages.append((name, maps))
            # else larger than the stage before: no stage but an adaptive pooling that enlarges a
            # small image's maps for the classifier (VGG's and AlexNet's to 7x7, at 32 px)
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        model(image.unsqueeze(0))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [(name, maps) for name, maps in stages if maps.shape[-1] * maps.shape[-2] > 1]


def strongest_channels(maps: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the `count` channels of C x H x W `maps` with the largest mean response:
    those the image excites (most ReLU maps of a trained net are near zero for any one image)."""
    return maps.flatten(1).mean(1).topk(min(count, len(maps))).indices
