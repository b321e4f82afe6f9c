"""Checkpoints and run files: written atomically, loaded without running pickled code."""

import io
import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.errors import CnnbenchError

# What every cnnbench checkpoint holds besides tensors; all of it plain data (see save below).
REQUIRED_KEYS = ("model", "config", "classes", "epoch")


def _atomic_write(path: Path, write) -> None:
    # Write beside the target, flush to disk, then rename: a crash at any moment leaves either
    # the old file or the new one, never half of one (rename is atomic within a folder).
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CnnbenchError(f"cannot write {path}: {error.strerror or error}; "
                            "earlier files there are untouched") from None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically."""
    # Serialised in memory first: torch.save turns a failed write (disk full) into a RuntimeError
    # that no longer says why; a plain write of the bytes raises the OSError that does.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write(path, lambda file: file.write(buffer.getbuffer()))


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically, so readers never see a half-written metrics file."""
    _atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


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


def rng_state() -> dict[str, Any]:
    """Every random number generator a run draws from, as plain data for a checkpoint."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by rng_state()."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
