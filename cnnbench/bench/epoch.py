"""`cnnbench-bench`: how close cnnbench's training epoch comes to the model's compute limit.

For each case (model, dataset, precision, batch size) it times, in this one process:
  (a) cnnbench: one epoch through the runner's own code (build_run + train_epoch);
  (b) textbook: the course notebooks' loop, a DataLoader over torchvision's dataset with
      per-sample PIL transforms (ToTensor, Normalize, and crop+flip on CIFAR-10) and
      `.item()` after every batch;
  (c) compute limit: the same model, optimizer and batch size stepping through batches that
      already sit in memory, normalised: no data work at all;
and prints images/s for each with the ratios a/b (speed-up over the textbook) and c/a
(how far from the limit). The three alternate, `--repeats` times, and the median counts,
so that a noisy neighbour on a shared machine hits all three alike.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from cnnbench.bench.textbook import torchvision_dataset
from cnnbench.engine.build import build_run
from cnnbench.engine.faults import StopSignals
from cnnbench.engine.state import RunState
from cnnbench.engine.train import train_epoch
from cnnbench.engine.validation import evaluate
from cnnbench.runtime.device import autocast, memory_format

# (name, overrides): LeNet on Fashion-MNIST and on CIFAR-10 with crop+flip, plain fp32 and the
# fastest setting measured on a 2-core AVX-512 CPU (see benchmarks/README.md).
CASES = [
    ("lenet fashion_mnist fp32", ["model=lenet", "data=fashion_mnist"]),
    ("lenet fashion_mnist best", ["model=lenet", "data=fashion_mnist", "channels_last=true",
                                  "batch_size=256"]),
    ("lenet cifar10 fp32", ["model=lenet", "data=cifar10"]),
    ("lenet cifar10 best", ["model=lenet", "data=cifar10", "channels_last=true", "batch_size=256"]),
    # the automatic policies (per image, on the device) against the same epoch without any augmentation
    ("lenet cifar10 none", ["model=lenet", "data=cifar10", "data.augment.crop_padding=0",
                            "data.augment.hflip=false"]),
    ("lenet cifar10 randaugment", ["model=lenet", "data=cifar10", "data.augment.policy=randaugment"]),
    ("lenet cifar10 trivialaug", ["model=lenet", "data=cifar10", "data.augment.policy=trivialaugment"]),
    ("lenet cifar10 autoaugment", ["model=lenet", "data=cifar10", "data.augment.policy=autoaugment_cifar10"]),
]


def timed(function: Callable[[], object]) -> tuple[float, object]:
    """Seconds taken by function() and what it returned."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def cnnbench_epoch(cfg: DictConfig) -> Callable[[], tuple[float, int, nn.Module]]:
    """(a): one epoch of the real runner on a freshly built run."""
    def run_epoch():
        run = build_run(cfg)
        # StopSignals not entered: no handlers, so Ctrl-C stops the benchmark at once, as it should
        seconds, trained = timed(lambda: train_epoch(run, 0, RunState(), lambda: None, StopSignals()))
        return seconds, trained.images, run.model
    return run_epoch


def textbook_epoch(cfg: DictConfig, dataset: torch.utils.data.Dataset,
                   workers: int) -> Callable[[], tuple[float, int, nn.Module]]:
    """(b): the notebook loop over a torchvision dataset, with `.item()` after every batch."""
    def run_epoch():
        run = build_run(cfg)  # same model, optimizer and scheduler as (a), from the same seed
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers)
        model, optimizer = run.model, run.optimizer
        layout = memory_format(cfg.channels_last)

        def loop():
            seen, total_loss = 0, 0.0
            model.train()
            for images, labels in loader:
                images, labels = images.to(run.device, memory_format=layout), labels.to(run.device)
                with autocast(run.device, cfg.precision):
                    loss = run.criterion(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.scheduler.step()
                total_loss += loss.item()  # the habit that makes the host wait every step
                seen += len(labels)
            return seen

        seconds, seen = timed(loop)
        return seconds, seen, model
    return run_epoch


def compute_limit(cfg: DictConfig, pool_batches: int = 16) -> Callable[[], tuple[float, int, nn.Module]]:
    """(c): the same steps on normalised batches already in memory: the model's own speed."""
    def run_epoch():
        run = build_run(cfg)
        iterator = iter(run.data.train)
        pool = [next(iterator) for _ in range(min(pool_batches, len(run.data.train)))]
        layout = memory_format(cfg.channels_last)
        pool = [(x.contiguous(memory_format=layout), y) for x, y in pool]
        model, optimizer = run.model, run.optimizer

        def loop():
            model.train()
            seen = 0
            for step in range(len(run.data.train)):
                images, labels = pool[step % len(pool)]
                with autocast(run.device, cfg.precision):
                    loss = run.criterion(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.scheduler.step()
                seen += len(labels)
            loss.item()  # wait for the last step before stopping the clock
            return seen

        seconds, seen = timed(loop)
        return seconds, seen, model
    return run_epoch


def main(argv: list[str]) -> None:
    """`cnnbench-bench [--data-root DIR] [--repeats N] [--quick] [--case NAME] [--device DEVICE]`."""
    parser = argparse.ArgumentParser(prog="cnnbench-bench", description=__doc__.splitlines()[0],
                                     epilog="cnnbench-bench --process [--quick]: start-up, a sweep, the "
                                            "allocator and 3 epochs, each as a whole process (--process -h). "
                                            "cnnbench-bench --imagefolder [--quick]: an image folder through "
                                            "its cache and through a DataLoader (--imagefolder -h)")
    parser.add_argument("--data-root", default="data", help="folder holding the datasets (data.root)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each kind per case")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the textbook loop")
    parser.add_argument("--quick", action="store_true",
                        help="a few batches per epoch, one repeat: checks that it runs, not speed")
    parser.add_argument("--case", action="append", help="only cases whose name contains this")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    limit = ["data.train_limit=1024"] if args.quick else []
    repeats = 1 if args.quick else args.repeats
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    print(f"torch {torch.__version__}, {args.device}: {where}")
    header = f"{'case':<28}{'(a) cnnbench':>14}{'(b) textbook':>14}{'(c) limit':>12}{'a/b':>7}{'c/a':>7}" \
             f"{'acc a':>8}{'acc b':>8}"
    print(header + "   (images/s, median of repeats; accuracy after one epoch)")
    for name, overrides in CASES:
        if args.case and not any(part in name for part in args.case):
            continue
        with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
            # data.val_split=0: cnnbench trains on the whole training split, as the textbook loop does,
            # and both are scored on the test split
            cfg = compose("config", overrides=[*overrides, "data.val_split=0", f"data.root={args.data_root}",
                                               "data.download=false", f"device={args.device}", *limit])
        with tempfile.TemporaryDirectory() as scratch:
            dataset = torchvision_dataset(cfg, Path(scratch))
            if args.quick:
                dataset = torch.utils.data.Subset(dataset, range(1024))
            kinds = {"a": cnnbench_epoch(cfg), "b": textbook_epoch(cfg, dataset, args.workers),
                     "c": compute_limit(cfg)}
            kinds["c"]()  # warm-up: oneDNN builds its kernels for these shapes on first use
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            accuracy = {}
            for _ in range(repeats):
                for kind, run_epoch in kinds.items():
                    seconds, seen, model = run_epoch()
                    rates[kind].append(seen / seconds)
                    if kind in "ab":
                        val = build_run(cfg).data.test
                        device = next(model.parameters()).device
                        accuracy[kind] = evaluate(model, val, device, cfg.precision, cfg.channels_last)["acc"]
        a, b, c = (statistics.median(rates[kind]) for kind in "abc")
        print(f"{name:<28}{a:>14,.0f}{b:>14,.0f}{c:>12,.0f}{a / b:>7.2f}{c / a:>7.2f}"
              f"{accuracy['a']:>8.4f}{accuracy['b']:>8.4f}", flush=True)
