"""``deepfake-xai list``: registered detectors, explainers and the plugins they came from."""

from __future__ import annotations

import argparse
import json

HELP = "list registered detectors, explainers and plugins"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ..registry import DETECTORS, EXPLAINERS

    rows = []
    for registry in (DETECTORS, EXPLAINERS):
        for entry in registry.entries():
            rows.append(
                {
                    "type": registry.kind,
                    "name": entry.name,
                    "kind": getattr(entry.factory, "kind", registry.kind),
                    "aliases": list(entry.aliases),
                    "source": entry.source,
                    "version": entry.version or "",
                }
            )
        for name, reason in registry.failed_plugins.items():
            rows.append(
                {
                    "type": registry.kind,
                    "name": name,
                    "kind": "failed",
                    "aliases": [],
                    "source": reason,
                    "version": "",
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for kind in ("detector", "explainer"):
        print(f"{kind}s:")
        for row in (r for r in rows if r["type"] == kind):
            aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
            origin = row["source"] + (f" {row['version']}" if row["version"] else "")
            label = "" if row["kind"] == kind else f" [{row['kind']}]"
            print(f"  {row['name']:<24}{label} {origin}{aliases}")
    return 0
