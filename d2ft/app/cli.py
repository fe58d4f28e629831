"""The d2ft command line: a thin layer over the Python API.

Every command prints a readable table by default and one JSON object with --json.
Units: seconds (s), bytes (B), FLOP; a "keep ratio" is a fraction in (0, 1].
Exit codes: 0 done, 2 a usage error or a problem with the input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import demo, report, runs, whatif

ERRORS = (ValueError, KeyError, OSError, IndexError, RuntimeError)
"""What a command may raise for a problem with its input or a failed run: answered in one line."""


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser (``d2ft --help``); building it imports no torch."""
    parser = argparse.ArgumentParser(prog="d2ft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (whatif, runs, demo, report):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``d2ft`` console script. Errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"d2ft {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
