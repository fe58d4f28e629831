"""The d2ft command line: a thin layer over the Python API.

Every command prints a readable table by default and one JSON object with --json.
Units: seconds (s), bytes (B), FLOP; a "keep ratio" is a fraction in (0, 1].
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..errors import one_line
from . import demo, env, machine, report, runs, traces, whatif

EPILOG = """\
exit status: 0 done; 1 a run failed (a rank failed or died: the message names it);
2 a usage error or a problem with the input (one line on stderr says what and how to fix
it); 130 interrupted (Ctrl-C; `d2ft run` says how to resume)."""

INPUT_ERRORS = (ValueError, KeyError, OSError, IndexError, TypeError)
"""What a command raises for a problem with its input: exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line that points at ``--help`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser (``d2ft --help``); building it imports no torch."""
    parser = Parser(prog="d2ft", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"d2ft {env.version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (whatif, traces, runs, machine, demo, report, env):
        module.add_parsers(sub)
    return parser


class _OneLineWarnings(logging.Handler):
    """Library warnings on stderr as ``d2ft COMMAND: warning: ...``, one line each."""

    def __init__(self, command: str) -> None:
        super().__init__(logging.WARNING)
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        print(f"d2ft {self.command}: warning: {one_line(record.getMessage())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``d2ft`` console script (exit status: ``EPILOG``)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = _OneLineWarnings(args.command)
    logging.getLogger().addHandler(handler)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like (an OSError: before INPUT_ERRORS)
        sys.stderr.close()
        return 0
    except INPUT_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"d2ft {args.command}: error: {one_line(message)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"d2ft {args.command}: failed: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"d2ft {args.command}: {interrupted(args)}", file=sys.stderr)
        return 130
    finally:
        logging.getLogger().removeHandler(handler)


def interrupted(args: argparse.Namespace) -> str:
    """What to say on Ctrl-C: for a run, where it stopped and how to resume it."""
    if args.command != "run" or getattr(args, "dry_run", False):
        return "interrupted"
    from .. import rundir

    out = Path(args.out)
    ckpt, _ = rundir.intact_checkpoint(out) if (out / rundir.JOB_FILE).is_file() else (None, [])
    done = len(rundir.read_jsonl(out / rundir.METRICS_FILE))
    if ckpt is None:
        return f"interrupted at step {done}, before any checkpoint; start it again with the same command"
    return f"interrupted at step {done} (checkpointed at step {ckpt['step']}); resume with: d2ft run --resume --out {out}"


if __name__ == "__main__":
    sys.exit(main())
