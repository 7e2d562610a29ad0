"""``deepfake-xai demo``: serve the Gradio app (the shipped detector by default)."""

from __future__ import annotations

import argparse

HELP = "serve the web app: inspect one image, analyse a batch, compare detectors"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        "--detector",
        dest="checkpoint",
        action="append",
        default=[],
        metavar="PATH_OR_HUB_ID",
        help="a detector checkpoint (.safetensors path or hf-hub:org/repo); repeat for several. "
        "Default: $DEEPFAKE_XAI_CHECKPOINTS (comma-separated), else the detector shipped with "
        "the package (trained on real faces), else the synthetic demo detectors",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="serve the demo detectors trained on synthetic faces with planted artifacts (the "
        "pointing-game demonstration; trained on first use, cached in $DEEPFAKE_XAI_CACHE/demo)",
    )
    parser.add_argument(
        "--examples",
        metavar="FOLDER",
        help="show the images of FOLDER as examples (names real_* / fake_* give their labels; "
        "default: $DEEPFAKE_XAI_EXAMPLES, else the packaged examples)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def run(args: argparse.Namespace) -> int:
    import os

    from ..ui import build_demo, serve
    from ..ui.example_files import EXAMPLES_ENV

    if args.checkpoint and args.synthetic:
        raise ValueError("--synthetic serves the synthetic demo detectors; drop --checkpoint")
    if args.examples:
        if not os.path.isdir(args.examples):
            raise FileNotFoundError(f"--examples {args.examples}: not a folder")
        os.environ[EXAMPLES_ENV] = args.examples
    demo = build_demo(
        checkpoints=args.checkpoint or None, device=args.device, synthetic=args.synthetic
    )
    serve(demo, server_name=args.host, server_port=args.port, share=args.share)
    return 0
