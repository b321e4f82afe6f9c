"""Files: written whole or not at all, locked while one process works on them, and never
written over when cnnbench did not write them.

Whole: a file is written beside its place, flushed to disk, then renamed over it (a rename is
atomic within a folder), so a crash, a kill -9 or a reader at any moment finds the old file or the
new one, never half of one. Checkpoints, metrics.json, the leaderboard and its pictures, a sweep's
journal are all written so.
"""

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cnnbench.errors import CnnbenchError
from cnnbench.runtime.host import HOST

log = logging.getLogger("cnnbench")


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


@contextlib.contextmanager
def locked(path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock (flock) on the file `path`, created if need be, while the block runs;
    wait for another holder first, saying `waiting` once if there is one. Where the file system or
    the platform has no locks, go on without."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; two processes at once may do the work twice
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # no locks on this file system: go on without
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    log.info(waiting)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the file releases its lock


# How the CSV files of cnnbench's tools begin, by tool (its JSON files say their tool in "tool").
CSV_HEADERS = {"file,class_1,probability_1": "cnnbench-predict"}


def written_by(path: Path) -> str | None:
    """The cnnbench tool that wrote a file: named in its JSON, or known by its CSV header."""
    try:
        if path.suffix == ".csv":
            with open(path, encoding="utf-8", errors="surrogateescape") as file:  # file names as bytes
                first = file.readline()
            return next((tool for header, tool in CSV_HEADERS.items() if first.startswith(header)), None)
        return json.loads(path.read_text(encoding="utf-8")).get("tool")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def check_output(path: Path, tool: str) -> None:
    """Refuse to overwrite a file unless an earlier run of `tool` wrote it, or to write into no folder."""
    if not path.parent.is_dir():
        raise CnnbenchError(f"out={path}: the folder {path.parent} does not exist")
    if not path.exists():
        return
    if path.is_file() and written_by(path) == tool:
        return
    raise CnnbenchError(f"{path} exists and was not written by {tool}; choose another out=PATH "
                        "or remove the file")
