"""Gradient flow: the gradient norm of every layer's weights, and the mean, spread and share of dead
or saturated units of every activation, measured on one optimizer step every N.

Why a teacher wants it: a sigmoid LeNet's early layers get gradients orders of magnitude smaller
than its last ones (the vanishing gradient), a deep plain network's too, and a ReLU network can
lose units that never fire again. These numbers show each as it happens.

Cost: nothing on the steps not measured (no hook is registered then). On a measured step, forward
hooks compute a few reductions per activation and the gradient norms are one small kernel per
layer; all of it is read from the device in one transfer.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

# Activations whose units are "dead" when they never pass a positive value (zero for every image
# of the batch): the ReLU family.
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)
# Activations with flat ends, and where their flat ends begin: outputs there pass on less than
# about 2% of the gradient they get (sigmoid' = y(1 - y) < 0.0099 below 0.01 and above 0.99;
# tanh' = 1 - y^2 < 0.02 beyond +-0.99).
SATURATING = {nn.Sigmoid: (0.01, 0.99), nn.Tanh: (-0.99, 0.99), nn.Hardtanh: (-0.99, 0.99)}
STATISTICS = ("mean", "std", "dead", "saturated")


class LayerWatch:
    """The layers of one model worth watching: those with a weight matrix or kernel (convolutions,
    linear layers; named as in the model's state_dict), and its activation modules."""

    def __init__(self, model: nn.Module, activations: bool = True) -> None:
        """`activations=False`: gradient norms only (a torch.compile'd model: hooks added and removed
        around one step would make it compile again, twice, on every measured step)."""
        self.layers = [(name, module.weight) for name, module in model.named_modules()
                       if isinstance(getattr(module, "weight", None), nn.Parameter) and module.weight.dim() > 1]
        self.activations = [(name, module) for name, module in model.named_modules()
                            if isinstance(module, RECTIFIERS + tuple(SATURATING))] if activations else []
        self._sums: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def activations_of_next_forward(self) -> Iterator[None]:
        """Record the activation statistics of the forward passes run inside the block."""
        self._sums = {}
        handles = [module.register_forward_hook(self._hook(name, module)) for name, module in self.activations]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, module: nn.Module):
        flat_ends = next((ends for kind, ends in SATURATING.items() if isinstance(module, kind)), None)

        @torch.no_grad()
        def record(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            output = output.detach().float()
            units = output.flatten(1)  # a unit: one channel at one place (or one feature)
            if flat_ends is None:  # dead: no image of the batch makes it positive
                dead = 1 - (units > 0).any(0).float().mean()
                saturated = torch.zeros((), device=output.device)
            else:
                dead = torch.zeros((), device=output.device)
                saturated = ((units <= flat_ends[0]) | (units >= flat_ends[1])).float().mean()
            # a module used more than once in a forward (a ResNet block's one ReLU, twice) adds
            # each call's numbers; `count` averages them in the end
            numbers = torch.stack([output.mean(), output.std(), dead, saturated, torch.ones((), device=output.device)])
            self._sums[name] = self._sums[name] + numbers if name in self._sums else numbers

        return record

    def measure(self, gradient_scale: float = 1.0) -> dict[str, dict[str, float]]:
        """What the last recorded forward and the gradients now held show: {"gradient_norm": {layer:
        norm}, "mean" | "std": {activation: value}, "dead": {rectifier: share}, "saturated":
        {sigmoid or tanh: share}}, read from the device in one transfer.

        `gradient_scale`: what the gradients were multiplied by (a mixed-precision loss scale),
        divided out here. Layers without a gradient (frozen) are left out."""
        with torch.no_grad():
            graded = [(name, weight.grad) for name, weight in self.layers if weight.grad is not None]
            recorded = list(self._sums.items())
            parts = [torch.linalg.vector_norm(grad.float()).view(1) / gradient_scale for _, grad in graded]
            parts += [numbers[:4] / numbers[4] for _, numbers in recorded]  # averaged over the calls
            values = torch.cat(parts).cpu().tolist() if parts else []  # the one wait for the device
        norms, activations = values[:len(graded)], values[len(graded):]
        result: dict[str, dict[str, float]] = {
            "gradient_norm": {name: norm for (name, _), norm in zip(graded, norms, strict=True)},
            **{statistic: {} for statistic in STATISTICS}}
        kinds = dict(self.activations)
        for index, (name, _) in enumerate(recorded):
            mean, std, dead, saturated = activations[4 * index:4 * index + 4]
            result["mean"][name], result["std"][name] = mean, std
            if isinstance(kinds[name], RECTIFIERS):
                result["dead"][name] = dead
            else:
                result["saturated"][name] = saturated
        return result
