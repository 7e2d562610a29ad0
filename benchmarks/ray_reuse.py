"""Ray's start-up per ``analyze`` call: the first call starts the engine actors, later calls in
the same process reuse them.

One local Ray (``ray.init`` timed), then ``--calls`` calls of ``analyze(backend="ray")`` on the
same few shared faces (faces found first, final-layer Grad-CAM, no projection or report), each
into a new run folder; every call's wall time and whether it reused the actors.

    python benchmarks/ray_reuse.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    add_output_args,
    command_line,
    load_average,
    machine,
    update_readme_section,
    write_json,
)
from sources import FACES

DATA = FACES / "val"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--detector", default="default")
    add_output_args(parser, "ray_reuse")
    args = parser.parse_args(argv)
    import ray

    import deepfake_xai as dx

    paths = sorted((args.data / "real").glob("*.jpg"))[: args.images // 2]
    paths += sorted((args.data / "fake").glob("*.jpg"))[: args.images - len(paths)]
    load_before = load_average()
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    calls = []
    with tempfile.TemporaryDirectory() as work:
        for call in range(args.calls):
            start = time.perf_counter()
            result = dx.analyze(
                [str(p) for p in paths],
                detectors=[args.detector],
                projection=None,
                report=False,
                progress=False,
                backend="ray",
                threads=1,
                batch_size=8,
                out=Path(work) / f"run{call}",
            )
            seconds = time.perf_counter() - start
            info = result.info["ray"]
            calls.append(
                {
                    "call": call + 1,
                    "seconds": round(seconds, 2),
                    "actors_reused": info["actors_reused"],
                    "rows": len(result.predictions),
                }
            )
            print(calls[-1], flush=True)
    ray.shutdown()
    report = {
        "command": command_line("ray_reuse.py", argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "images": len(paths),
        "ray_init_s": round(init_s, 2),
        "load_before": load_before,
        "load_after": load_average(),
        "calls": calls,
    }
    write_json(args.out, report)
    rows = [f"| {c['call']} | {c['seconds']:.1f} | {c['actors_reused']} |" for c in calls]
    update_readme_section(
        args.readme,
        "ray_reuse",
        [
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}, one local Ray with 2 CPUs, 1 engine actor (1 torch "
            f"thread); {report['images']} shared faces, faces found first, the shipped detector, "
            f"final-layer Grad-CAM; load average {report['load_before']} before and "
            f"{report['load_after']} after (the cores were shared with other jobs). "
            f"`ray.init`: {report['ray_init_s']:.1f} s. Measured {report['date']}.",
            "",
            "| call | seconds, whole `analyze` call | actors reused |",
            "|---:|---:|---|",
            *rows,
        ],
        heading="Ray start-up per call",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
