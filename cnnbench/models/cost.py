"""What a model costs: its parameters, and the multiply-accumulates of one image through it, counted
by torch's own FLOP counter (1 MAC = 2 FLOPs)."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameters(model: nn.Module) -> int:
    """Every parameter of the model, trainable or not."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def macs(model: nn.Module, images: torch.Tensor) -> int:
    """Multiply-accumulates of `model` on `images` (one image: its cost per image), in eval mode."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops() // 2
