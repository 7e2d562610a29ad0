"""The plain-language reading of one detector's outcome and heatmap, derived from the data.

The three outcomes (fake, real, uncertain) have one wording here. The heatmap's hottest pixels
are assigned to coarse face regions laid out over a face frame: the detected face box when one
is known, otherwise the centre of the image, where a portrait
(FFHQ-style alignment, the synthetic set) has its face. Bands of the frame give the forehead and
hairline, the eyes, the nose and cheeks, the mouth and chin; outside it is background and edges.
A second, cheap method's map of the same face is compared by rank correlation: when the two
disagree, the regions are worded as a rough hint rather than as where the evidence is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from ..analysis.outcomes import p_fake_text
from ..render import resize_map

FOREHEAD = "forehead and hairline"
EYES = "eyes"
NOSE = "nose and cheeks"
MOUTH = "mouth and chin"
BACKGROUND = "background and edges"
REGIONS: tuple[str, ...] = (FOREHEAD, EYES, NOSE, MOUTH, BACKGROUND)

# Frame of the face in a centred portrait, as fractions of the image (left, top, right, bottom).
PORTRAIT_FRAME: tuple[float, float, float, float] = (0.25, 0.26, 0.75, 0.76)
# Lower edges of the bands inside the frame, as fractions of its height (the last band is open).
_BANDS: tuple[tuple[float, str], ...] = ((0.28, FOREHEAD), (0.5, EYES), (0.7, NOSE))
_ABOVE = 0.4  # how far above the frame (in frame heights) still counts as forehead and hairline
_BELOW = 0.2  # how far below the frame still counts as mouth and chin
_GRID = 64  # heatmaps are resampled to this grid before their pixels are counted
_HOT_FRACTION = 0.1  # at most this share of pixels (those above half the peak) is "hot"
_FLAT = 0.05  # a map whose values span less than this has no focus

ARCHITECTURE_NAMES = {
    "efficientnet_b0": "EfficientNet-B0",
    "mobilenetv2_100": "MobileNetV2",
    "efficientnet_lite0": "EfficientNet-Lite0",
    "tf_efficientnet_lite0": "EfficientNet-Lite0",
}
# Explainers and layers as a person reads them: a name, and what the map shows.
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency (pixel gradients)",
    "occlusion": "Occlusion",
}
LAYER_NAMES = {
    "final": "last layer: coarse, where the decision is made",
    "mid": "middle layer: finer, earlier evidence",
    "input": "pixels: how much each pixel moved the score",
}
# The three-way outcome (see deepfake_xai.reliability.assess) as a person reads it; "" is no
# verdict (a score that is not a number).
NOT_PROOF = (
    "This is not proof that the photo is authentic: the detector only recognises the kinds of "
    "fake it learnt from."
)
OUTCOME_TITLES = {
    "fake": "Signs of generation found",
    "real": "No signs of generation found",
    "uncertain": "Cannot tell",
    "": "No verdict",
}
OUTCOME_NOTES = {
    "fake": "The face shows what this detector learnt to recognise in generated faces: evidence "
    "to check, not proof.",
    "real": NOT_PROOF,
    "uncertain": "This photo is unlike the faces this detector learnt from, so its verdict would "
    "be a guess:",
    "": "The detector's score is not a number, so no verdict is given.",
}
OUTCOME_CLAUSES = {
    "fake": "found signs of generation",
    "real": "found no signs of generation",
    "uncertain": "cannot tell: this face is unlike the faces it learnt from, so its verdict "
    "would be a guess",
    "": "gives no verdict",
}
# How the regions read in a sentence.
SPOKEN = {
    FOREHEAD: "the forehead and hairline",
    EYES: "the eyes",
    NOSE: "the nose and cheeks",
    MOUTH: "the mouth and chin",
    BACKGROUND: "the background around the face",
}

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Attention:
    """Where a heatmap's hottest pixels fall: region -> share, largest first."""

    shares: tuple[tuple[str, float], ...]

    @property
    def flat(self) -> bool:
        return not self.shares

    def top(self, n: int = 2, min_ratio: float = 0.5) -> list[str]:
        """The leading region, plus followers holding at least ``min_ratio`` of its share."""
        if self.flat:
            return []
        lead = self.shares[0][1]
        return [name for name, share in self.shares[:n] if share >= min_ratio * lead]


def display_name(detector_name: str, architecture: str = "") -> str:
    """A readable name: the built-ins' marketing names, anything else as registered."""
    return (
        ARCHITECTURE_NAMES.get(detector_name)
        or ARCHITECTURE_NAMES.get(architecture)
        or (detector_name)
    )


def plain(text: object) -> str:
    """Text shown as plain text inside Markdown (file names, checkpoint fields), not as markup."""
    return html.escape(str(text)).replace("*", r"\*").replace("_", r"\_").replace("`", "'")


def cell(text: object) -> str:
    """:func:`plain` text that also stays inside one cell of a Markdown table."""
    return " ".join(plain(text).replace("|", r"\|").split())


def method_name(method: str, layer: str | None = None) -> str:
    """``"Grad-CAM, last layer: coarse, where the decision is made"``; unknown ids as they are."""
    name = METHOD_NAMES.get(method, method)
    return f"{name}, {LAYER_NAMES.get(layer, layer)}" if layer else name


def how_to_read(target: str, *, lean: bool = False) -> str:
    """The one-line key under every heatmap; ``lean``: the detector cannot tell, so the map
    shows where it looked while leaning to ``target``, not evidence."""
    if lean:
        return (
            f'Red: where it looked most while leaning to "{target}"; blue: least. Not evidence: '
            "it cannot tell on this photo. Colours are relative to this image's own strongest "
            "point."
        )
    return (
        f'Red: where the evidence for "{target}" is strongest; blue: none. Colours are '
        "relative to this image's own strongest point, not comparable across images."
    )


def region_map(height: int, width: int, face: Box | None = None) -> np.ndarray:
    """An ``(height, width)`` array of indices into :data:`REGIONS`.

    ``face`` is the face box (left, top, right, bottom) in fractions of the image; without it
    :data:`PORTRAIT_FRAME` is assumed.
    """
    left, top, right, bottom = face or PORTRAIT_FRAME
    fh = max(bottom - top, 1e-6)
    ys = ((np.arange(height) + 0.5) / height - top) / fh
    xs = (np.arange(width) + 0.5) / width
    rows = np.full(height, REGIONS.index(BACKGROUND))
    rows[(ys >= -_ABOVE) & (ys < 1 + _BELOW)] = REGIONS.index(MOUTH)
    for limit, name in reversed(_BANDS):
        rows[(ys >= -_ABOVE) & (ys < limit)] = REGIONS.index(name)
    labels = np.repeat(rows[:, None], width, axis=1)
    labels[:, (xs < left) | (xs > right)] = REGIONS.index(BACKGROUND)
    return labels


def attention_regions(heatmap: np.ndarray, face: Box | None = None) -> Attention:
    """Share of the hottest pixels of ``heatmap`` (h, w in [0, 1]) per face region."""
    values = resize_map(heatmap, (_GRID, _GRID))
    low, high = float(values.min()), float(values.max())
    if high - low < _FLAT:
        return Attention(())
    threshold = max(np.quantile(values, 1 - _HOT_FRACTION), (low + high) / 2)
    hot = region_map(_GRID, _GRID, face)[values >= threshold]
    counts = np.bincount(hot, minlength=len(REGIONS)) / max(hot.size, 1)
    order = np.argsort(-counts, kind="stable")
    return Attention(tuple((REGIONS[i], float(counts[i])) for i in order if counts[i] > 0))


NO_REGION = (
    "No region stands out: the heatmap is nearly the same everywhere, so none is drawn over the "
    "photo."
)
AGREEMENT_FLOOR = 0.5  # below this Spearman correlation two maps of one face disagree
_AGREEMENT_GRID = 64  # the finest grid two maps are compared on


@dataclass(frozen=True)
class Agreement:
    """How far a second heatmap method ranks a face's regions like the shown one."""

    other: str  # the second method, as a person reads it
    spearman: float

    @property
    def agree(self) -> bool:
        return self.spearman >= AGREEMENT_FLOOR

    def as_dict(self) -> dict[str, object]:
        return {
            "compared_with": self.other,
            "spearman": round(self.spearman, 3),
            "agree": self.agree,
        }


def map_agreement(shown: np.ndarray, other: np.ndarray, other_name: str) -> Agreement | None:
    """The Spearman rank correlation of two maps of one image, both averaged down to the coarser
    grid; None when either map is flat (nothing to rank)."""
    if attention_regions(shown).flat or attention_regions(other).flat:
        return None
    side = min(_AGREEMENT_GRID, *shown.shape, *other.shape)
    a, b = (_pooled(m, side).ravel() for m in (shown, other))
    rho = float(spearmanr(a, b).statistic)
    return Agreement(other_name, rho) if np.isfinite(rho) else None


def _pooled(heatmap: np.ndarray, side: int) -> np.ndarray:
    """``heatmap`` area-averaged to ``side`` x ``side``."""
    values = Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    return np.asarray(values.resize((side, side), Image.Resampling.BOX))


def reading(
    name: str,
    verdict: str,
    p_fake: float,
    heatmap: np.ndarray,
    *,
    target: str = "fake",
    face: Box | None = None,
    agreement: Agreement | None = None,
) -> str:
    """A few sentences: the outcome with P(fake), then what the heatmap shows.

    ``verdict`` is the three-way outcome; ``target`` is the class the heatmap explains
    (``fake``, ``real``). For ``uncertain`` the map is worded as where the detector looked, not
    as evidence; when a second method's map (``agreement``) ranks the regions differently, the
    regions are worded as a rough hint.
    """
    sentence = (
        f"{name} {OUTCOME_CLAUSES.get(verdict, OUTCOME_CLAUSES[''])} ({p_fake_text(p_fake)})."
    )
    if verdict == "real":
        sentence += " " + NOT_PROOF
    regions = [SPOKEN[r] for r in attention_regions(heatmap, face).top()]
    if not regions:
        return f"{sentence} {NO_REGION}"
    where = regions[0] if len(regions) == 1 else f"{regions[0]}, and also on {_join(regions[1:])}"
    if verdict == "uncertain":
        shown = f"Where it looked (leaning {target}, not evidence): mostly on {where}."
    elif target == verdict:
        shown = f"Its evidence for {target} is mostly on {where}."
    else:
        shown = f"Its evidence for {target} (not its verdict) is mostly on {where}."
    if agreement is None or agreement.agree:
        return f"{sentence} {shown}"
    return (
        f"{sentence} Where it looked is unclear: {agreement.other} ranks the regions differently "
        f"(agreement {agreement.spearman:.2f}, where 1 means the same places), so read the map as "
        f"a rough hint. The map shown leans to {where}."
    )


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
