"""``deepfake-xai demo``: serve the Gradio app (training small demo detectors on first use)."""

from __future__ import annotations

import argparse

HELP = "serve the web app: inspect one image, analyse a batch, compare detectors"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH_OR_HUB_ID",
        help="a detector checkpoint (.safetensors path or hf-hub:org/repo); repeat for several. "
        "Default: $DEEPFAKE_XAI_CHECKPOINTS (comma-separated), else demo detectors trained on "
        "synthetic faces, cached in $DEEPFAKE_XAI_CACHE/demo (default ~/.cache/deepfake-xai/demo)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def run(args: argparse.Namespace) -> int:
    from ..ui import build_demo, serve

    demo = build_demo(checkpoints=args.checkpoint or None, device=args.device)
    serve(demo, server_name=args.host, server_port=args.port, share=args.share)
    return 0
