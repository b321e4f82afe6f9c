"""What every console command shares: the one way to fail (one line, exit 2), the `key=value`
arguments of the tools, ending quietly when the reader of the output goes away, and skipping the
interpreter's last garbage collection."""

import atexit
import contextlib
import functools
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from cnnbench.errors import CnnbenchError, say


def fail(message: str, tool: str = "cnnbench") -> NoReturn:
    """Say what is wrong in one line and exit with status 2 (bad input), as argparse does."""
    say(message, tool)
    sys.exit(2)


def _freeze_at_exit() -> None:
    gc.freeze()


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
        # once per process, however often an entry point is called (tests call main() many times)
        atexit.unregister(_freeze_at_exit)
        atexit.register(_freeze_at_exit)
        # A log line into the closed pipe is dropped instead of printing "--- Logging error ---"
        # to stderr: a run whose output nobody reads any more still finishes and saves its files.
        logging.raiseExceptions = False
        # A file name that is not UTF-8 (os.listdir gives its bytes as surrogates) is printed as its
        # own bytes, as `ls` prints it to a pipe, where a strict locale would fail the print.
        if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")
        try:
            main(*args, **kwargs)
        except BrokenPipeError:
            exit_on_closed_pipe()
    return entry_point


def lossless_log_files() -> None:
    """Make the log files Hydra opened for this job (run.log) write a file name that is not UTF-8
    as its own bytes: a strict file handler drops the whole line (a skipped image's warning)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and hasattr(handler.stream, "reconfigure"):
            handler.stream.reconfigure(errors="surrogateescape")


def exit_on_closed_pipe() -> NoReturn:
    """Exit with status 0 after stdout's reader went away, without another word."""
    # Python flushes stdout once more at exit and would complain again: point it nowhere first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


@contextlib.contextmanager
def hydra_command_line(arguments: list[str]) -> Iterator[None]:
    """sys.argv as `arguments` while Hydra's main reads it (Hydra takes its arguments from nowhere
    else), and as it was again after."""
    saved = sys.argv
    sys.argv = [saved[0], *arguments]
    try:
        yield
    finally:
        sys.argv = saved


def run_tool(tool: str, body: Callable[[list[str]], int | None], usage: str) -> NoReturn:
    """Run a tool's body on the command line's arguments: `-h` prints `usage`; a CnnbenchError
    becomes one line, exit 2; else the body's status."""
    arguments = sys.argv[1:]
    if any(argument in ("-h", "--help") for argument in arguments):
        print(usage)
        sys.exit(0)
    try:
        status = body(arguments)
    except CnnbenchError as error:
        fail(str(error), tool)
    sys.exit(status or 0)


def parse_arguments(arguments: list[str], options: dict[str, Any], overrides: bool = False
                    ) -> tuple[dict[str, Any], list[str]]:
    """Split `key=value` arguments into the tool's options (with defaults) and config overrides.

    `options` maps each option to its default; a default of `...` marks it required. Any other
    key is a config override when `overrides` is true, and an error when not.
    """
    values, rest = dict(options), []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals or not key:
            raise CnnbenchError(f"{argument!r} is not a key=value argument, e.g. ckpt=outputs/RUN/best.pt")
        if key in options:
            values[key] = value
        elif overrides:
            rest.append(argument)
        else:
            raise CnnbenchError(f"unknown argument {key!r}: use {', '.join(f'{k}=' for k in options)}")
    missing = [key for key, value in values.items() if value is ...]
    if missing:
        raise CnnbenchError(f"{missing[0]}=... is required; --help shows every argument")
    return values, rest


def positive_int(key: str, value: Any) -> int:
    """An integer option >= 1, or a one-line error naming it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise CnnbenchError(f"{key}={value} is not an integer >= 1")
    return number


def os_error(error: BaseException | None) -> OSError | None:
    """The OSError that `error` is, or was raised while handling, if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error
