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
    args = build_parser().parse_args(argv)
    _signals.install()
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
        return command.command(args)
    except NstError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except _signals.Interrupted as interrupt:
        print(f"{PROG}: interrupted ({interrupt}) before anything was written", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:  # a signal raised by code that is not ours (e.g. a subprocess)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["main"]
