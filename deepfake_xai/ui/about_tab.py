"""The "About" tab: a model card per loaded detector, how to read the app, what happens to uploads.

Everything said about a detector comes from the detector object and its checkpoint metadata: the
``model_card`` block (plain-text fields such as ``summary``, ``training_data``, ``licence``,
``intended_use``, ``limits``, ``limits_short``, ``metrics_text``, ``reliability_text``), the
held-out ``metrics``, the ``robustness`` summary written by ``evaluate``, the ``training`` record,
its fitted reliability statistics and its fingerprint; never from text kept here about a
particular model. Above the cards, the ``comparison`` blocks of the detectors side by side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import gradio as gr

from ..detectors import Detector
from .comparison_table import comparison_tables
from .text import display_name, plain

THRESHOLD_TEXT = (
    "P(fake) of 0.5 or more is reported as **signs of generation found**, below 0.5 as **no signs "
    "of generation found**; but **cannot tell** whenever the face is unlike those it learnt "
    "from. P(fake) is the detector's probability, not a guarantee."
)
DEFAULT_USE = (
    "Research and teaching: a second opinion on whether a face photo was generated, with a "
    "heatmap of the evidence. Not for decisions about people on its own."
)
DEFAULT_LIMITS = (
    "Trained on one kind of real and fake photo: other generators, heavy compression, filters, "
    "screenshots and re-photographed images can fool it in either direction. Judges faces only."
)
METHOD_WORDS = {
    "mahalanobis": "Mahalanobis distance to its class means",
    "knn": "distance to the nearest of its training faces",
}
ROBUSTNESS_NAMES = {
    "clean": "unchanged",
    "jpeg": "JPEG compression",
    "blur": "blur",
    "resize": "downscaled",
    "noise": "noise",
    "social": "social-media style (resize + JPEG)",
}


def build_about_tab(detectors: Sequence[Detector], uploads_note: str) -> None:
    """The detectors side by side (when at least two carry a ``comparison`` block, see
    :mod:`.comparison_table`), one model card per detector, then how to read the app and what
    happens to uploads."""
    side_by_side = comparison_tables(detectors)
    if side_by_side:
        gr.Markdown(side_by_side, elem_id="about-comparison")
    with gr.Row():
        for detector in detectors:
            with gr.Column(min_width=300, elem_classes=["model-card"]):
                gr.Markdown(model_card(detector))
    gr.Markdown(HOW_TO_READ + "\n\n### Your uploads\n\n" + uploads_note, elem_id="about-help")


HOW_TO_READ = """### How to read the app

- **Three outcomes**, one per detector next to every verdict:
  - **Signs of generation found**: P(fake) is 0.5 or more on a face like those the detector
    learnt from. Evidence to check, not proof.
  - **No signs of generation found**: P(fake) is below 0.5 on such a face. This is not proof that
    the photo is authentic: a detector only recognises the kinds of fake it learnt from (see
    the limits on its card).
  - **Cannot tell**: the face is unlike the faces the detector learnt from (or smaller, or
    compressed harder, than any it saw), so its verdict would be a guess. The page says why.
    A detector whose card says it has no reliability statistics never says this: read its
    verdicts on unusual photos with care.
- **P(fake)**: the detector's probability, from 0 to 1, that the face was generated, written
  "P(fake) 0.93". It is not certainty: on photos unlike its training faces a detector can be
  confidently wrong, which is why "cannot tell" exists. The card above says how often it was
  right on photos it never saw in training (with several detectors loaded, they can disagree).
- **Heatmap**: for a verdict, where the evidence for it is strongest (red) and weakest (blue),
  relative to each image's own strongest point; for "cannot tell", only where the detector
  looked, not evidence. When no region stands out, none is drawn. When a second method ranks
  the regions differently, the page says the map is a rough hint.
- **Face first**: faces are found (MTCNN) before any verdict, and the largest is framed like the
  training photos. An image without a face gets no verdict.
- **Batch tab**: many images or a .zip at once; names starting `real_` / `fake_` or folders
  `real/` / `fake/` give labels, and then accuracy, ROC AUC and a confusion matrix."""


def model_card(detector: Detector) -> str:
    """Markdown model card: training data, held-out metrics in words, use, limits, threshold."""
    meta = detector.metadata or {}
    card = _card(detector)
    title = display_name(detector.name, detector.architecture)
    version = f", version `{detector.fingerprint}`" if detector.fingerprint else ""
    lines = [
        f"## {plain(title)}",
        f"_{plain(detector.architecture)}, {detector.num_parameters / 1e6:.1f} M parameters, "
        f"looks at {detector.input_size} x {detector.input_size} px; registered as "
        f"`{detector.name}`{version}._",
        "",
    ]
    if card.get("summary"):
        lines.append(plain(card["summary"]) + "\n")
    lines.append("**Training data**: " + plain(card.get("training_data") or _trained_on(meta)))
    if card.get("licence"):
        lines.append(f"\n**Licence**: {plain(card['licence'])}")
    lines.append("\n**How well it did on held-out images**\n")
    test = meta.get("test_metrics")
    if card.get("metrics_text"):  # the card's own words for this checkpoint's figures
        lines.append(plain(card["metrics_text"]))
    elif isinstance(test, Mapping):  # the shipped detectors: their held-out test split
        lines.extend(metrics_in_words(test))
    else:
        lines.extend(metrics_in_words(_held_out(meta.get("metrics"))))
        if _held_out(meta.get("metrics")) is meta.get("metrics"):
            lines.append(
                "- These are validation images, used during training to choose the epoch: "
                "expect a little less on truly new photos."
            )
    lines.append(f"\n**Decision threshold**: {THRESHOLD_TEXT}")
    lines.append(f"\n**Intended use**: {plain(card.get('intended_use') or DEFAULT_USE)}")
    lines.append(f"\n**Limits**: {plain(card.get('limits') or DEFAULT_LIMITS)}")
    lines.append(f'\n**When it says "cannot tell"**: {reliability_text(detector)}')
    if card.get("reliability_text"):
        lines.append("\n" + plain(card["reliability_text"]))
    lines.extend(robustness_lines(meta.get("robustness")))
    training = meta.get("training")
    if isinstance(training, Mapping):
        lines.append("\n**Training run**: " + plain(_training_line(training, meta.get("init"))))
    return "\n".join(lines)


def limits_line(detector: Detector) -> str:
    """The detector's limits in one line: its card's ``limits_short``, else the first sentence
    of its ``limits`` (or of the default limits)."""
    card = _card(detector)
    if card.get("limits_short"):
        return str(card["limits_short"])
    limits = str(card.get("limits") or DEFAULT_LIMITS)
    return re.split(r"(?<=[.!?])\s+(?=[A-Z(])", limits.strip(), maxsplit=1)[0]


def reliability_text(detector: Detector) -> str:
    """How the detector decides it cannot tell, from its fitted statistics, in words."""
    reliability = detector.reliability
    if reliability is None:
        return (
            "never: this detector carries no statistics of the faces it learnt from, so it "
            "cannot say when a photo is unlike them; read its verdicts on unusual photos with care."
        )
    fitted = reliability.fitted_on
    train = (
        f"its {fitted['n_train']:,} training faces"
        if fitted.get("n_train")
        else "its training faces"
    )
    val = f"{fitted['n_val']:,} validation faces" if fitted.get("n_val") else "its validation faces"
    layers = len(reliability.layers)
    text = (
        f"when a face's inner features are further from those of {train} "
        f"({METHOD_WORDS.get(reliability.method, reliability.method)}, on {layers} "
        f"layer{'s' if layers > 1 else ''}) than all but {reliability.flag_rate:.0%} of {val}. "
        f"So about {reliability.flag_rate:.0%} of ordinary faces of its own kind are flagged too; "
        "the distance score in the results is 1 at that line."
    )
    checks = []
    if reliability.min_face_side:
        checks.append(f"a face smaller than {reliability.min_face_side} px across")
    if reliability.min_jpeg_quality:
        checks.append(f"a JPEG compressed below quality {reliability.min_jpeg_quality}")
    if checks:
        text += f" It also cannot tell on {' or on '.join(checks)}: it saw none in training."
    return text


def metrics_in_words(metrics: Mapping[str, Any] | None) -> list[str]:
    """Bullets that say what each stored number means for a user."""
    if not metrics:
        return [
            "- No held-out metrics are stored with this detector: treat its verdicts as untested."
        ]
    out = []
    n = metrics.get("n")
    on = f" of {int(n)} held-out images" if n else ""
    if _number(metrics.get("accuracy")):
        out.append(f"- **Accuracy {metrics['accuracy']:.1%}**: right on that share{on}.")
    if _number(metrics.get("precision")) and _number(metrics.get("recall")):
        out.append(
            f"- **Precision {metrics['precision']:.1%}, recall {metrics['recall']:.1%}**: of the "
            f"images it called fake, {metrics['precision']:.0%} were; of the fakes, it caught "
            f"{metrics['recall']:.0%}."
        )
    if _number(metrics.get("roc_auc")):
        out.append(
            f"- **ROC AUC {metrics['roc_auc']:.3f}**: the chance that a random fake gets a higher "
            "P(fake) than a random real photo (0.5 is guessing, 1 is perfect)."
        )
    if _number(metrics.get("eer")):
        out.append(
            f"- **Equal error rate {metrics['eer']:.1%}**: at the threshold where it wrongly flags "
            "as many real photos as it misses fakes, this is how often each happens."
        )
    if _number(metrics.get("ece")):
        out.append(
            f"- **Calibration error {metrics['ece']:.3f}**: how far its P(fake) is from the share "
            "of faces that really are fake, on average (0 means that of the faces given "
            "P(fake) 0.9, 9 in 10 are fake)."
        )
    return out or ["- The stored metrics hold no accuracy figures."]


def robustness_lines(robustness: Any) -> list[str]:
    """A small table of the ``robustness`` summary (accuracy / ROC AUC per perturbation)."""
    if not isinstance(robustness, Mapping) or not robustness.get("rows"):
        return []
    lines = [
        f"\n**Robustness** (on {plain(robustness.get('dataset', 'held-out images'))}): accuracy "
        "when the photo is changed as a platform would change it.\n",
        "| change | level | accuracy | ROC AUC | images |",
        "|---|---|---:|---:|---:|",
    ]
    for row in robustness["rows"]:
        auc = f"{row['roc_auc']:.3f}" if _number(row.get("roc_auc")) else "n/a"
        name = ROBUSTNESS_NAMES.get(row.get("perturbation"), row.get("perturbation"))
        lines.append(
            f"| {plain(name)} | {plain(row.get('level', ''))} | {row['accuracy']:.1%} | {auc} "
            f"| {row.get('n', '')} |"
        )
    return lines


def _card(detector: Detector) -> Mapping[str, Any]:
    card = (detector.metadata or {}).get("model_card")
    return card if isinstance(card, Mapping) else {}


def _held_out(metrics: Any) -> Mapping[str, Any] | None:
    """The metrics block itself, or its ``test`` / ``val`` part when nested."""
    if not isinstance(metrics, Mapping):
        return None
    if "accuracy" in metrics:
        return metrics
    for key in ("test", "held_out", "val", "validation"):
        if isinstance(metrics.get(key), Mapping):
            return metrics[key]
    return None


def _trained_on(meta: Mapping[str, Any]) -> str:
    """The training data's folder name only (never a server path), or 'not recorded'."""
    trained_on = meta.get("trained_on")
    if not trained_on:
        return "not recorded in the checkpoint."
    return ", ".join(PurePath(part.strip()).name for part in str(trained_on).split(","))


def _training_line(training: Mapping[str, Any], init: Any = None) -> str:
    """Epochs, size, start, time and device; ``init`` says which trained detector it started
    from, if any (its first words: "transplanted from efficientnet_lite0 <version>")."""
    parts = []
    if training.get("epochs_run"):
        parts.append(f"{training['epochs_run']} epochs")
    if training.get("image_size"):
        parts.append(f"{training['image_size']} px")
    if init:
        parts.append(str(init).split(" (")[0])
    elif training.get("pretrained_init") is not None:
        parts.append("ImageNet start" if training["pretrained_init"] else "from scratch")
    if training.get("seconds"):
        parts.append(f"{training['seconds'] / 60:.0f} min")
    if training.get("device"):
        parts.append(f"on {training['device']}")
    return ", ".join(parts) or "no details recorded"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
