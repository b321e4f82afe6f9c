"""Where a run computes: the device, mixed precision, the memory layout, random seeds and their
states, deterministic kernels, and the model under its wrappers (DDP, torch.compile)."""

import os
import random
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnbench.errors import CnnbenchError


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; any other name must be present. A CUDA
    device becomes this process's current one, so that nothing opens a context on GPU 0 (the
    pin-memory thread, a stray .cuda())."""
    if name == "auto":
        if torch.cuda.is_available():
            return use_cuda(torch.device("cuda", torch.cuda.current_device()))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnbenchError(f"device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if not available(device):
        raise CnnbenchError(f"device={name}: no such device on this machine; use device=auto or cpu")
    return use_cuda(device) if device.type == "cuda" else device


def available(device: torch.device) -> bool:
    """Whether this machine has `device` (cuda:3 on a machine with two GPUs: no)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    return {"cpu": True, "mps": torch.backends.mps.is_available()}.get(device.type, False)


def use_cuda(device: torch.device) -> torch.device:
    device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    torch.cuda.set_device(device)
    return device


def to_device(tensor: torch.Tensor, device: torch.device, **layout) -> torch.Tensor:
    """`tensor` on `device`: asynchronously only onto CUDA, where a copy from pageable memory is
    safe (MPS may still read the source after a non-blocking copy returns, when it may be freed)."""
    return tensor.to(device, non_blocking=device.type == "cuda", **layout)


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished what it was given (GPUs run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) so weights, dropout and the rest repeat.

    A distributed run seeds every process alike first (identical weights), then each process
    again with its own seed once the model is built: the same dropout masks on every GPU would
    waste the extra data; rank 0 of `seed` is seeded as the one process of a single run is.
    """
    if rank:
        seed = seed * 1_000_003 + 104_729 * rank  # its own stream, the same on every launch
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32 bits, and a rank's seed may be larger
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random number generator this process draws from, as plain data for a checkpoint:
    Python's, NumPy's, torch's on the CPU and on this process's GPU (CUDA or MPS) only."""
    numpy_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
             "torch": torch.get_rng_state(), "cuda": None, "mps": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators rng_state() saved (on this process's own GPU)."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # checkpoints of earlier versions: every GPU's, this one's by its index
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda, torch.cuda.current_device())
    if state.get("mps") is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed precision for `precision` bf16 or fp16 (matmuls and convs in 16 bits). fp32 enters no
    autocast at all: torch.autocast("mps", enabled=False) itself raises on torch versions without
    autocast on MPS."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse, in one line, a mixed precision this device's autocast does not offer (torch warns
    and runs in fp32, or raises, depending on its version)."""
    if precision == "fp32":
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device.type, dtype=PRECISIONS[precision]):
                pass
            offered = not any("autocast" in str(warning.message).lower() for warning in caught)
        except (RuntimeError, ValueError):
            offered = False
    if not offered:
        raise CnnbenchError(f"precision={precision} is not available on {device.type} with torch "
                            f"{torch.__version__}: use precision=fp32, or another device")


def deterministic_algorithms(on: bool, device: torch.device) -> None:
    """`deterministic=true`: only deterministic kernels, so a resumed GPU run can equal an
    uninterrupted one, as CPU runs always do; false: cuDNN picks its fastest kernels."""
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; it reads this before its first call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not on  # fixed input sizes: benchmark once, then fastest
        torch.backends.cudnn.deterministic = on
    if on != torch.are_deterministic_algorithms_enabled():  # (the call imports torch._dynamo: 0.8 s)
        # warn_only: an op without a deterministic kernel warns instead of stopping the run
        torch.use_deterministic_algorithms(on, warn_only=True)


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout batches are handed to the model in (see the channels_last key)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, without torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
