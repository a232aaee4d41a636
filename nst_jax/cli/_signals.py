"""SIGINT, SIGTERM and SIGHUP at any moment: recorded by the handler, acted on at safe points.

Raising from a signal handler lands the exception wherever Python happens to be, including
inside a native call (XLA compiling: a segmentation fault was seen), and it can fire twice.
So the handler only records the first signal; the commands call :func:`check` at safe points
(between compiled chunks, after compilation returns, between start-up steps, before and after
writing files), which raises :class:`Interrupted` there; the command then writes what it
promised (the best image so far, a checkpoint) and exits with 128 + the signal number. The
first signal also stops the helper processes in ``nst_jax._files.CHILDREN`` (pip fetching a
wheel), so a download does not run on to its end.

A second signal means "now": the temporary files of writes in progress are removed and the
process ends at once with the same exit code. Python runs a handler only when the main thread
executes Python code, so during a long native call (XLA compiling a large graph, a wait for the
device) the handler would run only when that call returns. So the C-level handler's wake-up
byte (``signal.set_wakeup_fd``, one byte per signal, written even then) is read by a small
thread, which counts the signals and ends the process at the second one. Once the process
exits (atexit), the signals are ignored: Python would restore their default actions for the
rest of the teardown, and a late signal then killed a process that had finished its work.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading

from .. import _files

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))
_received: list[int] = []  # the first signal
_count = [0]  # signals seen by the wake-up thread since install()
_exiting = threading.Lock()
_installed = {"watcher": False, "atexit": False}  # what install() did once per process


class Interrupted(Exception):
    """A signal arrived; raised at a safe point by :func:`check`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _record(signum: int) -> None:
    """The first signal: remember it, and stop the helper processes (pip) at once."""
    if not _received:
        _received.append(signum)
        for process in list(_files.CHILDREN):
            try:
                process.terminate()
            except OSError:
                pass


def _force_exit(signum: int) -> None:
    """The second signal: remove the temporary files of unfinished writes (completed files are
    untouched) and end the process now, whatever the main thread is doing."""
    if not _exiting.acquire(blocking=False):
        return  # the other thread is already ending the process
    for process in list(_files.CHILDREN):
        try:
            process.kill()
        except OSError:
            pass
    for path in list(_files.PENDING):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass
    try:  # os.write: sys.stderr's lock may be held by the interrupted main thread
        os.write(2, f"\nnst-jax: {signal.Signals(signum).name} again: stopped at once\n".encode())
    except OSError:
        pass
    os._exit(128 + (_received[0] if _received else signum))


def _handle(signum, frame) -> None:
    if _installed["watcher"]:
        _record(signum)  # the wake-up thread counts the signals (each one exactly once)
    elif _received:
        _force_exit(signum)
    else:
        _record(signum)


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            # Only while our handler is installed: an in-process caller (a test) that restored
            # its own handlers afterwards gets its signals handled by those alone.
            if signum not in SIGNALS or signal.getsignal(signum) is not _handle:
                continue
            _count[0] += 1
            if _count[0] == 1:
                _record(signum)
            else:
                _force_exit(signum)


def _start_watcher() -> None:
    """Route the wake-up bytes to :func:`_watch` (once per process; skipped if the program
    already uses a wake-up fd, e.g. an asyncio loop, which then keeps it)."""
    if _installed["watcher"]:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        os.close(read_fd)
        os.close(write_fd)
        return
    if previous != -1:
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return
    _installed["watcher"] = True
    threading.Thread(target=_watch, args=(read_fd,), name="nst-jax-signals", daemon=True).start()


def _ignore_at_exit() -> None:
    """At interpreter exit (atexit), ignore the signals from here on. Python restores their
    default actions after the atexit functions have run, so a signal during the rest of the
    teardown (JAX's takes about 0.5 s) would kill a process that has already done its work and
    said so (seen: exit -2 for a second Ctrl-C). An in-process caller that restored its own
    handlers is left alone."""
    for signum in SIGNALS:
        if signal.getsignal(signum) is _handle:
            signal.signal(signum, signal.SIG_IGN)


def install(early: list[int] = ()) -> None:
    """Record SIGINT, SIGTERM and SIGHUP instead of acting on them immediately; ``early``: a
    signal received before (held by ``nst_jax.cli``'s first lines), recorded as the first."""
    _received.clear()
    _received.extend(early[:1])
    _count[0] = len(_received)
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    if not _installed["atexit"]:
        atexit.register(_ignore_at_exit)
        _installed["atexit"] = True
    _start_watcher()


def requested() -> int | None:
    """The signal received so far, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise :class:`Interrupted` if a signal has arrived (call at safe points)."""
    if _received:
        raise Interrupted(_received[0])
