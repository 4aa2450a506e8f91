"""Ctrl-C during training takes effect between batches, never inside a checkpoint write or a plot.

A KeyboardInterrupt raised wherever the signal lands can surface inside third-party code
(pickling, PNG encoding, a lazy import) as some other error; deferring it to a point the
loop chooses keeps the exit code and the written files predictable. A second Ctrl-C
gets the handler that was there before the run (at once, by default). The handler is
installed for the run only; whatever was there before (Python's default, SIG_IGN under
nohup, a caller's own) is given back afterwards.
"""
from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = signal.SIG_DFL

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            previous = signal.signal(signal.SIGINT, self._request)
            # None: the handler was not set from Python; SIG_DFL is what the process had.
            self._previous = signal.SIG_DFL if previous is None else previous
            self._installed = True
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def check(self) -> None:
        """Raise KeyboardInterrupt here if Ctrl-C was pressed since the last check."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
