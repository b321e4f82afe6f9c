"""Checkpoints and run files: written atomically, loaded without running pickled code; what a
checkpoint holds, and restoring a run from one."""

import io
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cnnbench import files
from cnnbench.data.splits import split_summary
from cnnbench.engine.resume import config_changes, continue_schedule, shapes_schedule, shown_value
from cnnbench.engine.state import Run, RunState
from cnnbench.errors import CnnbenchError
from cnnbench.runtime import distributed
from cnnbench.runtime.device import set_rng_state, unwrap

log = logging.getLogger("cnnbench")

# What every cnnbench checkpoint holds besides tensors; all of it plain data (see save below).
REQUIRED_KEYS = ("model", "config", "classes", "epoch")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, lists, dicts), whole or not at all."""
    # Serialised in memory first: torch.save turns a failed write (disk full) into a RuntimeError
    # that no longer says why; a plain write of the bytes raises the OSError that does.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files.write_whole(path, lambda file: file.write(buffer.getbuffer()))


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically, so readers never see a half-written metrics file."""
    files.write_text_whole(path, json.dumps(data, indent=2))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a cnnbench checkpoint on the CPU, refusing anything that would run pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CnnbenchError(f"checkpoint {path} does not exist")
    with open(path, "rb") as file:
        head = file.read(4)
    # torch.save writes zip archives. torch.load reads anything else as a legacy pickle, and
    # weights_only then calls, say, a PNG "code to run": say what the file really is.
    if head != b"PK\x03\x04":
        raise CnnbenchError(f"{path} is not a PyTorch checkpoint (not a zip archive, as torch.save writes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise CnnbenchError(f"{path} was refused: loading it would run code it carries "
                            f"({reason}); only load checkpoints you trust") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnnbenchError(f"{path} is not a readable checkpoint (truncated or damaged?): "
                            f"{reason}") from None
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        raise CnnbenchError(f"{path} is not a cnnbench checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    return state


def default_weights(checkpoint: dict[str, Any]) -> str:
    """Which weights of a checkpoint a run's test score and the tools use unless told: the averaged
    ones ("ema") when the run kept an average (ema.decay > 0), else the trained ones ("live")."""
    return "ema" if checkpoint.get("ema") else "live"


def checkpoint_state(run: Run, state: RunState) -> dict[str, Any]:
    """Everything that decides the rest of the run (weights, optimizer, scheduler, loss scaler, its
    progress with every process's random generators), and what is needed to use the model alone.
    The progress is its own key, so that no field of it can ever shadow another."""
    data = run.data
    return {"model": unwrap(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "ema": run.ema.state_dict() if run.ema else None,
            "config": OmegaConf.to_container(run.config, resolve=True),
            "classes": data.classes, "in_channels": data.in_channels,
            "image_size": list(data.image_size), "data_identity": data.identity,
            "split": split_summary(data.split), "epoch": state.epoch, "progress": state.saved()}


def remove_unfinished_writes(run_dir: Path) -> None:
    """Delete the temporary files a killed run left half-written (the files they were to replace
    are intact: see files.py)."""
    for name in ("last.pt", "best.pt", "metrics.json", "config.json"):
        for path in run_dir.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)


def resume(checkpoint: dict[str, Any], path: Path, run: Run) -> RunState:
    """Load model, optimizer, scheduler, scaler and RNG states from `checkpoint` (read from `path`);
    return the run's progress so far, with this resume and what it changed noted."""
    state = RunState.from_checkpoint(checkpoint)
    log.info("resuming from %s after epoch %d%s", path, state.epoch, f", step {state.step}" if state.step else "")
    changes = config_changes(checkpoint["config"], run.config, keys=lambda key: key != "resume")
    saved_steps, steps = checkpoint["config"].get("steps_per_epoch"), run.config.steps_per_epoch
    if state.step and saved_steps != steps:
        # the same step number would be another place in the data. The batch size and the data
        # cannot change on resume (engine/resume.py): another number of processes is what is left.
        raise CnnbenchError(f"{path} was saved {state.step} steps into an epoch of {saved_steps} steps; this "
                            f"run has {steps} steps per epoch, as its processes share the data out: resume "
                            "it on as many processes as saved it (a checkpoint from an epoch's end resumes "
                            "on any number)")
    try:
        unwrap(run.model).load_state_dict(checkpoint["model"])
        if shapes_schedule(changes):  # rebuilt for the new length or settings, at the step reached
            continue_schedule(run, checkpoint)
        else:  # the same schedule: exactly where it was
            run.optimizer.load_state_dict(checkpoint["optimizer"])
            run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.scaler.load_state_dict(checkpoint["scaler"])
        if run.ema and checkpoint.get("ema"):
            run.ema.load_state_dict(checkpoint["ema"])
        elif run.ema:  # ema.decay set only now: the average starts from the resumed weights
            run.ema.model.load_state_dict(unwrap(run.model).state_dict())
    except (RuntimeError, ValueError, KeyError) as error:
        raise CnnbenchError(f"{path} does not match this config's model or optimizer "
                            f"({str(error).splitlines()[0]}); resume with the run's own overrides") from None
    restore_rng(state.rng, path)
    if changes:
        log.info("resuming with %s", ", ".join(f"{key}={shown_value(now)} (was {shown_value(was)})"
                                               for key, (was, now) in changes.items()))
    state.resumes.append({"epoch": state.epoch, "step": state.step,
                          "changed": {key: [was, now] for key, (was, now) in changes.items()}})
    return state


def restore_rng(saved: list[dict[str, Any]] | dict[str, Any], path: Path) -> None:
    """Give this process the random generators it had when `path` was saved (one per process).
    Saved by another number of processes: each keeps the seeds it was given, and the run goes on,
    no longer bit for bit the run it would have been."""
    saved = [saved] if isinstance(saved, dict) else saved  # earlier versions saved one process's
    rank, world = distributed.rank(), distributed.world_size()
    if len(saved) == world:
        set_rng_state(saved[rank])
    elif rank == 0:
        log.warning("%s was saved by %d process(es), this run has %d: each process keeps its own seed, "
                    "so the rest of the run is not bit for bit what it would have been", path, len(saved),
                    world)
