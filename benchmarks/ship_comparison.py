"""The seed's comparison on real footing (issue 21): the shipped detectors side by side on the
same held-out FFHQ / StyleGAN test faces, with where each looks and how its features separate.

Runs ``evaluate --regions`` (accuracy, F1, ROC AUC, ms / image, Grad-CAM mass per facial
region, its concentration, the silhouette and k-NN accuracy of the penultimate features in the
embedding, t-SNE and UMAP) on the test faces of ``benchmarks/sources.py`` (never trained on,
never used to choose an epoch), prints the markdown tables of ``docs/results.md``, and with
``--write`` stores each detector's row as ``metadata["comparison"]`` in its checkpoint, where
the app's About tab reads it.

    python benchmarks/ship_comparison.py --out runs/comparison-shipped --write
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import command_line, load_average, machine
from sources import shared_samples

from deepfake_xai.data import write_manifest
from deepfake_xai.detectors.checkpoint import update_metadata
from deepfake_xai.detectors.shipped import shipped_checkpoints
from deepfake_xai.evaluation import evaluate
from deepfake_xai.runtime import configure_threads
from deepfake_xai.ui.comparison_table import STUDY  # the study's reported accuracies

GROUPS = ("ffhq", "stylegan")  # the seed's task: FFHQ photos against StyleGAN faces


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/comparison-shipped"))
    parser.add_argument("--detector", action="append", type=Path, help="default: the shipped")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="store the rows in the checkpoints")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    checkpoints = args.detector or shipped_checkpoints()
    test = [s for s in shared_samples() if s.split == "test" and s.group in GROUPS]
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(test, args.out / "test-faces.csv")
    start = time.perf_counter()
    comparison = evaluate(
        [str(path) for path in checkpoints], manifest, split="test", regions=True, out=args.out
    )
    seconds = time.perf_counter() - start
    record = {
        "dataset": f"faces-140k-sample, held-out test faces ({', '.join(GROUPS)})",
        "n": len(test),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "threads": threads,
        "command": command_line("ship_comparison.py", argv),
    }
    rows = comparison_rows(comparison.table, comparison.regions.to_dict(), record)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2))
    if args.write:
        for path, row in zip(checkpoints, rows.values(), strict=True):
            update_metadata(path, comparison=row)
    print(markdown(rows))
    print(f"\n{seconds:.0f} s, {record['machine']}, {threads} torch threads, load {load_average()}")


def comparison_rows(table, regions: dict, record: dict) -> dict[str, dict]:
    """Per detector, the ``metadata["comparison"]`` block the About tab reads."""
    rows = {}
    for name, row in table.iterrows():
        study = regions["detectors"][name]
        rows[name] = {
            **record,
            **{k: float(row[k]) for k in ("accuracy", "f1", "roc_auc", "ms_per_image")},
            "regions": study["classes"]["all"]["shares"],
            "half_mass_area": study["classes"]["all"]["half_mass_area"],
            "by_class": {
                label: {
                    "regions": study["classes"][label]["shares"],
                    "half_mass_area": study["classes"][label]["half_mass_area"],
                }
                for label in ("real", "fake")
            },
            "separation": study["separation"],
        }
    return rows


def markdown(rows: dict[str, dict]) -> str:
    """The side-by-side tables of docs/results.md."""
    lines = [
        "| detector | accuracy (seed) | F1 | ROC AUC | ms / image | silhouette: embedding / "
        "t-SNE / UMAP | 5-NN accuracy: embedding / t-SNE / UMAP |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        seed = f" ({STUDY[name]:.3f})" if name in STUDY else ""
        separation = row["separation"]
        spaces = [s for s in ("embedding", "tsne", "umap") if s in separation]
        silhouettes = " / ".join(f"{separation[s]['silhouette']:.3f}" for s in spaces)
        knn = " / ".join(f"{separation[s]['knn_accuracy']:.3f}" for s in spaces)
        lines.append(
            f"| {name} | {row['accuracy']:.3f}{seed} | {row['f1']:.3f} | {row['roc_auc']:.3f} "
            f"| {row['ms_per_image']:.1f} | {silhouettes} | {knn} |"
        )
    regions = list(next(iter(rows.values()))["regions"])
    lines += [
        "",
        f"| detector | class | {' | '.join(regions)} | half the mass in |",
        "| --- | --- |" + " ---: |" * (len(regions) + 1),
    ]
    for name, row in rows.items():
        for label, block in row["by_class"].items():
            shares = " | ".join(f"{block['regions'][r]:.3f}" for r in regions)
            lines.append(f"| {name} | {label} | {shares} | {block['half_mass_area']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
