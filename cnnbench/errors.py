"""The exceptions that reach the user as a one-line message instead of a traceback, and that line."""

import sys


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
        self.in_sweep = False  # set by the sweep job it stopped: the whole sweep stops
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def say(message: str, tool: str = "cnnbench") -> None:
    """An error in the one shape every command uses: `tool: error: message`, one line on stderr."""
    print(f"{tool}: error: {message}", file=sys.stderr, flush=True)


class SweepFailed(BaseException):
    """Some runs of a sweep failed (each was reported when it failed, and counted in the sweep's
    summary): the `cnnbench` command exits with status 1.

    Raised by the callback that ends a sweep, and a BaseException for that reason: Hydra turns
    an Exception of a callback into a warning and goes on as if nothing had happened.
    """

    def __init__(self, failed: int, total: int) -> None:
        super().__init__(f"{failed} of {total} runs failed")
        self.failed, self.total = failed, total
