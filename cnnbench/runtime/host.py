"""This machine and its processes, read without importing torch: its name, the CPU cores this
process may use, its memory, and whether a process of it still exists."""

import os
import socket

HOST = socket.gethostname()


def cpu_cores() -> int:
    """The CPU cores this process may run on: the ones its affinity allows (a job's share of a
    cluster node, `taskset`), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (the host's RAM, Apple's unified memory); None
    where the system does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def process_exists(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
