"""Write the labelled examples the app ships (``deepfake_xai/ui/examples``), from sources whose
licences allow it: scikit-image's public-domain / CC0 photos. No generated face ships: the
StyleGAN faces the default detector knows are under NVIDIA's non-commercial licence, and drawn
faces would teach nothing about photos; a deployer adds their own with $DEEPFAKE_XAI_EXAMPLES.

    python examples/app_examples.py        # needs scikit-image
"""

from __future__ import annotations

import json
from pathlib import Path

import skimage.data
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "deepfake_xai" / "ui" / "examples"
SOURCES = {
    "real_astronaut.jpg": "Real photo (NASA astronaut Eileen Collins; public domain, "
    "from scikit-image)",
    "noface_chelsea.jpg": "Not a face (Chelsea the cat; CC0, Stefan van der Walt, "
    "from scikit-image)",
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).resize((384, 384), Image.LANCZOS).save(
        OUT / "real_astronaut.jpg", quality=90
    )
    Image.fromarray(skimage.data.chelsea()).save(OUT / "noface_chelsea.jpg", quality=90)
    (OUT / "sources.json").write_text(json.dumps(SOURCES, indent=2) + "\n")


if __name__ == "__main__":
    main()
