"""End-to-end ``analyze`` against ``Engine.run`` alone, and memory as the input grows.

Sides, each in a fresh subprocess with the same environment (threads, glibc malloc settings):

- **engine**: ``Engine.run`` (both detectors, P(fake) + embedding + final-layer Grad-CAM) on
  uint8 batches decoded and harmonised beforehand: the ceiling for ``analyze``;
- **analyze**: ``Analyzer.run`` on the same JPEG files: decoding (and the face check, unless
  ``--no-faces``) in DataLoader workers, the engine, and every row, embedding and CAM written
  to disk (projection and report off);
- **ray, N actors**: the same ``Analyzer.run`` with ``backend="ray"`` on a fresh local Ray
  (``ray.init(num_cpus=<cores>)``): decoding in Ray tasks, the engines in N actors (with 2
  actors on 2 cores each actor reserves half a CPU, so that one is left for decoding). Ray's
  fixed costs are timed apart: ``ray.init``, a first one-batch run (Ray's workers importing
  everything) and a second one (the pipeline and its actors starting, which every ``analyze``
  call pays); "images/s after start-up" divides the images by the run's time minus that
  second one-batch run;
- **memory N**: ``analyze`` on N whole images (the folder's files repeated through symlinks;
  the face check, which holds no state, is off to keep the run short), with the
  peak resident memory of the main process (kernel high-water mark, reset after warm-up) and the
  peak proportional memory (PSS) of the main process and its decoding workers together (sampled
  every 0.25 s; PSS splits copy-on-write pages shared after the fork instead of counting them
  once per process).

Throughput is images / wall seconds after two warm-up batches (engine) or a warm-up run on two
batches of images (analyze), the best of interleaved rounds (the machine is shared). Images
are the shared FFHQ/StyleGAN sample when present, else generated 256 px JPEGs.

    python benchmarks/analyze_throughput.py --quick

writes ``benchmarks/results/analyze_throughput.json`` and the table in ``benchmarks/README.md``
between the ``analyze_throughput`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    HERE,
    MALLOC_ENV,
    README,
    add_output_args,
    command_line,
    machine,
    peak_rss_bytes,
    reset_peak_rss,
    update_readme_section,
    write_json,
)

SHARED = HERE.parents[1] / "shared" / "data" / "faces-140k-sample"
DETECTORS = ("efficientnet_b0", "mobilenetv2_100")
MIB = 1 << 20
WARMUP_BATCHES = 2
LOCAL_ANCHOR = "analyze, 1 workers"


# -- inside the worker subprocess ---------------------------------------------------------------
def detectors(image_size: int) -> list:
    import deepfake_xai as dx

    return [dx.load_detector(name, image_size=image_size, device="cpu") for name in DETECTORS]


def make_analyzer(config: dict, **backend):
    from deepfake_xai.analysis import Analyzer

    return Analyzer(
        detectors(config["image_size"]),
        projection=None,
        batch_size=config["batch_size"],
        progress=False,
        report=False,
        resume=False,
        faces=config["faces"],
        **backend,
    )


def engine_side(config: dict) -> dict:
    """Engine.run alone on pre-decoded batches."""
    import torch

    from deepfake_xai.analysis.decode import draft_size
    from deepfake_xai.engine import Engine
    from deepfake_xai.images import load_image
    from deepfake_xai.preprocessing import to_uint8_tensor

    engine = Engine(detectors(config["image_size"]), layers=("final",), device="cpu")
    harmonization = engine.detectors[0].harmonization
    draft = draft_size([harmonization])
    paths, size = config["paths"], config["batch_size"]
    batches = [
        torch.stack(
            [to_uint8_tensor(harmonization.apply(load_image(p, draft_size=draft))) for p in chunk]
        )
        for chunk in (paths[i : i + size] for i in range(0, len(paths), size))
    ]
    for batch in batches[:WARMUP_BATCHES]:
        engine.run(batch)
    start = time.perf_counter()
    for batch in batches:
        engine.run(batch)
    seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": seconds}


def analyze_side(config: dict) -> dict:
    """Analyzer.run end to end, after a warm-up run on two batches."""
    analyzer = make_analyzer(config, num_workers=config["workers"])
    with tempfile.TemporaryDirectory() as tmp:
        analyzer.run(config["paths"][: WARMUP_BATCHES * config["batch_size"]], Path(tmp) / "warm")
        return timed_run(analyzer, config["paths"], Path(tmp) / "run")


def ray_side(config: dict) -> dict:
    """Analyzer.run on a fresh local Ray: start-up timed apart, then one run end to end."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=config["ray_cpus"], include_dashboard=False, log_to_driver=False)
    init_seconds = time.perf_counter() - start
    analyzer = make_analyzer(
        config,
        backend="ray",
        actors=config["actors"],
        cpus_per_actor=config["cpus_per_actor"],
        threads=1,
    )
    one_batch = []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in ("cold", "warm"):
            start = time.perf_counter()
            analyzer.run(config["paths"][: config["batch_size"]], Path(tmp) / attempt)
            one_batch.append(time.perf_counter() - start)
        result = timed_run(analyzer, config["paths"], Path(tmp) / "run")
    ray.shutdown()
    return {
        **result,
        "ray_init_seconds": init_seconds,
        "first_batch_seconds": one_batch[0],
        "one_batch_seconds": one_batch[1],
    }


def timed_run(analyzer, paths: list[str], out: Path) -> dict:
    """One ``analyzer.run`` with its wall time and peak memory."""
    reset = reset_peak_rss()
    sampler = PeakSampler().start()
    start = time.perf_counter()
    result = analyzer.run(paths, out)
    seconds = time.perf_counter() - start
    sampler.stop()
    summary = result.summary
    assert summary["processed"] + (summary.get("no_face") or 0) == len(paths), summary
    return {
        "images": len(paths),
        "seconds": seconds,
        "no_face": summary.get("no_face"),
        "timing": result.info["timing"],
        "peak_main_mib": peak_rss_bytes(reset) / MIB,
        "peak_total_mib": sampler.peak / MIB,
    }


class PeakSampler:
    """The largest proportional set size (PSS: shared pages split between the processes that
    share them) of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = self.process.memory_full_info().pss
            for child in self.process.children(recursive=True):
                try:
                    total += child.memory_full_info().pss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def worker(config: dict) -> dict:
    sides = {"engine": engine_side, "analyze": analyze_side, "ray": ray_side}
    result = sides[config["side"]](config)
    return {**{k: v for k, v in config.items() if k != "paths"}, **result}


# -- the orchestrating process -------------------------------------------------------------------
def image_paths(data: Path | None, n: int, scratch: Path) -> list[str]:
    """JPEG paths: the shared sample, or ``n`` generated 256 px faces."""
    from deepfake_xai.data import discover

    if data is not None and data.is_dir():
        return [str(s.path) for s in discover(data)]
    from deepfake_xai.synthetic import generate_dataset

    generate_dataset(scratch / "generated", n_per_class=(n + 1) // 2, size=256, fmt="jpeg")
    return [str(s.path) for s in discover(scratch / "generated")]


def repeated(paths: list[str], n: int, folder: Path) -> list[str]:
    """``n`` distinct paths (symlinks) cycling through ``paths``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        link = folder / f"{i:06d}.jpg"
        if not link.exists():
            link.symlink_to(paths[i % len(paths)])
        out.append(str(link))
    return out


def run_worker(config: dict, env: dict[str, str], scratch: Path) -> dict:
    """Run one side in a fresh process (its config, with the paths, travels in a file)."""
    config_file = scratch / "config.json"
    config_file.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker failed for {config['side']}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rate(result: dict) -> float:
    return result["images"] / result["seconds"]


def table(results: list[dict]) -> str:
    engine = next((r for r in results if r["side"] == "engine"), None)
    local = next((r for r in results if r["label"] == LOCAL_ANCHOR), None)
    lines = [
        "| side | images | px | batch | workers / actors | images/s | x engine | x local | "
        "images/s after start-up | peak RSS MiB main | peak PSS MiB all processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = (
            f"{rate(r) / rate(engine):.2f}"
            if engine and r["image_size"] == engine["image_size"]
            else "-"
        )
        versus_local = f"{rate(r) / rate(local):.2f}" if local and r["side"] == "ray" else "-"
        started = (
            f"{r['images'] / (r['seconds'] - r['one_batch_seconds']):.1f}"
            if "one_batch_seconds" in r
            else "-"
        )
        main_mib = f"{r['peak_main_mib']:.0f}" if "peak_main_mib" in r else "-"
        total_mib = f"{r['peak_total_mib']:.0f}" if "peak_total_mib" in r else "-"
        width = r.get("actors", r.get("workers", "-"))
        lines.append(
            f"| {r['label']} | {r['images']} | {r['image_size']} | {r['batch_size']} | "
            f"{width} | {rate(r):.1f} | {ratio} | {versus_local} | {started} | {main_mib} | "
            f"{total_mib} |"
        )
    return "\n".join(lines)


def startup_table(results: list[dict]) -> str:
    """Ray's fixed costs, per Ray row: ``ray.init`` and a one-batch run."""
    lines = [
        "| side | ray.init s | first one-batch run s | one-batch run s (every call) |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        if r["side"] == "ray":
            lines.append(
                f"| {r['label']} | {r['ray_init_seconds']:.1f} | {r['first_batch_seconds']:.1f} | "
                f"{r['one_batch_seconds']:.1f} |"
            )
    return "\n".join(lines)


DESCRIPTION = """\
`benchmarks/analyze_throughput.py` measures `deepfake_xai.analyze` end to end (decoding in
DataLoader workers, both detectors, final-layer Grad-CAM, every row, embedding and CAM written
to disk; projection and report off) against `Engine.run` alone on the same images decoded
beforehand, which is the ceiling. The memory rows run `analyze` on 1k and 10k whole images
(the sample repeated through symlinks; no face check) at a smaller size to keep the run short:
the peak RSS of the main process and the peak PSS of the main process plus its decoding
workers should not grow with the number of images (each block's rows, embeddings and CAMs go
to a Parquet part on disk and leave memory).
On the shared 2-core machine these rows move by tens of percent from run to run (other work
shares the cores), so compare rows of one table. With one torch thread, a decoding worker
competes with the engine for the second core here; on a GPU machine the workers decode while
the device computes. The Ray rows run the same images on a fresh local Ray (decoding in Ray
tasks, the engines in 1 or 2 actors, one torch thread each); "x local" is their end-to-end rate
over the `analyze, 1 workers` row of the same run, and their fixed costs (starting Ray, and the
pipeline and its actors starting, which each `analyze` call pays; the first call also pays
for Ray's workers importing torch and the package) are in the second table.

    python benchmarks/analyze_throughput.py --quick     # about 15 minutes on 2 cores
    python benchmarks/analyze_throughput.py             # 512 images, 3 rounds, 224 px memory runs\
"""


def update_readme(report: dict, path: Path = README) -> None:
    """Insert or replace this benchmark's block; other sections are left alone."""
    env = " ".join(f"{k}={v}" for k, v in report["env"].items())
    update_readme_section(
        path,
        "analyze_throughput",
        [
            DESCRIPTION,
            "",
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}; torch {report['torch']}; CPU; both detectors, "
            f"final-layer Grad-CAM; images: {report['data']}; throughput rows: best of "
            f"{report['rounds']} interleaved rounds; environment for every side: "
            f"`{env}`; faces found first: {report['faces']}. Measured {report['date']}.",
            "",
            table(report["results"]),
            "",
            startup_table(report["results"]),
        ],
        heading="Analyze throughput",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 images; memory runs at 64 px")
    parser.add_argument("--n", type=int, default=None, help="throughput images (default 512)")
    parser.add_argument("--repeat-to", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--memory-size", type=int, default=None, help="px for the memory runs (quick 64)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (quick 16)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1], help="decoding processes (each a row)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds, best kept (3)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--ray-actors",
        type=int,
        nargs="*",
        default=[1, 2],
        help="a Ray row per count of engine actors (none: no Ray rows)",
    )
    parser.add_argument("--no-faces", action="store_true", help="analyse whole images")
    parser.add_argument("--data", type=Path, default=SHARED)
    add_output_args(parser, "analyze_throughput")
    args = parser.parse_args(argv)
    args.n = args.n or (96 if args.quick else 512)
    args.rounds = args.rounds or 3
    args.batch_size = args.batch_size or (16 if args.quick else 32)
    args.memory_size = args.memory_size or (64 if args.quick else args.image_size)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return 0
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), **MALLOC_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        paths = image_paths(args.data, args.n, scratch)
        data = args.data if args.data.is_dir() else "generated 256 px JPEGs"
        base = {
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "faces": not args.no_faces,
        }
        configs = [{**base, "side": "engine", "label": "engine alone"}]
        configs += [
            {**base, "side": "analyze", "label": f"analyze, {w} workers", "workers": w}
            for w in args.workers
        ]
        cores = os.cpu_count() or 1
        configs += [
            {
                **base,
                "side": "ray",
                "label": f"ray, {n} actor{'s' if n > 1 else ''}",
                "actors": n,
                "cpus_per_actor": min(1.0, (cores - 1) / n),
                "ray_cpus": cores,
            }
            for n in args.ray_actors
        ]
        rounds = [
            [run_worker({**c, "paths": paths[: args.n]}, env, scratch) for c in configs]
            for _ in range(args.rounds)
        ]
        results = [max(runs, key=rate) for runs in zip(*rounds, strict=True)]
        most = max(args.workers)
        for n in args.repeat_to:
            config = {"side": "analyze", "label": f"analyze, memory at {n}", "workers": most}
            config.update(base, image_size=args.memory_size, faces=False)
            config["paths"] = repeated(paths, n, scratch / "many")
            results.append(run_worker(config, env, scratch))
    report = {
        "command": command_line("analyze_throughput.py", argv),
        "machine": machine(),
        "torch": torch.__version__,
        "data": str(data),
        "rounds": args.rounds,
        "env": {"OMP_NUM_THREADS": str(args.threads), **MALLOC_ENV},
        "faces": not args.no_faces,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    write_json(args.out, report)
    update_readme(report, args.readme)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
