"""An exponential moving average of the weights (`ema.decay` > 0): after every optimizer step,
average = decay x average + (1 - decay) x weights. The average of the last few thousand steps
often validates better than the weights of the last step (Polyak & Juditsky 1992; timm's ModelEma).

BatchNorm's running statistics are copied from the live model, not averaged: they describe the
activations of the live weights, and an average of them fits neither. With `ema.warmup`, the
decay grows with the number of updates t as min(decay, (1 + t) / (10 + t)), TensorFlow's
ExponentialMovingAverage rule, so the first steps' random weights fade out fast.
"""

import copy
from typing import Any

import torch
from torch import nn

from cnnbench.runtime import distributed
from cnnbench.runtime.device import unwrap


class WeightAverage:
    """The averaged copy of a model, updated in place after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s weights; copy its buffers (BatchNorm statistics)."""
        live = unwrap(model)
        decay = self.current_decay()
        averaged = [p for p in self.model.parameters()]
        current = [p.detach() for p in live.parameters()]
        # average += (1 - decay) * (weights - average): one fused op over all the parameters
        torch._foreach_lerp_(averaged, current, 1 - decay)
        for mine, theirs in zip(self.model.buffers(), live.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates += 1

    def same_on_every_process(self) -> None:
        """Under DDP, every process's average is identical (the same weights, the same updates), but
        each copied its own BatchNorm statistics: take rank 0's, as DDP does for the live model."""
        for buffer in self.model.buffers():
            distributed.broadcast(buffer)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
