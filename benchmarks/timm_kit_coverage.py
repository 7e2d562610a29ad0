"""Which timm families work as a plugin with two lines (``TimmDetector`` + ``architecture``)?

Runs the conformance kit (``deepfake_xai.testing.check_detector``) on the smallest model of many
timm families, at 64 px (96 px where a model needs more), with random weights, and records which
pass and the first failed check of the others. docs/plugins.md quotes the result.

    python benchmarks/timm_kit_coverage.py          # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
import warnings
from datetime import date

from _common import add_output_args, command_line, machine, update_readme_section, write_json

ARCHITECTURES = (
    "resnet18",
    "resnet10t",
    "convnext_atto",
    "mobilenetv2_050",
    "mobilenetv3_small_050",
    "lcnet_050",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mnasnet_small",
    "mixnet_s",
    "tinynet_e",
    "rexnet_100",
    "regnetx_002",
    "ghostnet_100",
    "repvgg_a0",
    "mobileone_s0",
    "dla34",
    "densenet121",
    "edgenext_xx_small",
    "mobilevit_xxs",
    "fastvit_t8",
    "efficientformerv2_s0",
    "levit_128s",
    "vit_tiny_patch16_224",
)


def check(architecture: str) -> dict:
    from deepfake_xai.detectors import TimmDetector
    from deepfake_xai.registry import DETECTORS
    from deepfake_xai.testing import check_detector

    cls = type(architecture, (TimmDetector,), {"architecture": architecture})
    cls.detector_name = architecture
    DETECTORS.add(architecture, cls, override=True)
    start = time.perf_counter()
    try:
        report = None
        for size in (64, 96, 224):
            report = check_detector(architecture, image_size=size)
            if report.passed or "features and head" not in [r.name for r in report.failures]:
                break
    finally:
        DETECTORS.remove(architecture)
    failed = report.failures[0] if report.failures else None
    return {
        "architecture": architecture,
        "passed": report.passed,
        "image_size": size,
        "first_failure": f"{failed.name}: {failed.message}"[:200] if failed else "",
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="*", default=list(ARCHITECTURES))
    add_output_args(parser, "timm_kit_coverage")
    args = parser.parse_args(argv)
    import timm
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for architecture in args.architectures:
        rows.append(check(architecture))
        print(rows[-1], flush=True)
    report = {
        "command": command_line("timm_kit_coverage.py", argv),
        "machine": machine(),
        "date": date.today().isoformat(),
        "timm": timm.__version__,
        "rows": rows,
    }
    write_json(args.out, report)
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; timm {report['timm']}; measured {report['date']}. Each "
        "row is a `TimmDetector` subclass naming only `architecture`, checked with random "
        "weights at the image size shown.",
        "",
        "| timm architecture | kit | px | first failed check |",
        "|---|---|---:|---|",
    ]
    for row in rows:
        verdict = "passes" if row["passed"] else "fails"
        failure = row["first_failure"].replace("|", "\\|")
        lines.append(f"| `{row['architecture']}` | {verdict} | {row['image_size']} | {failure} |")
    update_readme_section(
        args.readme, "timm_kit_coverage", lines, heading="timm families and the plugin kit"
    )


if __name__ == "__main__":
    main()
