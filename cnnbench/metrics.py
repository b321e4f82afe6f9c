"""What a run reports about itself: metrics.json's summary, the HParams TensorBoard shows, and
the run's peak memory."""

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from cnnbench.config import override_key


def model_name(cfg: DictConfig) -> str:
    """The model's registered name: its builder's function name."""
    return cfg.model._target_.rsplit(".", 1)[-1]


def hparams(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """What distinguishes this run in TensorBoard's HParams tab: model, data, seed, and the overrides."""
    values: dict[str, Any] = {"model": model_name(cfg), "data": cfg.data.name, "seed": cfg.seed}
    overrides = run_dir / ".hydra" / "overrides.yaml"  # written by Hydra for CLI runs
    if overrides.is_file():
        for override in yaml.safe_load(overrides.read_text()) or []:
            key = override_key(override)
            if key not in ("model", "data", "seed", "resume") and not key.startswith("hydra"):
                value = OmegaConf.select(cfg, key, default=override.split("=", 1)[-1])
                values[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return values


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


def summarise(cfg: DictConfig, state: dict[str, Any], parameters: int, device: torch.device,
              finished: bool) -> dict[str, Any]:
    """The numbers metrics.json holds: final and best results, cost, and the per-epoch history."""
    history = state["history"]
    last = history[-1] if history else {}
    return {
        "status": "finished" if finished else "running",
        "model": model_name(cfg), "data": cfg.data.name, "seed": cfg.seed,
        "epochs_done": state["epoch"], "epochs": cfg.epochs,
        "best_val_acc": state["best_val_acc"], "best_epoch": state["best_epoch"],
        "stopped_early": state["epoch"] < cfg.epochs and finished,
        "final_val_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
        "final_train_acc": last.get("train_acc"), "final_train_loss": last.get("train_loss"),
        "parameters": parameters,
        "images_per_sec": sum(r["images_per_sec"] for r in history) / max(1, len(history)),
        "wall_time_s": state["wall_time_s"], "device": str(device),
        "per_class_acc": state.get("per_class_acc", {}),
        # left out: batches whose loss was NaN or infinite (on_nan=skip_batch), unreadable images
        # (data.bad_images=skip)
        "skipped_batches": state["skipped_batches"], "skipped_images": state["skipped_images"],
        **peak_memory_mb(device),
        "history": history,
    }
