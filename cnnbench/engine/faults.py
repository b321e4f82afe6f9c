"""When a run is stopped or goes wrong while it trains: stop signals and non-finite losses.

The training loop asks `StopSignals.stop_now` after every step and hands every loss to a
`LossWatch`; the rest (saving last.pt, the messages) is in engine/train.py.
"""

import logging
import signal
import sys
import threading
from types import FrameType

import torch
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.runtime import distributed

log = logging.getLogger("cnnbench")


class StopSignals:
    """Catch SIGINT (Ctrl-C) and SIGTERM (what SLURM, Kubernetes and `kill` send before they kill)
    while a run trains: the loop finishes its step, saves last.pt and stops.

    A second signal gets the handler that was there before (Ctrl-C: KeyboardInterrupt), which
    stops at once without saving. Use as a context manager; it restores the handlers on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python allows no other thread
            for number in self.SIGNALS:
                # A process started to ignore it (a background job of a script, nohup) stays immune.
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(number)
        signal.signal(number, self._previous[number] or signal.SIG_DFL)
        print(f"\ncnnbench: {self.received.name} received: stopping after this step and saving last.pt "
              "(send it again to stop at once, without saving)", file=sys.stderr, flush=True)

    def stop_now(self, step: int, every: int, device: torch.device) -> bool:
        """Whether to stop after optimizer step `step`.

        Distributed, every process must stop after the same step (or the next gradient
        all-reduce waits forever): they compare notes every `every` steps.
        """
        if not distributed.launched_by_torchrun():
            return self.received is not None
        if step % every:
            return False
        asked = torch.tensor(float(self.received is not None), device=device)
        stop = bool(distributed.sum_across(asked).item())
        if stop and self.received is None:
            self.received = signal.SIGTERM  # another process got it
        return stop


class DivergedError(CnnbenchError):
    """The training loss became NaN or infinite."""


# on_nan=skip_batch gives up after this many non-finite losses in a row: by then the weights
# themselves are NaN or infinite, and every later batch would be skipped too.
MAX_SKIPPED_IN_A_ROW = 10

HINT = ("checkpoints saved before it stay as they were; try a lower optimizer.lr, warmup_epochs=1, "
        "grad_clip=1.0 or precision=fp32")


class LossWatch:
    """Notices NaN and infinite training losses, as the `on_nan` key asks.

    stop: the step of the first bad loss is kept on the device and read only when the loop
    reads the device anyway (progress bar, checkpoint, epoch end), so watching costs no extra
    wait; the run stops before any weights a NaN has reached are saved.
    skip_batch: each loss is read at once (one wait for the device per step) and a bad batch
    is left out: no backward pass, no optimizer or scheduler step.
    """

    def __init__(self, on_nan: str, epoch: int, device: torch.device) -> None:
        self.skip = on_nan == "skip_batch"
        self.epoch = epoch
        self.first_bad = torch.full((), -1, device=device)  # -1: none yet
        self.in_a_row = 0

    def skip_batch(self, loss: torch.Tensor, step: int) -> bool:
        """Record `loss` of step `step`; True if the batch must be skipped (on_nan=skip_batch)."""
        finite = torch.isfinite(loss.detach())
        if not self.skip:
            self.first_bad = torch.where(finite | (self.first_bad >= 0), self.first_bad, step)
            return False
        # Distributed, every process skips when any one's loss is bad: their steps must match.
        if distributed.sum_across((~finite).float()).item() == 0:
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise DivergedError(f"the training loss was NaN or infinite {self.in_a_row} batches in a row "
                                f"(epoch {self.epoch + 1}, up to step {step + 1}): the weights diverged; {HINT}")
        log.warning("epoch %d, step %d: loss is NaN or infinite; batch skipped (on_nan=skip_batch)",
                    self.epoch + 1, step + 1)
        return True

    def check(self) -> None:
        """Stop the run if any loss so far was NaN or infinite (on_nan=stop); waits for the device."""
        first_bad = int(distributed.max_across(self.first_bad).item())
        if first_bad >= 0:
            raise DivergedError(f"the training loss became NaN or infinite at epoch {self.epoch + 1}, "
                                f"step {first_bad + 1}; {HINT}; or on_nan=skip_batch to leave such batches out")


def check_weights(model: nn.Module, epoch: int, step: int) -> None:
    """Stop the run if any weight (or BatchNorm statistic) is NaN or infinite: one isfinite per
    tensor and one wait for the device. `epoch` epochs done and `step` steps into the next."""
    tensors = [*model.parameters(), *(buffer for buffer in model.buffers() if buffer.is_floating_point())]
    if not tensors or torch.stack([tensor.detach().isfinite().all() for tensor in tensors]).all():
        return
    where = f"at epoch {epoch + 1}, step {step}" if step else f"in epoch {epoch}"
    raise DivergedError(f"the weights became NaN or infinite {where}, with every loss read finite; {HINT}")
