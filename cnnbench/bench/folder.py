"""`cnnbench-bench --imagefolder`: an image folder through its decoded-image cache, against the
same folder decoded every epoch by a DataLoader and against CIFAR-10's in-memory path.

The folder is CIFAR-10's 10,000 test images written as PNGs (10 classes x 1,000, 32x32), LeNet at
32 px with random flips, batch 128, split 80/20 per class: 8,000 training images, as many as
`data=cifar10 data.train_limit=8000` trains on in memory with the same flips. It prints:
  - the first run's decoding pass into the cache (all cores) against one epoch of the DataLoader
    path, which decodes every image every epoch, and what a second run decodes (nothing);
  - images/s of epoch 2 on: the cache path, the DataLoader path, the in-memory CIFAR-10 path;
  - validation accuracy after `--epochs` epochs on the cache path and the DataLoader path.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from PIL import Image

from cnnbench.data.datasets import CIFAR10_CLASSES, load_cifar10
from cnnbench.engine.build import build_run
from cnnbench.engine.faults import StopSignals
from cnnbench.engine.state import RunState
from cnnbench.engine.train import train_epoch
from cnnbench.engine.validation import evaluate


def write_cifar10_test_folder(data_root: str, folder: Path) -> None:
    """CIFAR-10's test split as folder/<class>/<n>.png."""
    cfg = compose_config([f"data.root={data_root}", "data=cifar10", "data.download=false"])
    splits, _ = load_cifar10(cfg.data)
    images, labels = splits["test"]
    for name in CIFAR10_CLASSES:
        (folder / name).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / CIFAR10_CLASSES[label] / f"{index}.png")


def compose_config(overrides: list[str]):
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        return compose("config", overrides=["model=lenet", "device=cpu", "num_workers=2", *overrides])


def epochs(cfg, count: int) -> tuple[list[float], list[float], float, float]:
    """Images/s and seconds of each of `count` training epochs of the real runner, the seconds
    building the run took (data included), and the validation accuracy at the end."""
    start = time.perf_counter()
    run = build_run(cfg)
    built = time.perf_counter() - start
    state, rates, times = RunState(), [], []
    for epoch in range(count):
        trained = train_epoch(run, epoch, state, lambda: None, StopSignals())
        state.step, state.epoch_sums = 0, None
        rates.append(trained.images / trained.seconds)
        times.append(trained.seconds)
    accuracy = evaluate(run.model, run.data.val, run.device)["acc"]
    return rates, times, built, accuracy


def main(argv: list[str]) -> None:
    """`cnnbench-bench --imagefolder [--data-root DIR] [--epochs N] [--quick]`."""
    parser = argparse.ArgumentParser(prog="cnnbench-bench --imagefolder", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding cifar-10-batches-py")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 training images, 2 epochs: checks it runs")
    args = parser.parse_args(argv)
    count = 2 if args.quick else args.epochs
    limit = ["data.train_limit=2000"] if args.quick else []
    with tempfile.TemporaryDirectory() as scratch:
        folder, cache = Path(scratch) / "cifar10-test", Path(scratch) / "cache"
        write_cifar10_test_folder(args.data_root, folder)
        # 80/20, no test split: as many training images as the in-memory CIFAR-10 run below
        common = ["data=imagefolder", f"data.root={folder}", "data.val_split=0.2", "data.test_split=0",
                  "data.image_size=32", f"data.cache_dir={cache}",
                  "data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.2470,0.2435,0.2616]", *limit]
        cached = compose_config(common)
        first_rates, _, first_build, cached_accuracy = epochs(cached, count)  # decodes into the cache
        _, _, second_build, _ = epochs(compose_config(common), 1)  # reads the cache
        loader_rates, loader_times, _, loader_accuracy = epochs(compose_config([*common, "data.loader=torch"]),
                                                                count)
        memory_rates, _, _, _ = epochs(compose_config([
            "data=cifar10", f"data.root={args.data_root}", "data.download=false", "data.val_split=0",
            "data.augment.crop_padding=0",
            f"data.train_limit={2000 if args.quick else 8000}"]), count)
    steady = {name: statistics.median(rates[1:]) for name, rates in
              (("cache", first_rates), ("dataloader", loader_rates), ("memory", memory_rates))}
    first_epoch = loader_times[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; image folder: CIFAR-10's test "
          f"images as PNGs, LeNet at 32 px, flips, batch 128")
    print(f"first run: building the run took {first_build:.2f} s, decoding the images into the cache; "
          f"the DataLoader path's first epoch took {first_epoch:.2f} s: {first_build / first_epoch:.2f}x")
    print(f"second run: building the run took {second_build:.2f} s (nothing decoded)")
    print(f"epoch 2 on, images/s: cache path {steady['cache']:,.0f}, DataLoader path {steady['dataloader']:,.0f}, "
          f"in-memory CIFAR-10 {steady['memory']:,.0f}: cache / in-memory {steady['cache'] / steady['memory']:.2f}, "
          f"cache / DataLoader {steady['cache'] / steady['dataloader']:.2f}")
    print(f"validation accuracy after {count} epochs (seed 0): cache path {cached_accuracy:.4f}, "
          f"DataLoader path {loader_accuracy:.4f}")
