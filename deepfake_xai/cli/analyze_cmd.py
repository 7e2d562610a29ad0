"""``deepfake-xai analyze``: find faces, predict, explain and project images into a folder.

The printed summary gives each detector's model version and how many images it called fake,
found no signs of generation in, or was uncertain about (unlike the faces it learnt from).

Exit status: 0 when every image was processed, 1 when some could not be read (their reasons
are in ``errors.csv``) or when no score at all was usable (every detector returned NaN or
infinite scores for every image it saw) or when another run is still writing into ``--out``
(its process id is named), 2 for usage errors (including a missing extra).
"""

from __future__ import annotations

import argparse
import sys

HELP = (
    "find faces, predict, explain and project a batch of images (and videos) into a resumable "
    "folder"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="folders (real/ and fake/ give labels), images, videos, globs or CSVs",
    )
    parser.add_argument(
        "--detector",
        "--checkpoint",
        dest="detectors",
        action="append",
        metavar="NAME|CHECKPOINT",
        help="registry name, .safetensors file, hf-hub: id or 'default' (repeatable; default: "
        "the shipped detector trained on real faces)",
    )
    parser.add_argument(
        "--explainer",
        dest="explainers",
        action="append",
        metavar="METHOD",
        help="attribution method, e.g. gradcam, gradcam++, integrated_gradients (repeatable; "
        "default gradcam; 'none' for predictions only)",
    )
    parser.add_argument(
        "--layer",
        dest="layers",
        action="append",
        metavar="LAYER",
        help="CAM layer: final, mid or a module path (repeatable; default final)",
    )
    parser.add_argument(
        "--projection", default="tsne", help="tsne, umap, pca or none (default tsne)"
    )
    parser.add_argument(
        "--no-face-check",
        dest="faces",
        action="store_false",
        help="analyse whole images; by default faces are found first, the largest is analysed "
        "and an image without a face gets status no_face and no verdict",
    )
    parser.add_argument(
        "--out", default="runs/analysis", help="output folder (default %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding workers: threads on the CPU, processes on a GPU (default min(4, CPUs))",
    )
    parser.add_argument(
        "--labels", default=None, metavar="folders|CSV", help="where labels come from"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="overwrite OUT instead of resuming it"
    )
    parser.add_argument("--no-report", action="store_true", help="skip report.html")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    video = parser.add_argument_group("video files (.mp4, .mov, .avi, .mkv, .webm...)")
    video.add_argument(
        "--video-rate",
        type=float,
        default=1.0,
        metavar="PER_SECOND",
        help="frames sampled per second of video (default %(default)s)",
    )
    video.add_argument(
        "--video-frames",
        type=int,
        default=None,
        metavar="N",
        help="sample N frames per video, evenly spread, instead of a rate",
    )
    video.add_argument(
        "--video-max-frames",
        type=int,
        default=32,
        metavar="N",
        help="frames sampled per video at most (default %(default)s)",
    )
    ray = parser.add_argument_group(
        "Ray (the [ray] extra)", "with --ray, --threads is per engine actor (default: its CPUs)"
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: no ADDRESS starts (or joins) a local Ray, 'auto' joins the "
        "cluster this machine belongs to, or give the head's address",
    )
    ray.add_argument(
        "--actors", type=int, default=None, help="engine actors (default: one per GPU, else 1)"
    )
    ray.add_argument(
        "--gpus-per-actor",
        type=float,
        default=None,
        help="GPUs per engine actor (default 1 when the cluster has GPUs, else 0)",
    )
    ray.add_argument(
        "--cpus-per-actor", type=float, default=None, help="CPUs per engine actor (default 1)"
    )


def run(args: argparse.Namespace) -> int:
    from ..analysis import DEFAULT_DETECTORS, analyze
    from ..analysis.ray_backend import RayExtraMissing
    from ..faces import FacesExtraMissing
    from ..reliability import VERDICTS
    from ..runtime import configure_threads
    from ..video import Sampling

    on_ray = args.ray is not None
    ray_options = {
        "ray_address": args.ray or None,
        "actors": args.actors,
        "gpus_per_actor": args.gpus_per_actor,
        "cpus_per_actor": args.cpus_per_actor,
    }
    if not on_ray and any(v is not None for v in ray_options.values()):
        raise ValueError("--actors, --gpus-per-actor and --cpus-per-actor need --ray")
    explainers = [e for e in args.explainers or ["gradcam"] if e.lower() != "none"]
    try:
        result = analyze(
            args.inputs if len(args.inputs) > 1 else args.inputs[0],
            detectors=args.detectors or DEFAULT_DETECTORS,
            explainers=explainers,
            layers=args.layers or ["final"],
            projection=args.projection,
            out=args.out,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.workers,
            labels=args.labels,
            resume=not args.no_resume,
            progress=not args.no_progress,
            report=not args.no_report,
            faces=args.faces,
            threads=args.threads if on_ray else configure_threads(args.threads),
            backend="ray" if on_ray else "local",
            **(ray_options if on_ray else {}),
            video=Sampling(args.video_rate, args.video_frames, args.video_max_frames),
        )
    except (FacesExtraMissing, RayExtraMissing) as exc:
        print(f"deepfake-xai analyze: error: {exc}", file=sys.stderr)
        return 2
    print(result.describe())
    summary = result.summary
    given = sum(counts[v] for counts in summary["verdicts"].values() for v in VERDICTS)
    if summary["invalid_scores"] and not given:
        print(
            "deepfake-xai analyze: error: no usable score: every detector returned NaN or "
            "infinite scores for every image, so no verdict was given",
            file=sys.stderr,
        )
        return 1
    return 1 if summary["errors"] else 0
