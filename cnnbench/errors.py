"""The exceptions that reach the user as a one-line message instead of a traceback, and how a
closed output pipe ends a command."""

import functools
import logging
import os
import sys
from collections.abc import Callable


class CnnbenchError(Exception):
    """A problem the user can fix: bad config value, missing data, unusable checkpoint."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped a run, after it saved its progress.

    A BaseException, as KeyboardInterrupt is: a sweep stops here instead of going on to its next
    job (which catches every Exception so that one job's failure does not stop the others).
    """

    def __init__(self, signal_name: str, signal_number: int, where: str, run_dir: str) -> None:
        super().__init__(f"{signal_name}: stopped {where}; saved {run_dir}/last.pt")
        self.run_dir = run_dir
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def quiet_on_closed_pipe(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a console entry point so that a reader that goes away (`cnnbench --help | head`,
    `less` quit early) ends the command quietly with status 0, as Unix tools end, instead of an
    error about a failed write. Any other write failure is still reported by the command."""
    @functools.wraps(main)
    def entry_point(*args, **kwargs) -> None:
        # A log line into the closed pipe is dropped instead of printing "--- Logging error ---"
        # to stderr: a run whose output nobody reads any more still finishes and saves its files.
        logging.raiseExceptions = False
        try:
            main(*args, **kwargs)
        except BrokenPipeError:
            exit_on_closed_pipe()
    return entry_point


def exit_on_closed_pipe() -> None:
    """Exit with status 0 after stdout's reader went away, without another word."""
    # Python flushes stdout once more at exit and would complain again: point it nowhere first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
