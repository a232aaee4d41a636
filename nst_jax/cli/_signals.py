"""SIGINT, SIGTERM and SIGHUP at any moment: recorded by the handler, acted on at safe points.

Raising from a signal handler lands the exception wherever Python happens to be, including
inside a native call (XLA compiling: a segmentation fault was seen), and it can fire twice.
So the handler only records the first signal; the commands call :func:`check` at safe points
(between compiled chunks, after compilation returns, between start-up steps, before and after
writing files), which raises :class:`Interrupted` there; the command then writes what it
promised (the best image so far, a checkpoint) and exits with 128 + the signal number. A second
signal means "now": the handler removes the temporary files of writes in progress and ends the
process at once with the same exit code.
"""

from __future__ import annotations

import os
import signal
import sys

from .. import _files

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))
_received: list[int] = []


class Interrupted(Exception):
    """A signal arrived; raised at a safe point by :func:`check`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handle(signum, frame) -> None:
    if _received:
        # The second signal: stop now. Temporary files of unfinished writes go first, so no
        # half-written file is left; completed files are untouched.
        for path in list(_files.PENDING):
            try:
                os.unlink(path)
            except OSError:
                pass
        sys.stderr.write(f"\nnst-jax: {signal.Signals(signum).name} again: stopped at once\n")
        sys.stderr.flush()
        os._exit(128 + _received[0])
    _received.append(signum)


def install() -> None:
    """Record SIGINT, SIGTERM and SIGHUP instead of acting on them immediately."""
    _received.clear()
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def requested() -> int | None:
    """The signal received so far, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise :class:`Interrupted` if a signal has arrived (call at safe points)."""
    if _received:
        raise Interrupted(_received[0])
