"""Run the `cnnbench` command with a fault injected at an exact point (for tests/test_faults.py).

    python tests/fault_injection.py FAULT AT [cnnbench arguments ...]

FAULT  kill: SIGKILL (nothing can catch it), term: SIGTERM, int: SIGINT, int-twice: two SIGINTs,
       error: a RuntimeError raised there (a crash inside the run: out of memory, a bug),
       take-claim: another host's process takes the run folder's claim over (hydra.run.dir=), as
       where locks do not cross hosts and this process looked stale to it
AT     train-batch:N  when the N-th training batch is handed out (counted from the start of this
                      process, the batch shown in TensorBoard before epoch 1 included)
       val-batch:N    when the N-th validation batch is handed out
       save:NAME:N    halfway through the N-th write of run file NAME (last.pt, best.pt, ...)

The process signals itself, so the fault lands at the same point on every run, however fast
the machine is. Nothing here changes what cnnbench does until the fault.

Tests that train in their own process use `faults_at(FAULT, AT)` as a context manager instead
(term and error only: the other faults would stop the test process itself).
"""

import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from cnnbench import files
from cnnbench.cli import train as run
from cnnbench.data.loader import EpochDataLoader
from cnnbench.data.memory import MemoryLoader

SIGNALS = {"kill": [signal.SIGKILL], "term": [signal.SIGTERM], "int": [signal.SIGINT],
           "int-twice": [signal.SIGINT, signal.SIGINT], "error": [], "take-claim": []}
# Whose claim take-claim leaves in the run folder.
TAKER = {"host": "elsewhere", "pid": 4242, "token": "theirs"}


def take_claim(run_dir: Path) -> None:
    """Replace the run folder's claim with another host's, as its takeover does (a new file)."""
    new = run_dir / ".claim.taking-over"
    new.write_text(json.dumps({**TAKER, "started": time.time()}))
    os.replace(new, run_dir / ".claim")


class InjectedFailure(RuntimeError):
    """What the `error` fault raises."""


@contextlib.contextmanager
def faults_at(fault: str, at: str, run_dir: Path | None = None) -> Iterator[None]:
    """Inject `fault` at point `at` (see the module docstring) into cnnbench in this process (the
    run folder `run_dir`: for take-claim)."""
    place, _, count = at.rpartition(":")
    count = int(count)
    seen: Counter[str] = Counter()

    def strike() -> None:
        if fault == "error":
            raise InjectedFailure(f"injected failure at {at}")
        if fault == "take-claim":
            take_claim(run_dir)
            return
        first, *more = SIGNALS[fault]
        handler = signal.getsignal(first)
        os.kill(os.getpid(), first)
        for number in more:
            # Signals of one kind do not queue: sent before the first one's handler has run, a
            # second would merge with it. That handler puts the previous one back; wait for that.
            while signal.getsignal(number) == handler:
                time.sleep(0.001)
            os.kill(os.getpid(), number)

    def counting(iterate):
        @functools.wraps(iterate)
        def wrapper(loader):
            training = loader.shuffle if isinstance(loader, MemoryLoader) else loader.sampler.shuffle
            kind = "train-batch" if training else "val-batch"
            for batch in iterate(loader):
                seen[kind] += 1
                if kind == place and seen[kind] == count:
                    strike()
                yield batch
        return wrapper

    real_write = files.write_whole

    def atomic_write(path, write):
        place_here = f"save:{path.name}"
        seen[place_here] += 1
        if place == place_here and seen[place] == count:
            def write_half(file) -> None:
                file.write(b"PK\x03\x04 half a checkpoint")
                file.flush()
                strike()
            write = write_half
        return real_write(path, write)

    patched = [(MemoryLoader, "__iter__", counting(MemoryLoader.__iter__)),
               (EpochDataLoader, "__iter__", counting(EpochDataLoader.__iter__)),
               (files, "write_whole", atomic_write)]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    for owner, name, replacement in patched:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def main() -> None:
    fault, at, *arguments = sys.argv[1:]
    if fault not in SIGNALS:
        sys.exit(f"unknown fault {fault!r}: use one of {', '.join(SIGNALS)}")
    sys.argv = ["cnnbench", *arguments]
    run_dir = next((Path(argument.split("=", 1)[1]) for argument in arguments
                    if argument.startswith("hydra.run.dir=")), None)
    with faults_at(fault, at, run_dir):
        run.main()


if __name__ == "__main__":
    main()
