"""The "About the detectors" tab: what each loaded detector is, how it was trained, how it scored.

Everything shown comes from the detector object and its checkpoint metadata (the ``training``
and ``metrics`` blocks written by :func:`deepfake_xai.training.train`), never from text kept here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from ..detectors import Detector
from ..metrics import HEADLINE_METRICS
from .text import display_name

# Shown first (and alone, when present); anything else a checkpoint stores stays available.
METRICS = (*HEADLINE_METRICS, "loss", "n")
TRAINING = (
    "epochs_run",
    "best_epoch",
    "image_size",
    "batch_size",
    "lr",
    "optimizer",
    "pretrained_init",
    "augment",
    "n_per_split",
    "seconds",
    "device",
)


def build_about_tab(detectors: Sequence[Detector]) -> None:
    """One card per detector, and a metrics table side by side when several are loaded."""
    table = metrics_table(detectors)
    if len(detectors) > 1 and not table.empty:
        gr.Markdown("### Stored evaluation metrics")
        gr.Dataframe(table, interactive=False, label="metrics per detector")
    with gr.Row():
        for detector in detectors:
            with gr.Column(min_width=280):
                gr.Markdown(detector_card(detector))


def detector_card(detector: Detector) -> str:
    """Markdown describing one detector: architecture, size, input, preprocessing, provenance."""
    h = detector.harmonization
    crop = f", face crop (margin {h.face_margin:g})" if h.face_crop else ""
    jpeg = f", JPEG q{h.jpeg_quality}" if h.jpeg_quality else ""
    lines = [
        f"### {_md(display_name(detector.name, detector.architecture))}",
        f"- **registered as**: {_md(detector.name)}",
        f"- **architecture**: {_md(detector.architecture)}",
        f"- **parameters**: {detector.num_parameters / 1e6:.2f} M",
        f"- **input**: {detector.input_size} x {detector.input_size} px, "
        f"labels {' / '.join(detector.labels)} (one logit, sigmoid = P(fake))",
        f"- **harmonisation**: {h.fit.replace('_', ' ')}, {h.resize} resize{crop}{jpeg}",
    ]
    trained_on = detector.metadata.get("trained_on")
    training = _preferred(detector.metadata.get("training"), TRAINING)
    lines.append("\n**Training**\n")
    if trained_on:
        lines.append(f"- **data**: {_md(trained_on)}")
    lines.extend(_bullets(training) if training else ["- no training record in the checkpoint"])
    metrics = _preferred(detector.metadata.get("metrics"), METRICS)
    lines.append("\n**Stored metrics**\n")
    lines.extend(_bullets(metrics) if metrics else ["- none stored"])
    return "\n".join(lines)


def metrics_table(detectors: Sequence[Detector]) -> pd.DataFrame:
    """One row per detector, one column per stored scalar metric (nested keys dotted)."""
    rows = {}
    for detector in detectors:
        metrics = _preferred(detector.metadata.get("metrics"), METRICS)
        if metrics:
            rows[display_name(detector.name, detector.architecture)] = flatten(metrics)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("detector").reset_index()
    return table.round(4)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys; lists are shown as text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ", ".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def _preferred(data: Any, keys: Sequence[str]) -> Any:
    """The entries of ``data`` named in ``keys`` (in that order), or all of it if none are."""
    if not isinstance(data, Mapping):
        return data
    chosen = {k: data[k] for k in keys if k in data}
    return chosen or dict(data)


def _bullets(data: Any) -> list[str]:
    if not isinstance(data, Mapping):
        return [f"- {_md(str(data))}"]
    return [f"- **{_md(k)}**: {_md(_fmt(v))}" for k, v in flatten(data).items()]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md(text: str) -> str:
    """Checkpoint text shown as plain text, not as markup."""
    return html.escape(str(text)).replace("*", r"\*").replace("_", r"\_").replace("`", "'")
