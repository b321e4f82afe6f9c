"""Where a run computes: the device, mixed precision, the memory layout, random seeds, and the
model under its wrappers (DistributedDataParallel, torch.compile)."""

import random

import numpy as np
import torch
from torch import nn

from cnnbench.errors import CnnbenchError


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; any other name must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnbenchError(f"device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "mps": torch.backends.mps.is_available(),
                 "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()}
    if not available.get(device.type, False):
        raise CnnbenchError(f"device={name}: no such device on this machine; use device=auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) so weights and dropout repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for `precision` bf16 or fp16 (matmuls and convs in 16 bits); off for fp32."""
    return torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout batches are handed to the model in (see the channels_last key)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, without torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
