"""The exceptions that reach the user as a one-line message instead of a traceback."""


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
