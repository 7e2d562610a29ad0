"""Write the labelled examples the app ships (``deepfake_xai/ui/examples``), from sources whose
licences allow it: scikit-image's public-domain / CC0 photos and this project's own drawn faces.

    python examples/app_examples.py        # needs scikit-image
"""

from __future__ import annotations

import json
from pathlib import Path

import skimage.data
from PIL import Image

from deepfake_xai.synthetic import make_sample

OUT = Path(__file__).resolve().parents[1] / "deepfake_xai" / "ui" / "examples"
SOURCES = {
    "real_astronaut.jpg": "Real photo (NASA astronaut Eileen Collins; public domain, "
    "from scikit-image)",
    "noface_chelsea.jpg": "Not a face (Chelsea the cat; CC0, Stefan van der Walt, "
    "from scikit-image)",
    "real_drawn_face.png": "Real, drawn (a face from deepfake-xai's synthetic set; MIT)",
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).resize((384, 384), Image.LANCZOS).save(
        OUT / "real_astronaut.jpg", quality=90
    )
    Image.fromarray(skimage.data.chelsea()).save(OUT / "noface_chelsea.jpg", quality=90)
    make_sample(1, "real", size=256, seed=11).image.save(OUT / "real_drawn_face.png")
    fake = make_sample(4, "fake", size=256, seed=11)
    fake.image.save(OUT / "fake_drawn_face.png")
    SOURCES["fake_drawn_face.png"] = (
        f"Fake, drawn (the same kind of face with a {fake.artifact} artifact on the "
        f"{fake.region}; MIT)"
    )
    (OUT / "sources.json").write_text(json.dumps(SOURCES, indent=2) + "\n")


if __name__ == "__main__":
    main()
