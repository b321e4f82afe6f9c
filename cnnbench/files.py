"""Files: written whole or not at all, locked while one process works on them, never written over
when cnnbench did not write them, and never written or read through a link planted in a folder
that may be someone else's.

Whole: a file is written beside its place, flushed to disk, then renamed over it (a rename is
atomic within a folder), so a crash, a kill -9 or a reader at any moment finds the old file or the
new one, never half of one. Checkpoints, metrics.json, the leaderboard and its pictures, a sweep's
journal are all written so. The file beside is created exclusively under a name nobody can guess,
so a link planted at that name cannot redirect the write; and a rename replaces a link at the
file's own name, never what the link points to.
"""

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cnnbench.errors import CnnbenchError
from cnnbench.runtime.host import HOST

log = logging.getLogger("cnnbench")

# How a file is opened so that a link at its name is refused (ELOOP) instead of followed, and a
# FIFO or a device does not block the opener.
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# What a reader of a run folder's small files (metrics.json, .claim, .hydra/*.yaml) reads at most:
# a planted multi-gigabyte file is damaged, not a reason to fill the memory.
SMALL_FILE_LIMIT = 64 * 2**20


def temporary_name(path: Path) -> Path:
    """A name beside `path` for a file or folder being made: host and process (writers on machines
    sharing a folder never meet) and a random token (nobody can plant a link there beforehand)."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_whole(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` with `write(file)`, whole or not at all. A failed write (a read-only folder, a
    full disk) is a CnnbenchError naming the file, and what `path` held before is untouched."""
    temporary = temporary_name(path)
    created = False
    try:
        # O_EXCL: a file of this name, or a link, that is already there is never written through
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666)
        created = True
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CnnbenchError(f"cannot write {path}: {error.strerror or error}; "
                            "earlier files there are untouched") from None
    finally:
        if created:
            temporary.unlink(missing_ok=True)


def write_text_whole(path: Path, text: str) -> None:
    """write_whole for text (UTF-8; a file name that is not UTF-8 is written as its own bytes)."""
    write_whole(path, lambda file: file.write(text.encode("utf-8", "surrogateescape")))


def read_plain(path: Path, limit: int = SMALL_FILE_LIMIT, head: bool = False) -> bytes:
    """The bytes of the regular file `path` (its first `limit` bytes with `head`); OSError when it
    is a link, a FIFO, a device or a folder, or holds more than `limit` bytes (in someone else's
    folder, any of them could make a reader hang, fill the memory or read a file elsewhere)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | NO_FOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ELOOP:  # what O_NOFOLLOW says of a link, in words a user reads
            raise OSError(errno.ELOOP, "a symbolic link, not a file", str(path)) from None
        raise
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if status.st_size > limit and not head:
            raise OSError(errno.EFBIG, f"more than {limit:,} bytes", str(path))
        return file.read(limit + 1)[:limit]


def refuse_links(folder: Path, names: tuple[str, ...]) -> None:
    """Refuse, in one line, a folder whose entry of one of `names` is a symbolic link: cnnbench,
    and Hydra before it, would write through it to wherever it points."""
    for name in names:
        path = folder / name
        if path.is_symlink():
            raise CnnbenchError(f"{path} is a symbolic link (to {os.readlink(path)}); cnnbench writes no "
                                "file through a link in a run or sweep folder, which may be someone "
                                f"else's: remove the link (rm {path}) or use another folder")


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
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)
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


@contextlib.contextmanager
def removed_on_exit(path: Path) -> Iterator[Path]:
    """Delete the folder or file `path` when the block ends, however it ends: normally, by an
    exception, by Ctrl-C (KeyboardInterrupt) or by SIGTERM or SIGHUP, which would otherwise end the
    process with nothing cleaned up (a half-written cache of gigabytes). Such a signal then takes
    its course once `path` is gone; a signal the process ignores stays ignored."""
    owner, received = os.getpid(), []

    def stop(number: int, frame: object) -> None:
        if os.getpid() != owner:  # a worker forked inside the block: it ends as it would have
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        received.append(number)
        raise SystemExit(128 + number)  # unwinds the block, whose clean-up runs

    watched = [number for number in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
               if number is not None and signal.getsignal(number) == signal.SIG_DFL]
    if threading.current_thread() is not threading.main_thread():
        watched = []  # only the main thread may set handlers; the clean-up below still runs
    for number in watched:
        signal.signal(number, stop)
    try:
        yield path
    finally:
        for number in watched:  # while deleting: a signal is noted, not raised in the middle of it
            signal.signal(number, lambda number, frame: received.append(number))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        for number in watched:
            signal.signal(number, signal.SIG_DFL)
        if received:
            os.kill(os.getpid(), received[0])  # as if it had come now: the default ends the process


# What tells each kind of file a cnnbench tool wrote, so that it is replaced and a user's own file
# of the same name never is: JSON files say their tool in "tool"; CSV files by their header; the
# leaderboard's markdown by the sentence under its heading; PNG pictures by a tEXt chunk
# "Software"; ONNX files by their metadata; TorchScript archives by an extra file.
CSV_HEADERS = {"file,class_1,probability_1": "cnnbench-predict",
               # leaderboard/table.py COLUMNS, of this release and of 0.1 (no protocol column)
               "model,data,config,seeds,": "cnnbench-report"}
# The sentence under the heading of every leaderboard.md (leaderboard/table.py writes it from here)
LEADERBOARD_SIGN = "One row per configuration (runs that differ only by seed)"
MARKDOWN_SIGNS = {LEADERBOARD_SIGN: "cnnbench-report"}
WRITTEN_BY = "written_by"  # the ONNX metadata key and the TorchScript extra file naming the tool
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def written_by(path: Path) -> str | None:
    """The cnnbench tool that wrote a file (see CSV_HEADERS and below), or None: not one of ours,
    or not readable."""
    try:
        if path.suffix == ".onnx":
            return _onnx_writer(path)
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                extra = f"/extra/{WRITTEN_BY}"
                name = next((name for name in archive.namelist() if name.endswith(extra)), None)
                return archive.read(name).decode() if name else None
        if path.suffix == ".png":
            return png_text(read_plain(path, limit=2**16, head=True)).get("Software")
        text = read_plain(path).decode("utf-8", errors="surrogateescape")  # file names as their bytes
        if path.suffix == ".csv":
            first = text.partition("\n")[0]
            return next((tool for header, tool in CSV_HEADERS.items() if first.startswith(header)), None)
        if path.suffix == ".md":
            return next((tool for sign, tool in MARKDOWN_SIGNS.items() if sign in text), None)
        tool = json.loads(text).get("tool")
        return tool if isinstance(tool, str) else None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, KeyError, zipfile.BadZipFile):
        return None


def _onnx_writer(path: Path) -> str | None:
    try:
        import onnx
    except ImportError:  # cannot tell: treated as not ours
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises its own DecodeError for a file that is not ONNX at all
        return None
    return next((prop.value for prop in model.metadata_props if prop.key == WRITTEN_BY), None)


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG file before its pixels, {keyword: text}."""
    if not data.startswith(PNG_SIGNATURE):
        return {}
    texts, at = {}, len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"tEXt":
            keyword, _, text = data[at + 8:at + 8 + length].partition(b"\0")
            texts[keyword.decode("latin-1")] = text.decode("latin-1")
        at += 12 + length  # length, type, data, CRC
    return texts


def check_output(path: Path, tool: str, what: str = "choose another out=PATH") -> None:
    """Refuse to overwrite a file unless an earlier run of `tool` wrote it, to write through a link,
    or to write into no folder; `what` says what the user can do instead."""
    if not path.parent.is_dir():
        raise CnnbenchError(f"out={path}: the folder {path.parent} does not exist")
    if path.is_symlink():
        raise CnnbenchError(f"{path} is a symbolic link (to {os.readlink(path)}): cnnbench does not write "
                            f"through it; {what} or remove the link")
    if not path.exists():
        return
    if path.is_file() and written_by(path) == tool:
        return
    raise CnnbenchError(f"{path} exists and was not written by {tool}; {what} or remove the file")
