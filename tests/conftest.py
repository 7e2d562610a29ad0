"""Shared fixtures: tiny images, temporary plugin packages installed with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# One thread per test process: on 2 shared cores, oversubscription costs 10-30x. The CLI's
# configure_threads (and subprocesses) read the same number from DEEPFAKE_XAI_THREADS.
os.environ["DEEPFAKE_XAI_THREADS"] = os.environ.get("DFX_TEST_THREADS", "1")
torch.set_num_threads(int(os.environ["DEEPFAKE_XAI_THREADS"]))

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-140k-sample"


@pytest.fixture
def rgb_images() -> list[Image.Image]:
    """Three small RGB images of different sizes."""
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (80, 48), (37, 53)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture
def faces_sample() -> Path:
    """The shared FFHQ/StyleGAN sample, or a skip saying why."""
    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared face sample not found at {SHARED_FACES}")
    return SHARED_FACES


@pytest.fixture(scope="module")
def quadrant():
    """The known-answer detector of ``models``: it looks at the top-left quadrant only."""
    from models import QuadrantDetector  # here, so collecting tests imports no detector code

    return QuadrantDetector()


@pytest.fixture(scope="module")
def noise_faces(tmp_path_factory) -> list:
    """Random-noise images (the quadrant detectors call them fake) and blurred copies (real)."""
    from models import SIZE
    from PIL import ImageFilter

    from deepfake_xai.data import Sample

    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        image.save(root / f"fake{i}.png")
        image.filter(ImageFilter.GaussianBlur(3)).save(root / f"real{i}.png")
        samples += [Sample(root / f"fake{i}.png", "fake"), Sample(root / f"real{i}.png", "real")]
    return samples


def install_plugin(
    tmp_path: Path, dist: str, module_code: str, entry_points: dict[str, dict[str, str]]
) -> Path:
    """Write a plugin package with its own pyproject.toml and ``pip install`` it into a target dir.

    Returns the directory to put on ``sys.path`` / ``PYTHONPATH``.
    """
    src = tmp_path / f"{dist}-src"
    module = dist.replace("-", "_")
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(textwrap.dedent(module_code))
    groups = "\n".join(
        f'[project.entry-points."{group}"]\n' + "\n".join(f'{k} = "{v}"' for k, v in eps.items())
        for group, eps in entry_points.items()
    )
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "0.0.1"

            [tool.setuptools]
            packages = ["{module}"]
            """
        )
        + groups
        + "\n"
    )
    target = tmp_path / f"{dist}-site"
    pip_install_target(target, src)
    return target


def pip_install_target(target: Path, *sources: Path, timeout: float | None = None) -> None:
    """``pip install --target target sources`` (no dependencies, no build isolation)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
