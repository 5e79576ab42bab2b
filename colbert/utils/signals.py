"""SIGTERM as an exception, so that `finally` blocks and tap sessions run when a job is stopped.

SIGTERM is what `timeout`, Slurm and Kubernetes send. Python's default is to die on the spot, which
leaves a tap manifest saying `running`. While `sigterm_raises()` is active the signal raises
Terminated instead: a SystemExit (so `except Exception` in user code does not swallow it) whose code
is 143, the status a shell reports for a process killed by SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(SystemExit):
    """The process received SIGTERM."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def sigterm_raises() -> Iterator[bool]:
    """Turn SIGTERM into Terminated for the block; yields whether a handler was installed.

    Installed only in the main thread (Python allows no other) and only over the default action: a
    handler the program set itself, or SIG_IGN, is the program's choice and is left as it is. The
    previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover - platforms without SIGTERM
        yield False
        return
    if previous is not signal.SIG_DFL:
        yield False
        return
    raised = []

    def _raise_terminated(signum, frame) -> None:
        # once: a second SIGTERM must not cut short the cleanup the first one started (the manifest
        # being marked failed); the SIGKILL that schedulers send after their grace period still ends it
        if not raised:
            raised.append(signum)
            raise Terminated(signum)

    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous)
