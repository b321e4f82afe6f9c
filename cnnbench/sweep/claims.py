"""Claims on run folders: one process at a time trains a run folder, whatever launched it and
on whichever machine it runs (copies of one sweep on every GPU, a SLURM job array, hosts sharing
a folder over NFS).

A process claims a run folder before it trains it and holds the claim until it is done:
- an OS lock (flock) on RUN/.claim, held the whole time. The kernel releases it when the process
  ends, however it ends (kill -9 included): a claim whose lock can be taken is stale.
- the file names the holder (host, pid, start time), and the holder touches it every HEARTBEAT_S
  seconds. Where locks do not cross machines (some NFS set-ups), a claim from another host counts
  as live while its heartbeat is younger than STALE_AFTER_S, and as stale after.
The holder deletes the file when it lets go, so a .claim left behind was left by a process that
died. cnnbench-report reads claims without locking (a lock taken only to look could turn a
worker away): a claim is live there while its heartbeat is young and, on this host, its process
exists.
"""

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cnnbench.errors import CnnbenchError
from cnnbench.files import NO_FOLLOW, read_plain
from cnnbench.runtime.host import HOST, process_exists

CLAIM_FILE = ".claim"
HEARTBEAT_S = 30
# Ten missed heartbeats: well past NFS's attribute cache (up to 60 s by default), and clocks that
# NTP keeps within seconds of each other.
STALE_AFTER_S = 300
# Errors that say the file system has no locks at all: the heartbeat rule alone decides then.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass
class Holder:
    """Who claimed a run folder: host, process, when (time.time()), last heartbeat (the file's mtime)."""

    host: str
    pid: int
    started: float
    heartbeat: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.pid}"

    def silent_for(self) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, time.time() - self.heartbeat)

    def is_live(self) -> bool:
        """Seen without its lock: a young heartbeat and, on this host, a process that still exists."""
        return self.silent_for() <= STALE_AFTER_S and (self.host != HOST or process_exists(self.pid))

    def gone(self) -> str:
        """Why this claim is stale, in words."""
        return f"claimed by {self.where}, which is gone (last heartbeat {self.silent_for():.0f} s ago)"


class Claimed(CnnbenchError):
    """Another live process holds the run folder's claim."""

    def __init__(self, run_dir: Path, holder: Holder | None) -> None:
        self.where = holder.where if holder else "another process"
        since = f" (since {time.strftime('%H:%M:%S', time.localtime(holder.started))})" if holder else ""
        super().__init__(f"{run_dir} is running in {self.where}{since}; wait for it to finish, "
                         "or stop that process first")


def read_holder(run_dir: Path) -> Holder | None:
    """Who holds the claim on `run_dir`, or held it last; None when there is no claim, or its file
    says nothing yet (its holder is writing it this instant)."""
    path = run_dir / CLAIM_FILE
    try:
        heartbeat = path.lstat().st_mtime
        content = json.loads(read_plain(path))  # never through a link, nor a FIFO that would block
        return Holder(str(content["host"]), int(content["pid"]), float(content["started"]), heartbeat)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[Holder | None]:
    """Hold the claim on `run_dir` for the duration of the `with` block; yields the stale claim
    taken over (None when the folder was free). Raises Claimed when a live process holds it."""
    path = run_dir / CLAIM_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        descriptor, earlier = _take(path, run_dir)
    except OSError as error:  # a read-only folder, a full disk
        raise CnnbenchError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        ours = json.dumps({"host": HOST, "pid": os.getpid(), "started": time.time()}).encode()
        os.pwrite(descriptor, ours, 0)
        os.ftruncate(descriptor, len(ours))  # what a stale claim held beyond ours
        heartbeat = _Heartbeat(descriptor)
        heartbeat.start()
        try:
            yield earlier
        finally:
            heartbeat.stop()
            path.unlink(missing_ok=True)  # before the lock goes: see _take
    finally:
        os.close(descriptor)


def refuse_if_claimed(run_dir: Path) -> None:
    """Raise Claimed when a live process holds `run_dir`; touch nothing there."""
    try:
        descriptor = os.open(run_dir / CLAIM_FILE, os.O_RDWR | NO_FOLLOW)
    except OSError:  # no claim; or a read-only folder, and the run will say what it cannot write
        return
    try:
        holder = read_holder(run_dir)
        if not _lock(descriptor, holder) or _live_elsewhere(holder):
            raise Claimed(run_dir, holder)
    finally:
        os.close(descriptor)


def _take(path: Path, run_dir: Path) -> tuple[int, Holder | None]:
    # The holder deletes the file before it unlocks it: a process that opened it just before
    # could then lock a file no longer in the folder, so it checks, and starts over if so.
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)  # a link: ELOOP, refused
        try:
            holder = read_holder(run_dir)
            if not _lock(descriptor, holder):
                raise Claimed(run_dir, holder)
            if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
                os.close(descriptor)
                continue
            holder = read_holder(run_dir)  # now that no process on this host can change it
            if _live_elsewhere(holder):
                raise Claimed(run_dir, holder)
            return descriptor, holder
        except FileNotFoundError:  # deleted between open and stat: start over
            os.close(descriptor)
        except BaseException:
            os.close(descriptor)
            raise


def _lock(descriptor: int, holder: Holder | None) -> bool:
    """Take the file's lock without waiting: False when another process holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        return not (holder and holder.is_live())  # no locks here: the heartbeat rule alone
    return True


def _live_elsewhere(holder: Holder | None) -> bool:
    # Our lock says nothing about a process on another host when locks do not cross machines;
    # on this host it does: the process that held it is gone.
    return holder is not None and holder.host != HOST and holder.silent_for() <= STALE_AFTER_S


class _Heartbeat(threading.Thread):
    """Touches the claim file every HEARTBEAT_S seconds: its mtime says the holder is at work."""

    def __init__(self, descriptor: int) -> None:
        super().__init__(name="cnnbench-claim-heartbeat", daemon=True)
        self.descriptor = descriptor
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a passing NFS hiccup: the next beat may succeed
                os.utime(self.descriptor)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
