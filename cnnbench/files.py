"""Files written whole or not at all: beside their place, flushed to disk, then renamed over it
(a rename is atomic within a folder), so a crash, a kill -9 or a reader at any moment finds the
old file or the new one, never half of one. Checkpoints, metrics.json, the leaderboard and its
pictures, a sweep's journal are all written so."""

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cnnbench.errors import CnnbenchError

HOST = socket.gethostname()


def write_whole(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` with `write(file)`, whole or not at all. A failed write (a read-only folder, a
    full disk) is a CnnbenchError naming the file, and what `path` held before is untouched."""
    # host and process in the temporary name: writers on machines sharing a folder never meet
    temporary = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CnnbenchError(f"cannot write {path}: {error.strerror or error}; "
                            "earlier files there are untouched") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_text_whole(path: Path, text: str) -> None:
    """write_whole for text (UTF-8)."""
    write_whole(path, lambda file: file.write(text.encode()))
