"""The resolvers the YAML files use: durations in epochs turned into optimizer steps, a parallel
job's share of the cores and its GPU, a sweep job's folder name, and the keys left out of it."""

import hashlib
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.keys import RUNTIME_KEYS
from cnnbench.runtime.host import cpu_cores


def optimizer_steps_per_epoch(cfg: DictConfig) -> int:
    """The optimizer steps one epoch takes: one per batch, or one per accumulate_grad_batches batches
    (the epoch's last, shorter group steps too). Schedulers and the weight average count these."""
    every = int(cfg.get("accumulate_grad_batches", 1) or 1)  # .get: configs saved before the key existed
    return -(-int(cfg.steps_per_epoch) // every)


def _steps(epochs: float, *, _root_: DictConfig) -> int:
    # Schedulers step once per optimizer step; configs speak in epochs, which this turns into steps.
    return max(1, round(float(epochs) * optimizer_steps_per_epoch(_root_)))


def warmup_steps(cfg: DictConfig) -> int:
    """The optimizer steps of the linear warmup (warmup_epochs may be fractional)."""
    return round(cfg.warmup_epochs * optimizer_steps_per_epoch(cfg))


def decay_steps(cfg: DictConfig) -> int:
    """The optimizer steps a scheduler runs after warmup, so that e.g. cosine reaches eta_min at the
    end: the run's steps less the warmup's (rounding the difference instead could leave one step
    fewer than the run takes: one-cycle then stops the run)."""
    return max(1, cfg.epochs * optimizer_steps_per_epoch(cfg) - warmup_steps(cfg))


def _decay_steps(*, _root_: DictConfig) -> int:
    return decay_steps(_root_)


def _threads_per_job(jobs: int) -> int:
    # Parallel jobs split the cores this process may use (affinity, not the machine's count).
    return max(1, cpu_cores() // int(jobs))


def _device_for_job(job_number: int, jobs_per_gpu: int) -> str:
    # Parallel jobs on a machine with GPUs: job n on GPU (n // jobs_per_gpu) mod the GPUs visible
    # (CUDA_VISIBLE_DEVICES counts), so two jobs never share one unless asked; no GPU: auto.
    import torch  # resolved in the job, which imports torch anyway

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{(int(job_number) // int(jobs_per_gpu)) % gpus}" if gpus else "auto"


# A run name longer than this many characters is cut, and a hash of the whole name keeps it
# distinct from every other...
MAX_NAME_LENGTH = 200
# ... and so is one longer than file systems allow in a name, in bytes (é takes 2 in UTF-8).
MAX_NAME_BYTES = 255


def run_folder(model: str, data: str, overrides: str, seed: Any) -> str:
    """A sweep job's folder name: model, data, other overrides, seed: `mlp_fake_optimizer.lr=0.01_seed=0`."""
    name = "_".join(str(part) for part in (model, data, overrides, f"seed={seed}") if str(part))
    name = name.replace("/", "_")  # a path in a value (data.root=a/b) must not nest folders
    if len(name) > MAX_NAME_LENGTH or len(os.fsencode(name)) > MAX_NAME_BYTES:
        digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
        # cut in characters as it always was (a rerun finds its folders), then in bytes, leaving out
        # whole a character the cut would split
        head = os.fsencode(name[:MAX_NAME_LENGTH - 9])[:MAX_NAME_BYTES - 9].decode("utf-8", "ignore")
        name = f"{head}_{digest}"
    return name


def _runtime_keys(*also: str) -> list[str]:
    # hydra.job.config.override_dirname.exclude_keys: the keys that are not what a run trains
    # (config/keys.py), and those that have their own place in a folder's name (model, data, seed)
    return [*also, *RUNTIME_KEYS]


def register_resolvers() -> None:
    """Make the resolvers the YAML files use available: steps, decay_steps, threads_per_job,
    device_for_job, run_folder, runtime_keys."""
    OmegaConf.register_new_resolver("steps", _steps, replace=True)
    OmegaConf.register_new_resolver("decay_steps", _decay_steps, replace=True)
    OmegaConf.register_new_resolver("threads_per_job", _threads_per_job, replace=True)
    OmegaConf.register_new_resolver("device_for_job", _device_for_job, replace=True)
    OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)  # hydra.sweep.subdir
    OmegaConf.register_new_resolver("runtime_keys", _runtime_keys, replace=True)
