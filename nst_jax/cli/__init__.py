"""``nst-jax`` command line: one module per subcommand, each parse -> library call -> report.

``main`` parses without importing JAX (``--help`` answers at once), installs the signal handling
of :mod:`._signals`, and turns user errors into one ``nst-jax: error: ...`` line and exit 1.

When this package is imported to start the program (the ``nst-jax`` script, ``python -m
nst_jax.cli``), its first lines already hold SIGINT, SIGTERM and SIGHUP: until ``main`` installs
the real handling (imports and the parser take ~0.05 s), Python's default actions would apply
(a KeyboardInterrupt traceback, or death by SIGTERM with no message), and a signal in those
moments must end as cleanly as a later one. What remains before these lines is Python's own
start-up.
"""

from __future__ import annotations

import signal
import sys

#: Signals that came before ``main`` installed the real handling (only the first one counts).
EARLY: list[int] = []


def _hold(signum, frame) -> None:
    EARLY.append(signum)


def _starts_the_program() -> bool:
    """Whether this import is the start of ``nst-jax`` (not a library caller's import)."""
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv:
        return argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["nst_jax.cli"]
    return bool(sys.argv) and sys.argv[0].rsplit("/", 1)[-1].startswith("nst-jax")


if _starts_the_program():
    for _name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, _name):
            signal.signal(getattr(signal, _name), _hold)

from collections.abc import Sequence  # noqa: E402 (after the handlers, on purpose)

from .._errors import NstError  # noqa: E402
from . import _signals  # noqa: E402
from ._parser import PROG, build_parser  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nst-jax``; returns the exit code."""
    # First of all: a signal from here on is recorded, never a KeyboardInterrupt traceback;
    # one held since the start is acted on by the first check below.
    _signals.install(early=EARLY[:1])
    args = build_parser().parse_args(argv)
    try:
        _signals.check()
        if args.command == "weights":
            from . import _weights as command
        else:
            from ._common import apply_preset

            apply_preset(args)
            if args.command == "stylize":
                from . import _stylize as command
            elif args.command == "sweep":
                from . import _sweep as command
            else:
                from . import _frames as command
        code = command.command(args)
    except NstError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        code = 1
    except _signals.Interrupted as interrupt:
        print(f"{PROG}: interrupted ({interrupt}) before anything was written", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:  # a signal raised by code that is not ours (e.g. a subprocess)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    signum = _signals.requested()
    if signum is not None and code != 128 + signum:
        # The signal came after the last safe point (while the final files were written):
        # the command finished, but the caller (a shell loop) must still learn of the signal.
        interrupt = _signals.Interrupted(signum)
        print(f"{PROG}: interrupted ({interrupt}) as the command ended; "
              + ("its outputs were all written" if code == 0 else "see the error above"),
              file=sys.stderr)
        return interrupt.exit_code
    return code


__all__ = ["main"]
