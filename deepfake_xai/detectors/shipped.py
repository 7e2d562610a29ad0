"""Detectors that ship inside the package, trained on real faces, so the app and the API give real
verdicts the moment they start. ``load_detector("default")`` loads the first one."""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).with_name("shipped")
DEFAULT_NAME = "default"
DEFAULT_FILE = "efficientnet_b0_faces.safetensors"


def shipped_checkpoints() -> list[Path]:
    """The shipped checkpoints, the default first (empty in a build without them)."""
    found = sorted(SHIPPED_DIR.glob("*.safetensors"))
    return sorted(found, key=lambda path: path.name != DEFAULT_FILE)


def shipped_checkpoint(name: str = DEFAULT_NAME) -> Path | None:
    """The shipped checkpoint called ``name`` (its file stem, or ``"default"``), else None."""
    for path in shipped_checkpoints():
        if name in (path.stem, DEFAULT_NAME if path.name == DEFAULT_FILE else None):
            return path
    return None
