"""Distributed training with torchrun: one process per GPU (or CPU share), gradients all-reduced.

`torchrun --nproc_per_node=N -m cnnbench ...` starts N copies of cnnbench with RANK, WORLD_SIZE
and LOCAL_RANK in their environment; with WORLD_SIZE > 1 each joins one process group (NCCL on
GPUs, gloo on CPUs), trains on its own shard of the data, and rank 0 alone writes files.
"""

import os

import numpy as np
import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True when torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> torch.device:
    """Join the process group if torchrun asked for one; the device this process trains on."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        # one GPU per process: LOCAL_RANK numbers the processes on this node
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    """This process's number, 0 when not distributed."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train this run, 1 when not distributed."""
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_objects(item: object) -> list[object]:
    """`item` of every process (plain values, lists, dicts and CPU tensors), in rank order
    ([item] when not distributed)."""
    if not dist.is_initialized():
        return [item]
    items: list[object] = [None] * dist.get_world_size()
    # as NumPy arrays: all_gather_object cannot unpickle tensors here (torch 2.14: "UntypedStorage
    # has no attribute dtype")
    dist.all_gather_object(items, _convert(item, torch.Tensor, lambda tensor: tensor.numpy()))
    return [_convert(each, np.ndarray, torch.from_numpy) for each in items]


def _convert(item: object, kind: type, change) -> object:
    if isinstance(item, kind):
        return change(item)
    if isinstance(item, dict):
        return {key: _convert(value, kind, change) for key, value in item.items()}
    if isinstance(item, list | tuple):
        return type(item)(_convert(value, kind, change) for value in item)
    return item


def is_main() -> bool:
    """True in the one process that logs and writes files."""
    return rank() == 0


def sum_across(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (itself when not distributed)."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def max_across(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of `tensor` over all processes (itself when not distributed)."""
    return _all_reduce(tensor, dist.ReduceOp.MAX)


def gather_across(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` of every process, stacked in rank order (a stack of one when not distributed)."""
    if not dist.is_initialized():
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.stack(parts)


def broadcast(tensor: torch.Tensor) -> None:
    """Give every process rank 0's values of `tensor`, in place (nothing when not distributed)."""
    if dist.is_initialized():
        dist.broadcast(tensor, src=0)


def barrier() -> None:
    """Wait until every process has come here (nothing when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    if dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=op)
    return tensor


def stop() -> None:
    """Leave the process group (every process, at the end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()

