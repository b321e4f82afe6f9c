"""Claims on run folders: one process at a time trains a run folder, whatever launched it and
on whichever machine it runs (copies of one sweep on every GPU, a SLURM job array, hosts sharing
a folder over NFS).

A process claims a run folder before it trains it and holds the claim until it is done:
- RUN/.claim is created exclusively (O_EXCL): of processes that create it at once, on one host or
  on several, exactly one succeeds, whether the file system's locks cross machines or not. It names
  the holder (host, pid, start time, and a random token that tells this claim from any other).
- the holder locks it (flock) the whole time. The kernel releases the lock when the process ends,
  however it ends (kill -9 included): on this host, a claim whose lock can be taken is stale.
- the holder touches it every HEARTBEAT_S seconds. Where locks do not cross machines (some NFS
  set-ups), a claim from another host counts as live while its heartbeat is younger than
  STALE_AFTER_S, and as stale after.
- a stale claim is taken over by renaming it aside (a rename moves a file once: two processes
  that found it stale cannot both move it) and creating a new one exclusively.
- before every write that matters (each checkpoint, metrics.json) the holder checks that the file
  still names it (Claim.check), and stops in one line if another process took the folder over
  meanwhile: where locks do not cross hosts, a holder paused for longer than STALE_AFTER_S looks
  stale to the others.
The holder deletes the file when it lets go, if it is still its own (never a claim another process
took over), so a .claim left behind was left by a process that died. cnnbench-report reads claims
without locking (a lock taken only to look could turn a worker away): a claim is live there while
its heartbeat is young and, on this host, its process exists.
"""

import contextlib
import errno
import fcntl
import json
import os
import secrets
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
    """Who claimed a run folder: host, process, when (time.time()), last heartbeat (the file's
    mtime), and the claim's random token."""

    host: str
    pid: int
    started: float
    heartbeat: float
    token: str = ""

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


class ClaimLost(CnnbenchError):
    """Another process took over the run folder this process was training."""

    def __init__(self, run_dir: Path, holder: Holder | None) -> None:
        self.where = holder.where if holder else "another process"
        taken = f"taken over by {holder.where}" if holder else f"left without its {CLAIM_FILE} (deleted)"
        super().__init__(f"{run_dir} was {taken} while this process trained it (where locks do not cross "
                         f"hosts, a process silent for {STALE_AFTER_S} s looks stale: was this one "
                         "paused?); stopped without writing there again")


def read_holder(run_dir: Path) -> Holder | None:
    """Who holds the claim on `run_dir`, or held it last; None when there is no claim, or its file
    says nothing yet (its holder is writing it this instant)."""
    path = run_dir / CLAIM_FILE
    try:
        heartbeat = path.lstat().st_mtime
        content = json.loads(read_plain(path))  # never through a link, nor a FIFO that would block
        return Holder(str(content["host"]), int(content["pid"]), float(content["started"]), heartbeat,
                      str(content.get("token", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


@dataclass
class Claim:
    """This process's claim on a run folder, while it holds it (what `claim` yields)."""

    run_dir: Path
    token: str
    stale: Holder | None = None  # the stale claim taken over, if any

    def is_ours(self, holder: Holder | None) -> bool:
        """Whether `holder` is this claim."""
        return holder is not None and (holder.host, holder.pid, holder.token) == (HOST, os.getpid(),
                                                                                   self.token)

    def check(self) -> None:
        """Raise ClaimLost unless the folder's claim is still this one: called before every write that
        matters (each checkpoint, metrics.json); it costs one read of a small file."""
        holder = read_holder(self.run_dir)
        if not self.is_ours(holder):
            raise ClaimLost(self.run_dir, holder)


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[Claim]:
    """Hold the claim on `run_dir` for the duration of the `with` block; yields it (its `stale`: the
    stale claim taken over, None when the folder was free). Raises Claimed when a live process
    holds it."""
    path = run_dir / CLAIM_FILE
    ours = Claim(run_dir, secrets.token_hex(8))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        descriptor, ours.stale = _take(path, run_dir, ours.token)
    except OSError as error:  # a read-only folder, a full disk, a link at its name
        raise CnnbenchError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        heartbeat = _Heartbeat(descriptor)
        heartbeat.start()
        try:
            yield ours
        finally:
            heartbeat.stop()
            if ours.is_ours(read_holder(run_dir)):  # never a claim another process took over
                path.unlink(missing_ok=True)  # before the lock goes: see _set_aside_if_stale
    finally:
        os.close(descriptor)


def refuse_if_claimed(run_dir: Path) -> None:
    """Raise Claimed when a live process holds `run_dir`; touch nothing there."""
    try:
        descriptor = os.open(run_dir / CLAIM_FILE, os.O_RDWR | NO_FOLLOW)
    except OSError:  # no claim; or a read-only folder, and the run will say what it cannot write
        return
    try:
        locked = _try_lock(descriptor)
        holder = read_holder(run_dir)
        if _live(locked, holder, descriptor):
            raise Claimed(run_dir, holder)
    finally:
        os.close(descriptor)


def _take(path: Path, run_dir: Path, token: str) -> tuple[int, Holder | None]:
    # Create the claim file exclusively, after moving a stale one aside: (its descriptor, locked and
    # naming this process; the stale holder taken over).
    content = json.dumps({"host": HOST, "pid": os.getpid(), "started": time.time(), "token": token}).encode()
    taken_over = None
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o644)
        except FileExistsError:
            taken_over = _set_aside_if_stale(path, run_dir) or taken_over  # or Claimed: live
            continue
        try:
            # a process looking at the new, empty file may hold its lock a moment: wait for it
            with contextlib.suppress(OSError):  # no locks here: the file's name decides alone
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.write(descriptor, content)
            os.fsync(descriptor)  # seen whole by other hosts before this process trains
        except BaseException:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        return descriptor, taken_over


def _set_aside_if_stale(path: Path, run_dir: Path) -> Holder | None:
    # The claim at `path` is live: Claimed. Stale: renamed aside, then deleted, and its holder
    # returned. None when the file changed meanwhile (let go, or taken over): look again.
    try:
        descriptor = os.open(path, os.O_RDWR | NO_FOLLOW)
    except FileNotFoundError:
        return None
    try:
        locked = _try_lock(descriptor)
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            return None  # the holder deletes its file before its lock goes: this one is gone
        holder = read_holder(run_dir)  # now that no process on this host can change it
        if _live(locked, holder, descriptor):
            raise Claimed(run_dir, holder)
        aside = path.with_name(f"{CLAIM_FILE}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.stale")
        os.rename(path, aside)
        if os.stat(aside).st_ino != os.fstat(descriptor).st_ino:
            # another process took the stale claim over between the look and the rename: its new
            # claim was moved, so put it back (unless yet another is there already) and look again
            with contextlib.suppress(OSError):
                os.link(aside, path)
            os.unlink(aside)
            return None
        os.unlink(aside)
        return holder
    except FileNotFoundError:  # deleted or renamed by another process meanwhile
        return None
    finally:
        os.close(descriptor)


def _try_lock(descriptor: int) -> bool | None:
    """Take the file's lock without waiting: True, False when another process holds it, None where
    the file system has no locks."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        return None
    return True


def _live(locked: bool | None, holder: Holder | None, descriptor: int) -> bool:
    """Whether the claim open at `descriptor`, whose lock was tried (`locked`), is live."""
    if locked is False:
        return True  # its holder holds the lock
    if holder is None:  # nothing in it yet: its creator is writing it now, unless it died doing so
        return time.time() - os.fstat(descriptor).st_mtime <= STALE_AFTER_S
    if locked is None:
        return holder.is_live()  # no locks here: the heartbeat rule alone
    # Our lock says nothing about a process on another host when locks do not cross machines;
    # on this host it does: the process that held it is gone.
    return holder.host != HOST and holder.silent_for() <= STALE_AFTER_S


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
