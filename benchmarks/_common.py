"""What the benchmark scripts share: the README section writer, the machine line, the glibc
malloc environment, resident-memory helpers and the JSON results writer.

The scripts run as ``python benchmarks/<name>.py``, so this directory is on ``sys.path`` and
they import this module as ``_common``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"

# glibc: keep freed memory instead of returning it to the OS after every large allocation; it
# roughly doubled batch-32 CPU throughput here (see DESIGN.md). Applied to every side alike.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of the README section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def update_readme_section(
    path: Path, name: str, lines: list[str], heading: str | None = None
) -> None:
    """Replace the block between ``name``'s markers with ``lines``, or append it (under
    ``## heading`` when given); the rest of the README is left alone. Written atomically."""
    start, end = markers(name)
    block = "\n".join([start, *lines, end])
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        head = text.rstrip() + "\n\n" if text.strip() else ""
        if heading:
            head += f"## {heading}\n\n"
        text = head + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def add_output_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out`` (the JSON results), ``--readme`` and the hidden ``--worker`` option."""
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"{name}.json")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def serve_locally(demo, **kwargs) -> str:
    """Serve the Gradio app ``demo`` through ``deepfake_xai.ui.serve`` on a free local port,
    without blocking (``kwargs`` go to ``serve``); returns its address."""
    from deepfake_xai.ui import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(
        demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
        **kwargs,
    )  # fmt: skip
    return f"http://127.0.0.1:{port}/"


def machine() -> str:
    """``"<arch>, <n> CPU cores"`` (and the GPU where torch sees one), for the record."""
    cores = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"{cores}, {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return cores


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the record."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that produced a result, as ``python benchmarks/<script> <args>``."""
    return shlex.join(["python", f"benchmarks/{script}", *(argv or sys.argv[1:])])


def write_json(path: Path, report: dict) -> None:
    """Write ``report`` (indented JSON) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def rss_bytes() -> int:
    """This process's resident set size now."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(reset_worked: bool) -> int:
    """The RSS high-water mark: since the reset when it worked, else since the process began."""
    if reset_worked:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
