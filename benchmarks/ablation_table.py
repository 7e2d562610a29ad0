"""The ablation table of docs/results.md, from the ``eval.json`` of each recipe run.

One row per recipe: in-distribution test accuracy / ROC AUC, each degradation, the held-out
Stable Diffusion 2.1 family (caught, ROC AUC), real web photos called fake, the pseudo-fake
families, and the reliability figures of one way of fitting it (share of test faces flagged,
ROC AUC against the held-out SD faces and the web photos, and the SD outcomes).

    python benchmarks/ablation_table.py shipped degrade10 degrade30 degrade50 sbi ae final
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEGRADATIONS = ("blur 1 px", "half size", "JPEG 70", "half size + JPEG 70")
RELIABILITY = "mahalanobis, embedding + blocks.4, fitted on degraded faces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--root", type=Path, default=Path("runs/recipes"))
    parser.add_argument("--reliability", default=RELIABILITY, help="which fit to show")
    args = parser.parse_args()
    print(
        "| recipe | test acc / AUC | "
        + " | ".join(DEGRADATIONS)
        + " | SD 2.1 held out: caught, AUC | web-real called fake | self-blended caught "
        "| autoencoder caught | flagged: test / SD / web | SD: fake / real / uncertain |"
    )
    print("| --- |" + " ---: |" * (len(DEGRADATIONS) + 7))
    for name in args.names:
        record = json.loads((args.root / name / "eval.json").read_text())
        print(row(name, record, args.reliability))


def row(name: str, record: dict, reliability: str) -> str:
    families = record["families"]
    test, sd, web = families["test"], families["sd21 held-out keys"], families["web real"]
    fit = record["reliability"].get(reliability, {})
    cells = [
        name,
        f"{test['accuracy']:.3f} / {test['roc_auc']:.3f}",
        *(f"{families[d]['accuracy']:.3f}" for d in DEGRADATIONS),
        f"{sd['called_fake']}/{sd['n']}, {sd['roc_auc_vs_test_reals']:.2f}",
        f"{web['called_fake']}/{web['n']}",
        _caught(families.get("self-blended")),
        _caught(families.get("autoencoder")),
    ]
    if fit:
        flagged = [fit[k]["flagged"] for k in ("test", "sd21 held-out keys", "web real")]
        outcomes = fit["sd21 held-out keys"]["outcomes"]
        cells.append(" / ".join(f"{v:.0%}" for v in flagged))
        cells.append(f"{outcomes['fake']} / {outcomes['real']} / {outcomes['uncertain']}")
    else:
        cells += ["", ""]
    return "| " + " | ".join(cells) + " |"


def _caught(family: dict | None) -> str:
    return f"{family['called_fake']}/{family['n']}" if family else ""


if __name__ == "__main__":
    main()
