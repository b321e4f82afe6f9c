"""Batch normalization written out in a few lines, for teaching; matches nn.BatchNorm1d/2d.

Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167. Same conventions as PyTorch, so the
two can be swapped and compared: `momentum` is the weight of the NEW batch statistic in the
moving average (Keras uses the opposite convention), the batch is normalised with the biased
variance, and the moving variance stores the unbiased one.
"""

import torch
from torch import Tensor, nn


class BatchNorm(nn.Module):
    """Normalise each channel with batch statistics in training and moving averages in eval."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        # gamma and beta let the network undo the normalisation where that helps
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        # buffers, not parameters: saved in the state dict and moved by .to(), never trained
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}")
        # one statistic per channel: over the batch for (N, C), over batch and pixels for (N, C, H, W)
        dims = [0] if x.dim() == 2 else [0, 2, 3]
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
        if self.training:
            count = x.numel() // x.shape[1]
            if count < 2:
                raise ValueError("batch statistics need more than one value per channel in training")
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            with torch.no_grad():  # the moving averages are bookkeeping, not part of the graph
                unbiased_var = var * count / (count - 1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased_var)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return self.gamma.view(shape) * x_hat + self.beta.view(shape)

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}, eps={self.eps}, momentum={self.momentum}"
