"""The ``deepfake-xai`` command line: one module per sub-command, each thin over the library.

A command module defines ``HELP``, ``configure(parser)`` and ``run(args) -> int``; it imports
anything heavy inside ``run`` so that ``deepfake-xai --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__

COMMANDS = ("list", "synthesize", "audit", "train", "evaluate", "analyze", "demo", "plugins")


def _command_module(name: str):
    return importlib.import_module(f".{name}_cmd", __name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-xai",
        description="Detect AI-generated faces and explain the decision.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = _command_module(name)
        except ModuleNotFoundError:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as exc:
        return _usage_error(args.command, exc)
    except RuntimeError as exc:
        from ..detectors import PretrainedWeightsUnavailable

        if not isinstance(exc, PretrainedWeightsUnavailable):
            raise
        return _usage_error(args.command, exc)


def _usage_error(command: str, exc: BaseException) -> int:
    print(f"deepfake-xai {command}: error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
