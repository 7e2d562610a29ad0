"""The labelled examples shown above the fold: the packaged ones, or a deployer's own folder.

A folder of examples holds images and, optionally, ``sources.json`` (file name -> caption saying
what it is and where it comes from). Without a caption, a name starting ``real_`` / ``fake_`` (or a
``real`` / ``fake`` parent folder) gives the label. ``$DEEPFAKE_XAI_EXAMPLES`` points the app (and
the Space) at another folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .uploads import IMAGE_SUFFIXES

EXAMPLES_ENV = "DEEPFAKE_XAI_EXAMPLES"
PACKAGED = Path(__file__).with_name("examples")
CAPTIONS = "sources.json"


def example_folder() -> Path:
    """``$DEEPFAKE_XAI_EXAMPLES`` when set, else the examples shipped with the package."""
    return Path(os.environ.get(EXAMPLES_ENV) or PACKAGED)


def folder_examples(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, caption) for every image in ``folder``, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such examples folder (set by ${EXAMPLES_ENV}?)")
    captions_file = folder / CAPTIONS
    captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(str(p), captions.get(p.name) or caption(p)) for p in files]


def captioned(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(path, caption) for example files given one by one."""
    return [(os.fspath(p), caption(Path(p))) for p in paths]


def caption(path: Path) -> str:
    """``"Real: name"`` / ``"Fake: name"`` from a ``real_`` / ``fake_`` prefix or folder."""
    label = label_from_name(path)
    return f"{label.capitalize()}: {path.stem}" if label else path.stem


def label_from_name(path: str | os.PathLike) -> str | None:
    """``real`` or ``fake`` from the file name's prefix (``real_``, ``fake-``...) or its folder."""
    path = Path(path)
    for label in ("real", "fake"):
        if (
            path.name.lower().startswith((f"{label}_", f"{label}-"))
            or path.parent.name.lower() == label
        ):
            return label
    return None
