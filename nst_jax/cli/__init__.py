"""``nst-jax`` command line: one module per subcommand, each parse -> library call -> report.

``main`` parses without importing JAX (``--help`` answers at once), installs the signal handling
of :mod:`._signals`, and turns user errors into one ``nst-jax: error: ...`` line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._errors import NstError
from . import _signals
from ._parser import PROG, build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nst-jax``; returns the exit code."""
    # First of all: a signal from here on is recorded, never a KeyboardInterrupt traceback.
    _signals.install()
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
