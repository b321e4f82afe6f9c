"""A reader that goes away (`cnnbench --help | head`, `less` quit early) ends a command quietly,
as Unix tools end; a real write failure is still said (issue #17)."""

import subprocess
import sys

import pytest
from test_cli import assert_one_line_error

COMMANDS = {  # each prints to stdout before anything else can go wrong
    "cnnbench": ["-m", "cnnbench", "--help"],
    "cnnbench-summary": ["-m", "cnnbench.cli.summary", "model=lenet"],
    "cnnbench-report": ["-m", "cnnbench.cli.report", "--help"],
    "cnnbench-eval": ["-m", "cnnbench.cli.evaluate", "--help"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_closed_stdout_ends_the_command_quietly(tmp_path, command):
    process = subprocess.Popen([sys.executable, *COMMANDS[command]], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader is gone before the command writes its first line
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 0
    assert stderr == ""


def test_a_full_disk_on_stdout_is_still_an_error(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "cnnbench", "--help"], cwd=tmp_path, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert_one_line_error(result, "cannot write", "No space left on device")
