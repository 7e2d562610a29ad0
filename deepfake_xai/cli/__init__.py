"""The ``deepfake-xai`` command line: one module per sub-command, each thin over the library.

A command module defines ``HELP``, ``configure(parser)`` and ``run(args) -> int``; it imports
anything heavy inside ``run`` so that ``deepfake-xai --help`` stays fast.

Options every command takes, before or after its name: ``-v/--verbose`` and ``--threads N``
(torch's CPU threads; default: the CPUs this process may use, see :mod:`deepfake_xai.runtime`).

Exit status: 0 on success; 1 when the command ran and failed (a file could not be read or
written, a checkpoint or an image is broken, a model failed: one line names what and why, ``-v``
adds the traceback); 2 for usage errors (an unknown option, detector or device, an invalid value,
a path that does not exist); 130 when interrupted. ``analyze`` also exits 1 when some images
could not be read (they are listed in its ``errors.csv``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence

from .. import __version__

COMMANDS = (
    "list",
    "synthesize",
    "audit",
    "train",
    "calibrate",
    "evaluate",
    "analyze",
    "demo",
    "plugins",
)
USAGE_EXIT, FAILURE_EXIT, INTERRUPTED_EXIT = 2, 1, 130
# The positional arguments that say what a command works on, for failure messages.
SUBJECT_ARGUMENTS = ("inputs", "data", "checkpoint", "names", "out")

log = logging.getLogger(__name__)


def _command_module(name: str):
    return importlib.import_module(f".{name}_cmd", __name__)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``-v`` and ``--threads``; on sub-commands they default to "not given", so the value given
    before the command name survives when none is given after it."""
    suppressed = {} if top_level else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging", **suppressed)
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch CPU threads (default: $DEEPFAKE_XAI_THREADS, else the CPUs this process "
        "may use)",
        **suppressed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-xai",
        description="Detect AI-generated faces and explain the decision.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = _command_module(name)
        except ModuleNotFoundError:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_common_options(command, top_level=False)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            _prepare(args)
            return int(args._run(args) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED_EXIT
        except Exception as exc:
            return _report(args, exc)


def _prepare(args: argparse.Namespace) -> None:
    """Set torch's threads and check the device before any work starts."""
    from ..detectors import resolve_device
    from ..runtime import configure_allocator, configure_threads

    threads = configure_threads(args.threads)
    log.debug("torch CPU threads: %d; glibc allocator: %s", threads, configure_allocator())
    device = getattr(args, "device", None)
    if isinstance(device, str):
        resolve_device(device)


def is_usage_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "the command line asked for something impossible" (exit 2).

    Plain ``ValueError``/``TypeError`` are what the library raises for invalid arguments; their
    subclasses (a broken checkpoint or image, a name that cannot be encoded) are failures.
    """
    from ..detectors import DeviceUnavailableError, PretrainedWeightsUnavailable
    from ..detectors.checkpoint import CheckpointNotFoundError
    from ..registry import RegistryError

    usage = (
        RegistryError,
        DeviceUnavailableError,
        PretrainedWeightsUnavailable,
        FileNotFoundError,
        CheckpointNotFoundError,
    )
    return isinstance(exc, usage) or type(exc) in (ValueError, TypeError)


def _report(args: argparse.Namespace, exc: Exception) -> int:
    """One line on stderr for ``exc`` (the traceback with ``-v``); the exit status."""
    from ..detectors.checkpoint import plain_text

    text = plain_text(exc) or type(exc).__name__
    if is_usage_error(exc):
        print(f"deepfake-xai {args.command}: error: {text}", file=sys.stderr)
        return USAGE_EXIT
    if args.verbose:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if args.verbose else " (-v shows the traceback)"
    print(
        f"deepfake-xai {args.command} {_subject(args)}: failed: {type(exc).__name__}: {text}{hint}",
        file=sys.stderr,
    )
    return FAILURE_EXIT


def _subject(args: argparse.Namespace) -> str:
    """What the command was working on (its inputs), shortened for a one-line message."""
    for name in SUBJECT_ARGUMENTS:
        value = getattr(args, name, None)
        if value:
            items = value if isinstance(value, (list, tuple)) else [value]
            text = " ".join(str(item) for item in items)
            return text if len(text) <= 120 else text[:117] + "..."
    return ""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source location Python prints by default."""
    print(f"deepfake-xai: warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
