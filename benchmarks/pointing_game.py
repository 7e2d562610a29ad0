"""Does the explanation point at the artifact? Localisation on held-out synthetic fakes.

For every detector of a training run on the built-in synthetic set, explain the fakes of the
run's held-out test split and score each map against the ground-truth artifact mask: the
pointing game (is the map's maximum inside the mask) and the share of the map's energy inside
it. A map that knows nothing scores the mask's area on both, which is the chance row.

    deepfake-xai synthesize synth && deepfake-xai train synth --detector efficientnet_b0 \\
        --detector mobilenetv2_100 --image-size 96 --epochs 3 --out runs/demo
    python benchmarks/pointing_game.py --run runs/demo --data synth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import README, command_line, machine, update_readme_section, write_json

from deepfake_xai import Detector, explain
from deepfake_xai.data import read_manifest
from deepfake_xai.explainers.faithfulness import energy_in_mask, pointing_game
from deepfake_xai.synthetic import load_mask

METHODS = ("gradcam", "gradcam++", "layercam")
LAYERS = ("final", "mid")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `deepfake-xai train` --out")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic set it trained on")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "pointing_game.json"
    )
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)

    fakes = [
        s.path
        for s in read_manifest(args.run / "split.csv")
        if s.split == "test" and s.label == "fake"
    ]
    masks = np.stack([load_mask(args.data, path) for path in fakes])
    rows = [
        {
            "detector": "chance (uniform map)",
            "method": "-",
            "layer": "-",
            "pointing": float(masks.mean()),
            "energy": float(masks.mean()),
        }
    ]
    for checkpoint in sorted(args.run.glob("*/best.safetensors")):
        detector = Detector.load(checkpoint, device="cpu")
        for method in METHODS:
            result = explain(detector, fakes, method=method, layers=LAYERS, target="fake")
            for layer in LAYERS:
                maps = result.heatmaps[layer].maps
                rows.append(
                    {
                        "detector": detector.name,
                        "method": method,
                        "layer": layer,
                        "pointing": float(pointing_game(maps, masks).mean()),
                        "energy": float(energy_in_mask(maps, masks).mean()),
                    }
                )
    report = {"machine": machine(), "n_fakes": len(fakes), "rows": rows}
    write_json(args.out, report)
    lines = [
        f"Command: `{command_line('pointing_game.py', argv)}`",
        "",
        f"{machine()}; {len(fakes)} held-out fakes of the run's test split, target `fake`.",
        "",
        "| detector | method | layer | pointing game | energy in mask |",
        "|---|---|---|---:|---:|",
        *(
            f"| {r['detector']} | {r['method']} | {r['layer']} "
            f"| {r['pointing']:.2f} | {r['energy']:.2f} |"
            for r in rows
        ),
    ]
    update_readme_section(
        args.readme, "pointing_game", lines, heading="Localisation on synthetic fakes"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
