"""What every console command does around its work: ends quietly when the reader of its output
goes away, and skips the interpreter's last garbage collection when it is done."""

import atexit
import functools
import gc
import logging
import os
import sys
from collections.abc import Callable


def console_command(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a console entry point.

    A reader that goes away (`cnnbench --help | head`, `less` quit early) ends the command quietly
    with status 0, as Unix tools end, instead of an error about a failed write; any other write
    failure is still reported by the command. And when the process exits, every object is frozen
    out of the garbage collector first: the interpreter's last collection walked torch's and
    torch._dynamo's objects for about 0.5 s, at the end of every run and every sweep. (Files are
    closed by then: checkpoints and run files are closed when written, and the atexit handlers
    registered before this one, logging's flush among them, still run.)
    """
    @functools.wraps(main)
    def entry_point(*args, **kwargs) -> None:
        atexit.register(gc.freeze)  # runs at exit only (a test calling main() goes on unaffected)
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
