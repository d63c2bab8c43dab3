"""Graceful stop: a signal ends the run at the next safe point instead of mid-update.

SIGTERM (``scancel``, SLURM preemption or time limit, ``kill``), SIGINT (Ctrl-C) and
SIGUSR1 (what ``sbatch --signal=USR1@90`` sends before a time limit) only set a flag;
the training loop checks it between updates, checkpoints and stops. A second signal
stops at once, without a checkpoint, as SIGKILL would (``resume=`` handles that too).

Inside a submitit job (``hydra/launcher=slurm`` or ``slurm_local``) submitit's own
preemption signal (SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) is
caught the same way, and after the checkpoint ``requeue`` hands over to submitit's
handler, which resubmits the job (its checkpointing hook) and exits.
"""

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_STOPPED_AT_ONCE = 128 + signal.SIGTERM


def submitit_signal() -> signal.Signals | None:
    """submitit's preemption signal when this process is a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


class GracefulStop:
    """While entered, the stop signals set ``received`` rather than ending the process."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.requeue_signal = submitit_signal()
        self._signals = STOP_SIGNALS + ((self.requeue_signal,) if self.requeue_signal else ())
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            print(
                f"esper.simic: second signal ({signal.Signals(signum).name}): stopping at "
                "once without a checkpoint",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(EXIT_STOPPED_AT_ONCE)
        self.received = signal.Signals(signum)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requeue(self) -> None:
        """In a submitit job, let submitit checkpoint (resubmit) and requeue it; it exits."""
        if self.requeue_signal is None:
            return
        handler = self._previous.get(self.requeue_signal)
        if callable(handler):
            handler(self.requeue_signal, None)
