"""``deepfake-xai plugins``: check that installed plugins honour the contract, or list them."""

from __future__ import annotations

import argparse

from . import add_common_options, list_cmd

HELP = "check installed detector/explainer plugins against the contract, or list them"
KINDS = ("auto", "detector", "explainer")


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="run the conformance kit on registered detectors or explainers",
        description=(
            "Run deepfake_xai.testing's checks on each NAME and print every check with PASS, "
            "FAIL (and what to fix) or SKIP. Exits 1 when any check fails."
        ),
    )
    add_common_options(check, top_level=False)
    check.add_argument("names", nargs="+", metavar="NAME", help="registered detector or explainer")
    check.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="what NAME is (auto: a detector if one has that name, else an explainer)",
    )
    check.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="run detector checks at this input size (faster; for models that accept any size)",
    )
    check.add_argument("--device", default="cpu", help="device for the checks (default: cpu)")
    check.set_defaults(_action=run_check)
    listing = actions.add_parser("list", help="the same as `deepfake-xai list`")
    add_common_options(listing, top_level=False)
    list_cmd.configure(listing)
    listing.set_defaults(_action=list_cmd.run)


def run(args: argparse.Namespace) -> int:
    return args._action(args)


def run_check(args: argparse.Namespace) -> int:
    """Print one report per name; 0 when every check passed, 1 otherwise."""
    from ..testing import check_detector, check_explainer

    failed = 0
    for name in args.names:
        if _kind(name, args.kind) == "detector":
            report = check_detector(name, image_size=args.image_size, device=args.device)
        else:
            report = check_explainer(name)
        print(report.format(), end="\n\n")
        failed += not report.passed
    if len(args.names) > 1:
        print(f"{len(args.names) - failed} of {len(args.names)} passed")
    return 1 if failed else 0


def _kind(name: str, kind: str) -> str:
    """``detector`` or ``explainer``; a name known to neither is checked as a detector."""
    if kind != "auto":
        return kind
    from ..registry import DETECTORS, EXPLAINERS

    in_detectors = name in DETECTORS or name.lower() in DETECTORS.failed_plugins
    in_explainers = name in EXPLAINERS or name.lower() in EXPLAINERS.failed_plugins
    return "explainer" if in_explainers and not in_detectors else "detector"
