"""`magicprop ...`: one subcommand per module in `magicprop.commands`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`. Errors that the user can fix
are `MagicPropError`s: we print their one line and exit 2 (usage) or 1 (runtime); `--debug` shows the traceback instead.
An OSError nobody foresaw (the filesystem refusing something) is printed the same way, as one line with exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from .allocator import return_freed_memory
from .errors import MagicPropError

# Order is the order of `magicprop --help`.
COMMANDS = (
    "demo",
    "edit",
    "propagate",
    "keyframes",
    "batch",
    "info",
    "synth",
    "depth",
    "eval",
    "train",
    "precompute",
    "ui",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other usage error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="magicprop",
        description="Edit one frame of a video and propagate the edit along the video's motion (MagicProp).",
        epilog="Run `magicprop COMMAND --help` for each command's options and an example.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"magicprop {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"magicprop.commands.{name.replace('-', '_')}")
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    return_freed_memory()  # a run's freed frames go back to the system (`allocator`)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Libraries we build on warn loudly about things users cannot act on; keep their errors, drop their chatter.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args._run(args) or 0)
    except MagicPropError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"magicprop {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"magicprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the filesystem refused something we did not foresee: still one line, not a traceback
        if args.debug:
            traceback.print_exc()
        where = f": {str(exc.filename)[:200]}" if exc.filename else ""
        print(f"magicprop {args.command}: error: {exc.strerror or exc}{where} (--debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
