"""What a run reports about itself: metrics.json's summary, the HParams TensorBoard shows, the tags
an experiment tracker gets, and the run's peak memory."""

import functools
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from cnnbench.config.keys import model_name, override_key
from cnnbench.data.splits import Data, split_summary
from cnnbench.engine.state import RunState
from cnnbench.engine.validation import per_class_accuracy
from cnnbench.runtime.host import HOST, cpu_cores


def hparams(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """What distinguishes this run in TensorBoard's HParams tab: model, data, seed, and the overrides."""
    values: dict[str, Any] = {"model": model_name(cfg.model), "data": cfg.data.name, "seed": cfg.seed}
    overrides = run_dir / ".hydra" / "overrides.yaml"  # written by Hydra for CLI runs
    if overrides.is_file():
        for override in yaml.safe_load(overrides.read_text()) or []:
            key = override_key(override)
            if key not in ("model", "data", "seed", "resume") and not key.startswith("hydra"):
                value = OmegaConf.select(cfg, key, default=override.split("=", 1)[-1])
                values[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return values


def time_to_accuracy(history: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """For each target accuracy ("0.90"), the wall-clock seconds (training and validation, summed
    over the epochs so far) and the epoch at which validation accuracy first reached it; None when
    it never did. How DAWNBench and airbench compare recipes: not the best accuracy, the time to a bar.
    Nothing without a validation split: the test split is not looked at while a run trains."""
    if any(record["val_acc"] is None for record in history):
        return {}
    reached: dict[str, Any] = {}
    for target in sorted(targets):
        seconds = 0.0
        reached[f"{target:.2f}"] = None
        for record in history:
            seconds += record["epoch_time_s"]
            if record["val_acc"] >= target:
                reached[f"{target:.2f}"] = {"seconds": seconds, "epoch": record["epoch"]}
                break
    return reached


@functools.cache
def provenance(device: torch.device) -> dict[str, Any]:
    """What produced the numbers, so they can be reproduced and never compared across machines
    unknowingly: versions, the device, the host, the command line, the git commit of the folder."""
    from cnnbench import __version__

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    return {
        "cnnbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
        # torchvision's version from its metadata: importing it takes over a second (torch._dynamo)
        "torchvision": package_version("torchvision"), "cuda": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": str(device), "device_name": device_name(device),
        "cpu_cores": cpu_cores(),
        "hostname": HOST, "command": shlex.join(sys.orig_argv),
        "git_commit": git_commit(Path.cwd()),
    }


def tracker_tags(cfg: DictConfig, run_dir: Path, device: torch.device) -> dict[str, str]:
    """What an experiment tracker (MLflow's tags) is told produced a run: model, data, seed, the run
    folder, and its provenance."""
    tags = {"model": model_name(cfg.model), "data": cfg.data.name, "seed": cfg.seed,
            "run_folder": str(run_dir.absolute()), **provenance(device)}
    return {key: str(value) for key, value in tags.items() if value is not None}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    """The GPU's model, or the CPU's (from /proc/cpuinfo on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU ({platform.machine()})"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(folder: Path) -> str | None:
    """The commit checked out in `folder`'s git repository (with "+changes" when files differ from
    it), or None outside a repository or without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


def minor_page_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource  # Unix only
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory of this process so far: resident host memory, and the GPU's when on CUDA."""
    peaks = {}
    try:
        import resource  # Unix only

        # ru_maxrss is in kilobytes on Linux (bytes on macOS)
        scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
        peaks["peak_host_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except ImportError:
        pass
    if device.type == "cuda":
        peaks["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


def summarise(cfg: DictConfig, state: RunState, parameters: int, device: torch.device, data: Data,
              test: dict[str, Any] | None, finished: bool) -> dict[str, Any]:
    """The numbers metrics.json holds: what was chosen on validation and the test scores of that
    choice, final results, cost, the split, and the per-epoch history."""
    history = state.history
    last = history[-1] if history else {}
    validated = data.val is not None
    return {
        "status": "finished" if finished else "running",
        "model": model_name(cfg.model), "data": cfg.data.name, "seed": cfg.seed,
        "epochs_done": state.epoch, "epochs": cfg.epochs,
        # what everything a run chooses looked at: "validation" (the validation split), "none"
        # (data.val_split=0: nothing chosen, best.pt is the last epoch), or "test" (a run of
        # cnnbench 0.1, or resumed from one: it chose on the test split)
        "protocol": protocol(cfg.data) if validated else "none",
        "best_val_acc": state.best_val_acc if validated and history else None, "best_epoch": state.best_epoch,
        # the averaged weights' (ema.decay > 0), and which of the two picked best.pt's epoch
        "best_val_acc_ema": state.best_val_acc_ema, "final_val_acc_ema": last.get("val_acc_ema"),
        "best_by": (cfg.get("ema") or {}).get("best_by", "live") if state.best_val_acc_ema else "live",
        "stopped_early": state.epoch < cfg.epochs and finished,
        "final_val_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
        "final_train_acc": last.get("train_acc"), "final_train_loss": last.get("train_loss"),
        **test_results(test, data.classes),
        "parameters": parameters,
        "images_per_sec": sum(r["images_per_sec"] for r in history) / max(1, len(history)),
        "wall_time_s": state.wall_time_s, "device": str(device),
        "per_class_acc": state.per_class_acc,
        # left out: batches whose loss was NaN or infinite (on_nan=skip_batch), unreadable images
        # (data.bad_images=skip)
        "skipped_batches": state.skipped_batches, "skipped_images": state.skipped_images,
        **peak_memory_mb(device),
        "time_to_accuracy": time_to_accuracy(history, cfg.data.get("accuracy_targets") or []),
        # how many images each split held, a digest of which (split.json lists them), what decided it
        "split": split_summary(data.split),
        # an image folder's fingerprint and classes (a rerun or resume onto other images is refused)
        "data_identity": data.identity,
        # each resume: the epoch and step it continued from, and the keys it changed ({key: [was, now]})
        "resumes": state.resumes,
        "provenance": provenance(device),
        "history": history,
    }


def protocol(data_cfg: DictConfig) -> str:
    """What a run with a validation stream validates on: "validation", or "test" for a config of
    cnnbench 0.1 (no data.val_split: it validated on the test split, and goes on so)."""
    if data_cfg.name == "fake" or data_cfg.get("val_split") is not None:
        return "validation"
    return "test"


def test_results(test: dict[str, Any] | None, classes: list[str]) -> dict[str, Any]:
    """metrics.json's test keys: the chosen checkpoint's (best.pt) accuracy, loss and per-class
    accuracy, which weights of it, the final weights' and the final averaged weights' accuracy and
    loss; all None before the run ends, or with no test split."""
    best, final, ema = (test or {}).get("best"), (test or {}).get("final"), (test or {}).get("final_ema")
    return {"test_acc": best and best["acc"], "test_loss": best and best["loss"],
            "test_per_class_acc": per_class_accuracy(best["confusion"], classes) if best else None,
            "test_weights": (test or {}).get("weights"), "test_epoch": (test or {}).get("best_epoch"),
            "final_test_acc": final and final["acc"], "final_test_loss": final and final["loss"],
            "final_test_acc_ema": ema and ema["acc"]}
