"""Write the labelled examples the app ships (``deepfake_xai/ui/examples``), from sources whose
licences allow it: scikit-image's public-domain / CC0 photos, and a fake made here from the
public-domain astronaut: a self-blended copy (Shiohara & Yamasaki, 2022: the face pasted onto
itself with a slightly altered copy, leaving the seam a face swap leaves).

The fake ships only when the shipped detector calls it fake (through ``analyze``, which finds the
face and gives the same three-way verdict as the app): an example's caption must be what a
visitor sees. Otherwise the script says what the detector answered and writes no fake. The
StyleGAN faces the default detector knows are under NVIDIA's non-commercial licence and do not
ship; a deployer adds their own examples with $DEEPFAKE_XAI_EXAMPLES.

    python examples/app_examples.py        # needs scikit-image
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.faces import find_faces
from deepfake_xai.pseudofakes.sbi import self_blend

OUT = Path(__file__).resolve().parents[1] / "deepfake_xai" / "ui" / "examples"
SOURCES = {
    "real_astronaut.jpg": "Real photo (NASA astronaut Eileen Collins; public domain, "
    "from scikit-image)",
    "noface_chelsea.jpg": "Not a face (Chelsea the cat; CC0, Stefan van der Walt, "
    "from scikit-image)",
}
FAKE = "fake_astronaut_blended.jpg"
FAKE_CAPTION = (
    "Fake: face self-blended here (the public-domain NASA astronaut photo pasted onto itself "
    "with an altered copy, as a face swap would; made with deepfake_xai.pseudofakes.sbi)"
)
SEED = 0


def blended_astronaut() -> Image.Image:
    """The astronaut photo with its face self-blended (reproducible with :data:`SEED`)."""
    photo = Image.fromarray(skimage.data.astronaut())
    landmarks = find_faces(photo)[0].landmarks
    return Image.fromarray(self_blend(np.asarray(photo), landmarks, np.random.default_rng(SEED)))


def shipped_verdict(path: Path) -> tuple[str, float]:
    """The shipped detector's three-way verdict on ``path`` (its face found first) and P(fake)."""
    with tempfile.TemporaryDirectory() as out:
        result = dx.analyze(
            [path], "default", projection=None, out=out, report=False, progress=False
        )
        row = result.predictions.iloc[0]
        return str(row["verdict"]), float(row["p_fake"])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).resize((384, 384), Image.LANCZOS).save(
        OUT / "real_astronaut.jpg", quality=90
    )
    Image.fromarray(skimage.data.chelsea()).save(OUT / "noface_chelsea.jpg", quality=90)
    sources = dict(SOURCES)
    blended_astronaut().save(OUT / FAKE, quality=95)
    verdict, p_fake = shipped_verdict(OUT / FAKE)
    if verdict == "fake":
        sources[FAKE] = FAKE_CAPTION
    else:
        (OUT / FAKE).unlink()
        print(f"not shipping {FAKE}: the shipped detector says {verdict!r} (P(fake) {p_fake:.3f})")
    (OUT / "sources.json").write_text(json.dumps(sources, indent=2) + "\n")


if __name__ == "__main__":
    main()
