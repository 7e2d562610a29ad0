"""The three outcomes in words: one wording for the report, the CLI summary and the Batch tab.

A ``real`` verdict is shown as "no signs of generation found", never as proof; ``uncertain``
means the face is unlike those the detector learnt from (or outside its input limits), so its
P(fake) is not to be relied on. See :mod:`deepfake_xai.reliability`.
"""

from __future__ import annotations

from ..reliability import THRESHOLD

SHORT = {"fake": "fake", "real": "no signs found", "uncertain": "uncertain"}
"""Each verdict in a table cell or a count."""

WORDS = {"fake": "fake", "real": "no signs of generation found", "uncertain": "uncertain"}
"""Each verdict as a headline (:data:`EXPLAINED` says what each means)."""

EXPLAINED = (
    f"Three outcomes: fake (P(fake) {THRESHOLD} or more); no signs of generation found "
    f"(P(fake) below {THRESHOLD}; no proof that the photo is real); uncertain: the face is "
    "unlike those the detector learnt from (distance score 1 or more) or outside its input "
    "limits (a smaller face, a harder JPEG), so its P(fake) is not to be relied on."
)
BRIEF = (
    "no signs found is no proof of a real photo; uncertain: unlike the faces the detector "
    "learnt from, so its P(fake) is not to be relied on"
)
NO_STATISTICS = (
    "has no reliability statistics, so it never says uncertain (deepfake-xai calibrate fits them)"
)


def p_fake_text(p_fake: float) -> str:
    """P(fake) as every front door writes it: ``"P(fake) 0.93"``; the ends as
    ``"P(fake) above 0.99"`` and ``"P(fake) below 0.01"``: a detector's 1.00 is not certainty."""
    if p_fake >= 0.995:
        return "P(fake) above 0.99"
    if p_fake < 0.005:
        return "P(fake) below 0.01"
    return f"P(fake) {p_fake:.2f}"
