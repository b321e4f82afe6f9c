"""`cnnbench-bench --process`: what a run costs around its epochs, measured on whole processes.

  (a) start-up: a 1-batch run (`cnnbench epochs=1 limit_batches=1`) against `import torch` alone,
      and against the floor of any PyTorch training script: `import torch` plus one optimizer step
      (torch.optim imports torch._dynamo on first use, about as long as torch itself);
  (b) a sweep of short runs: its wall time against the sum of its runs' epoch times;
  (c) the allocator: one LeNet epoch with keep_freed_memory=true and =false (minor page faults,
      images/s), each in its own process;
  (d) 3 epochs of LeNet on Fashion-MNIST, whole process: cnnbench against the textbook loop.
Commands alternate and the median of `--repeats` counts, as in the epoch table.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnbench.runtime.host import cpu_cores

# The floor: what any script that trains with torch.optim pays before its first step.
FLOOR = ("import torch\n"
         "model = torch.nn.Linear(3, 1)\n"
         "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
         "model(torch.zeros(1, 3)).sum().backward()\n"
         "optimizer.step()\n")
SWEEP = ["model=lenet,mlp,small_cnn", "data=mnist", "epochs=1", "seed=0,1"]


def seconds(command: list[str], cwd: Path) -> float:
    """Wall time of a whole process; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cnnbench-bench: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def cnnbench(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "cnnbench", *arguments]


def startup(data: list[str], repeats: int, scratch: Path) -> None:
    """(a) a 1-batch run against import torch, and against import torch + one optimizer step."""
    commands = {"import torch": [sys.executable, "-c", "import torch"],
                "import torch + one SGD step": [sys.executable, "-c", FLOOR]}
    times: dict[str, list[float]] = {name: [] for name in [*commands, "run"]}
    for repeat in range(repeats):
        for name, command in commands.items():
            times[name].append(seconds(command, scratch))
        run = cnnbench("epochs=1", "limit_batches=1", *data, f"hydra.run.dir=startup{repeat}")
        times["run"].append(seconds(run, scratch))
    torch_s, floor_s, run_s = (statistics.median(times[name]) for name in times)
    print("(a) start-up, whole process (median):")
    print(f"    python -c 'import torch'               {torch_s:6.2f} s")
    print(f"    import torch + one SGD step (floor)    {floor_s:6.2f} s   {floor_s / torch_s:.2f}x import torch")
    print(f"    cnnbench epochs=1 limit_batches=1      {run_s:6.2f} s   {run_s / torch_s:.2f}x import torch, "
          f"{run_s / floor_s:.2f}x the floor", flush=True)


def sweep(data: list[str], extra: list[str], scratch: Path) -> None:
    """(b) a sweep's wall time against the sum of its runs' epoch times."""
    folder = scratch / "sweep"
    wall = seconds(cnnbench("-m", *SWEEP, *data, *extra, f"hydra.sweep.dir={folder}"), scratch)
    epochs = [record["epoch_time_s"] for path in folder.glob("*/metrics.json")
              for record in json.loads(path.read_text())["history"]]
    print(f"(b) sweep cnnbench -m {' '.join(SWEEP + extra)} ({len(list(folder.glob('*/metrics.json')))} runs):")
    print(f"    wall {wall:.1f} s, sum of epoch_time_s {sum(epochs):.1f} s: {wall / sum(epochs):.2f}x", flush=True)


def allocator(data: list[str], extra: list[str], repeats: int, scratch: Path) -> None:
    """(c) the second epoch of LeNet on Fashion-MNIST with freed memory kept and given back."""
    results: dict[str, list[tuple[float, int]]] = {"true": [], "false": []}
    for repeat in range(repeats):
        for keep in results:
            folder = scratch / f"keep-{keep}-{repeat}"
            seconds(cnnbench("epochs=2", "batch_size=256", "threads=2", *data, *extra,
                             f"keep_freed_memory={keep}", f"hydra.run.dir={folder}"), scratch)
            second = json.loads((folder / "metrics.json").read_text())["history"][1]
            results[keep].append((second["images_per_sec"], second["page_faults"]))
    rate = {keep: statistics.median(r for r, _ in runs) for keep, runs in results.items()}
    faults = {keep: statistics.median(f for _, f in runs) for keep, runs in results.items()}
    print("(c) allocator: LeNet, Fashion-MNIST, batch 256, epoch 2 (median):")
    for keep in results:
        print(f"    keep_freed_memory={keep:<5}  {rate[keep]:9,.0f} img/s  {faults[keep]:11,.0f} minor page faults")
    print(f"    kept / given back: {rate['true'] / rate['false']:.2f}x the images/s, "
          f"{faults['true'] / max(faults['false'], 1):.2%} of the page faults", flush=True)


def three_epochs(data_root: str, extra: list[str], epochs: int, repeats: int, scratch: Path) -> None:
    """(d) whole process, LeNet on Fashion-MNIST, batch 256, fp32: cnnbench against the textbook."""
    times: dict[str, list[float]] = {"cnnbench": [], "textbook": []}
    for repeat in range(repeats):
        times["cnnbench"].append(seconds(cnnbench(
            f"epochs={epochs}", "batch_size=256", "data.val_split=0", f"data.root={data_root}", *extra,
            f"hydra.run.dir=three{repeat}"), scratch))
        times["textbook"].append(seconds([sys.executable, "-m", "cnnbench.bench.textbook",
                                          "--data-root", data_root, "--epochs", str(epochs),
                                          *(["--limit", extra[0].split("=")[1]] if extra else [])], scratch))
    ours, theirs = (statistics.median(times[name]) for name in times)
    print(f"(d) {epochs} epochs of LeNet on Fashion-MNIST, batch 256, fp32, whole process (median):")
    print(f"    cnnbench {ours:.1f} s, textbook loop {theirs:.1f} s: cnnbench {theirs / ours:.2f}x faster",
          flush=True)


def main(argv: list[str]) -> None:
    """`cnnbench-bench --process [--quick] [--repeats N] [--data-root DIR]`."""
    parser = argparse.ArgumentParser(prog="cnnbench-bench --process", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding MNIST (Fashion-MNIST may come "
                        "from /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small data, one repeat: checks that it runs")
    args = parser.parse_args(argv)
    root = str(Path(args.data_root).absolute())
    repeats = 1 if args.quick else args.repeats
    limit = ["data.train_limit=2000"] if args.quick else []
    print(f"{cpu_cores()} cores; each command is a whole process, as a user starts it", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        startup([f"data.root={root}"], repeats, folder)
        sweep([f"data.root={root}"], limit, folder)
        allocator([f"data.root={root}"], limit, repeats, folder)
        three_epochs(root, limit, 1 if args.quick else 3, repeats, folder)
