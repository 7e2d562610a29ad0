"""The shared face sets as one labelled manifest, split so that every lever can be judged on
faces it never saw.

- ``faces-140k-sample``: FFHQ photos (group ``ffhq``) and StyleGAN faces (``stylegan``); its
  ``val/`` is the validation split and the held-out ``test`` split is carved out of ``train/``
  exactly as ``benchmarks/reproduce_seed.py`` did (seed 0, 1/9 of train), so the shipped
  detectors' test faces stay the test faces.
- ``sdfd-sd21``: Stable Diffusion 2.1 faces (``sd21``, fake only), split by prompt key (images
  of one key are similar people): 80 % of the keys ``train``, 20 % ``test``, by a hash of the
  key, so the split does not depend on which other files exist.
- ``web-real``: real web photos (``web_real``), evaluation and calibration only: ``test``.

Importable (``from sources import shared_samples``) and runnable:

    python benchmarks/sources.py --out runs/sources.csv
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path

from deepfake_xai.data import Sample, carve_split, discover, write_manifest

# ``$DEEPFAKE_XAI_SHARED_DATA`` points elsewhere (a subset carried to a GPU machine).
SHARED = Path(
    os.environ.get("DEEPFAKE_XAI_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
FACES = SHARED / "faces-140k-sample"
SD21 = SHARED / "sdfd-sd21"
WEB_REAL = SHARED / "web-real"
SD_TEST_SHARE = 0.2
_PROMPT_KEY = re.compile(r"^(sdfd_[^_]+)_\d+$")


def prompt_key(path: Path) -> str:
    """``sdfd_anB-128_12.jpg`` -> ``sdfd_anB-128`` (the set's prompt key)."""
    match = _PROMPT_KEY.match(path.stem)
    return match.group(1) if match else path.stem


def key_split(key: str, test_share: float = SD_TEST_SHARE) -> str:
    """``test`` for a stable ``test_share`` of keys (by SHA-1), else ``train``."""
    value = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8
    return "test" if value < test_share else "train"


def shared_samples(*, sd21: bool = True, web_real: bool = True) -> list[Sample]:
    """Every shared face with label, split and group (its source); see the module docstring."""
    if not FACES.is_dir():
        raise FileNotFoundError(f"{FACES}: the shared face sample is not here")
    faces = carve_split(discover(FACES), "test", fraction=0.1 / 0.9, seed=0)
    samples = [replace(s, group="ffhq" if s.label == "real" else "stylegan") for s in faces]
    if sd21 and SD21.is_dir():
        samples += [
            replace(s, split=key_split(prompt_key(s.path)), group="sd21") for s in discover(SD21)
        ]
    if web_real and WEB_REAL.is_dir():
        samples += [replace(s, split="test", group="web_real") for s in discover(WEB_REAL)]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sources.csv"))
    args = parser.parse_args()
    samples = shared_samples()
    write_manifest(samples, args.out)
    print(f"{len(samples)} images -> {args.out}")


if __name__ == "__main__":
    main()
