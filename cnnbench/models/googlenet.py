"""GoogLeNet (Inception v1): parallel 1x1, 3x3, 5x5 and pooling branches, concatenated."""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from cnnbench.models.registry import register_model

# Inception modules of the paper's table 1, per stage: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
_INCEPTION_STAGES: list[list[tuple[int, int, int, int, int, int]]] = [
    [(64, 96, 128, 16, 32, 32),        # 3a
     (128, 128, 192, 32, 96, 64)],     # 3b
    [(192, 96, 208, 16, 48, 64),       # 4a -> first auxiliary classifier
     (160, 112, 224, 24, 64, 64),      # 4b
     (128, 128, 256, 24, 64, 64),      # 4c
     (112, 144, 288, 32, 64, 64),      # 4d -> second auxiliary classifier
     (256, 160, 320, 32, 128, 128)],   # 4e
    [(256, 160, 320, 32, 128, 128),    # 5a
     (384, 192, 384, 48, 128, 128)],   # 5b
]
_AUX_AFTER = [(1, 0), (1, 3)]  # (stage, module) whose output feeds an auxiliary classifier


class GoogLeNetOutputs(NamedTuple):
    """The main logits and the two auxiliary classifiers' logits (training mode, aux on)."""

    logits: Tensor
    aux1: Tensor
    aux2: Tensor


class ConvReLU(nn.Sequential):
    """Conv, optional BatchNorm (the Inception-v2 addition), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, **conv) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, bias=not batch_norm, **conv)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        super().__init__(*layers, nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Four branches over the same input; 1x1 "reduce" convs keep the 3x3 and 5x5 branches cheap."""

    def __init__(self, in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int,
                 c5: int, pool_proj: int, batch_norm: bool) -> None:
        super().__init__()
        self.branch1 = ConvReLU(in_channels, c1, batch_norm, kernel_size=1)
        self.branch3 = nn.Sequential(
            ConvReLU(in_channels, c3_reduce, batch_norm, kernel_size=1),
            ConvReLU(c3_reduce, c3, batch_norm, kernel_size=3, padding=1),
        )
        # a real 5x5 as in the paper (torchvision's port uses 3x3 here by a long-kept mistake)
        self.branch5 = nn.Sequential(
            ConvReLU(in_channels, c5_reduce, batch_norm, kernel_size=1),
            ConvReLU(c5_reduce, c5, batch_norm, kernel_size=5, padding=2),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            ConvReLU(in_channels, pool_proj, batch_norm, kernel_size=1),
        )
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x):
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class AuxClassifier(nn.Module):
    """The paper's side head: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout 0.7, FC classes."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool) -> None:
        super().__init__()
        self.head = nn.Sequential(
            # adaptive: the paper's 5x5/3 pool gives 4x4 only at 224 px
            nn.AdaptiveAvgPool2d((4, 4)),
            ConvReLU(in_channels, 128, batch_norm, kernel_size=1),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 1024), nn.ReLU(inplace=True),
            nn.Dropout(0.7),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x):
        return self.head(x)


class GoogLeNet(nn.Module):
    """Stem convs, three stages of Inception modules with max-pools between, global average pool, FC."""

    def __init__(self, num_classes: int, in_channels: int, batch_norm: bool, aux_logits: bool,
                 dropout: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvReLU(in_channels, 64, batch_norm, kernel_size=7, stride=2, padding=3),
            # padding=1 on every pool: a 28 px input shrinks 14-7-4-2-1 and never to 0
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ConvReLU(64, 64, batch_norm, kernel_size=1),
            ConvReLU(64, 192, batch_norm, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList()
        self.aux = nn.ModuleDict()
        width = 192
        for stage_index, stage in enumerate(_INCEPTION_STAGES):
            modules: list[nn.Module] = []
            for module_index, numbers in enumerate(stage):
                modules.append(Inception(width, *numbers, batch_norm=batch_norm))
                width = modules[-1].out_channels
                if aux_logits and (stage_index, module_index) in _AUX_AFTER:
                    self.aux[f"{stage_index}_{module_index}"] = AuxClassifier(width, num_classes, batch_norm)
            if stage_index < len(_INCEPTION_STAGES) - 1:
                modules.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            self.stages.append(nn.Sequential(*modules))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        x = self.stem(x)
        aux_logits: list[Tensor] = []
        for stage_index, stage in enumerate(self.stages):
            for module_index, module in enumerate(stage):
                x = module(x)
                key = f"{stage_index}_{module_index}"
                # the side heads only help training (extra gradient to the middle layers)
                if self.training and key in self.aux:
                    aux_logits.append(self.aux[key](x))
        logits = self.head(x)
        if aux_logits:
            return GoogLeNetOutputs(logits, *aux_logits)
        return logits


@register_model
def googlenet(num_classes: int = 1000, in_channels: int = 3,
              image_size: int | Sequence[int] = 224, batch_norm: bool = True,
              aux_logits: bool = False, dropout: float = 0.4) -> GoogLeNet:
    """GoogLeNet / Inception v1 without LRN (Szegedy et al. 2014, https://arxiv.org/abs/1409.4842)."""
    return GoogLeNet(num_classes, in_channels, batch_norm, aux_logits, dropout)
