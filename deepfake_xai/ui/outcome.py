"""The box next to every verdict: the three-way outcome in words with P(fake), why the detector
cannot tell (when it cannot), its limits in one line, and its name, version and distance score.

No bar or percentage that reads as certainty: the headline says what was found, P(fake) stands
beside it as a number, and a ``real`` outcome always says that it is not proof.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ..analysis.outcomes import p_fake_text
from ..detectors import Detector
from ..reliability import Assessment
from .about_tab import limits_line
from .text import OUTCOME_NOTES, OUTCOME_TITLES

NO_STATISTICS = (
    "This detector has no reliability statistics: it cannot say when a photo is unlike the faces "
    "it learnt from, so it never answers \u201ccannot tell\u201d."
)


def outcome_box(
    detector: Detector,
    assessment: Assessment,
    p_fake: float,
    ood: float | None,
    *,
    note: str | None = None,
    details: str = "",
) -> str:
    """HTML for one detector's outcome (CSS classes ``outcome outcome-<verdict>``); ``note``
    replaces the outcome's usual note (worded for a photo), ``details`` is HTML shown after the
    reasons (a video's "what decided it")."""
    verdict = assessment.verdict
    p_text = p_fake_text(p_fake) if math.isfinite(p_fake) else "P(fake) not a number"
    if verdict == "uncertain":
        p_text += ", not to be relied on"
    parts = [
        f'<div class="outcome outcome-{verdict or "none"}" data-verdict="{verdict}">',
        f'<div class="outcome-head"><strong class="outcome-title">'
        f"{html.escape(OUTCOME_TITLES[verdict])}</strong>"
        f'<span class="p-fake">{html.escape(p_text)}</span></div>',
        f'<p class="outcome-note">{html.escape(note or OUTCOME_NOTES[verdict])}</p>',
        _reasons(assessment.reasons),
        details,
    ]
    if assessment.reliable is None:
        parts.append(f'<p class="outcome-note">{html.escape(NO_STATISTICS)}</p>')
    parts += [
        f'<p class="limits"><strong>Its limits:</strong> {html.escape(limits_line(detector))}</p>',
        f'<p class="model-line">{html.escape(_model_line(detector, ood))}</p>',
        "</div>",
    ]
    return "".join(parts)


def _reasons(reasons: Sequence[str]) -> str:
    if not reasons:
        return ""
    items = "".join(
        f"<li>{html.escape(reason[:1].upper() + reason[1:])}</li>" for reason in reasons
    )
    return f'<ul class="reasons">{items}</ul>'


def _model_line(detector: Detector, ood: float | None) -> str:
    version = detector.fingerprint or "not recorded"
    line = f"Model {detector.name}, version {version}"
    if ood is not None and math.isfinite(ood):
        line += f"; distance from its training faces {ood:.2f} (1 or more: unlike them)"
    return line + "."


CSS = """
.outcome { border-left: 6px solid #6b7280; border-radius: 6px; padding: 8px 12px;
  background: var(--block-background-fill); }
.outcome-fake { border-left-color: #b42318; }
.outcome-real { border-left-color: #1d5fa8; }
.outcome-uncertain { border-left-color: #b26b00; background: #fff8e6; color: #3d2a00; }
.outcome-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 12px; }
.outcome-title { font-size: 1.25rem; }
.p-fake { font-variant-numeric: tabular-nums; }
.outcome p { margin: 6px 0 0; }
.outcome .reasons { margin: 2px 0 0 1.2em; padding: 0; }
.outcome .limits, .outcome .model-line { font-size: 0.85rem; }
.outcome .model-line { color: var(--body-text-color-subdued); }
.outcome-uncertain .model-line { color: #5c4400; }
"""
