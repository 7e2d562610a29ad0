"""The self-contained HTML report of an analysis: metrics, projections, galleries, errors.

Every image is embedded as a base64 JPEG/PNG thumbnail, so the single ``report.html`` file can
be mailed or attached to an issue. Galleries show each image as the first detector saw it, then
one row per detector with its heatmap overlay for every explainer and layer that was computed.
When ``deepfake-xai evaluate --robustness --explanations`` wrote its results into the run folder
(``<out>/trust/`` or ``<out>/``), the report summarises them and links the full tables. When the
images come from several sources (a manifest's ``group`` column or sub-folders, see
:mod:`.inputs`), a table breaks the verdicts and metrics down by source and detector. Images are
named by their path below the folder that holds them all (or by the names given), whatever
bytes the names hold.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..metrics import HEADLINE_METRICS
from ..paths import display_path
from ..reliability import THRESHOLD, UNCERTAIN, VERDICTS
from ..trust.report import VERDICT_COLUMNS
from .outcomes import EXPLAINED, NO_STATISTICS, SHORT, WORDS, p_fake_text
from .result import NO_SOURCE, AnalysisResult
from .store import REPORT, SOURCE, projection_stem

THUMBNAIL = 128
PER_GALLERY = 12
MAX_ERRORS_LISTED = 50
TRUST_FOLDERS = ("trust", ".")
TRUST_FILE = "comparison.json"
METRIC_COLUMNS = ("n", *HEADLINE_METRICS)
METRIC_WORDS = {
    "n": ("images", "labelled images that could be read"),
    "accuracy": ("accuracy", "share of images called correctly"),
    "precision": ("precision", "of the images called fake, the share that were fake"),
    "recall": ("fakes caught", "of the fakes, the share called fake (recall)"),
    "f1": ("F1", "the balance of precision and fakes caught (their harmonic mean)"),
    "roc_auc": (
        "ROC AUC",
        "chance that a random fake gets a higher P(fake) than a random real photo (0.5: a coin)",
    ),
    "average_precision": (
        "average precision",
        "precision averaged over every threshold on P(fake), weighted by fakes caught",
    ),
    "eer": (
        "equal error rate",
        "the error rate at the threshold where real photos called fake and fakes missed are "
        "equally common (lower is better)",
    ),
    "ece": (
        "calibration error (ECE)",
        "how far P(fake) is from the share of fakes among images given that P(fake) "
        "(0: P(fake) means what it says)",
    ),
}
"""Each metric column: its heading in the report and what it means, in words."""
PROJECTION_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
LIMITS = (
    "A detector recognises only the kinds of fake it learnt from: images from other generators, "
    "heavy compression, filters, screenshots and re-photographed prints can fool it in either "
    "direction. No signs found is no proof that a photo is real. A heatmap shows where the "
    "evidence for this model's verdict was strongest, not which part of the image is fake. The "
    "metrics above hold for these images only, not for photos in general."
)
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.25em .5em}
th{background:#f4f4f4}td.num{text-align:right}.row{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #ddd;border-radius:4px;padding:.3em;font-size:.75em;max-width:100%}
.card .imgs{display:flex;gap:.25em;align-items:center}.card figure{margin:0;text-align:center}
.card .who{width:9em;font-size:1.1em}.card .name{max-width:14em;overflow-wrap:anywhere}
.card img{width:128px;height:128px;display:block}.muted{color:#777}
.card .why{max-width:40em;color:#8a5a00}
.fake{color:#c0392b}.real{color:#2471a3}.uncertain{color:#8a5a00}
"""


def write_report(
    result: AnalysisResult,
    path: str | os.PathLike | None = None,
    names: Mapping[str, str] | None = None,
) -> Path:
    """Write the report for ``result`` (default ``<out>/report.html``) atomically.

    ``names`` maps image paths to the names a person knows them by (say, the uploaded file for
    a face cropped into a file of its own); by default an image is named by its path below the
    folder that holds all the run's images, and the overview names that folder.
    """
    path = Path(path) if path is not None else result.out / REPORT
    folder, shown = _names(result)
    if names is not None:
        folder = None
        shown.update((p, display_path(n)) for p, n in names.items() if p in shown)
    sections = [
        _overview(result, folder),
        _outcomes(result),
        _limits(result),
        _metrics(result.summary.get("metrics", {})),
        _by_source(result.by_source()),
        _trust(result),
        _projections(result),
        *_galleries(result, shown),
        _videos(result, shown),
        _unreadable(result.errors, shown),
    ]
    body = "\n".join(s for s in sections if s)
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>deepfake-xai analysis</title><style>{CSS}</style></head>"
        f"<body><h1>deepfake-xai analysis</h1>\n{body}\n</body></html>\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _names(result: AnalysisResult) -> tuple[str | None, dict[str, str]]:
    """The folder holding every image (None for a Dataset), and path -> name shown."""
    if result.info.get("dataset") or not result.paths:
        return None, {p: p for p in result.paths}
    try:
        folder = os.path.commonpath([os.path.dirname(p) for p in result.paths])
    except ValueError:  # paths on several Windows drives
        return None, {p: display_path(p) for p in result.paths}
    return display_path(folder), {p: display_path(os.path.relpath(p, folder)) for p in result.paths}


# -- sections ---------------------------------------------------------------------------------
def _overview(result: AnalysisResult, folder: str | None) -> str:
    params = result.info["parameters"]
    summary = result.summary
    facts = {
        "images": len(result.paths),
        **({"folder": folder} if folder else {}),
        "readable": summary.get("processed", "-"),
        "unreadable": summary.get("errors", len(result.errors)),
        "detectors": ", ".join(_model(result, d) for d in result.detectors),
        "explainers": ", ".join(params["explainers"]) or "none",
        "layers": ", ".join(params["layers"]),
        "target": params["target"],
        "throughput": f"{summary.get('images_per_second', 0):.1f} images/s"
        + (f" on {summary['threads']} torch threads" if summary.get("threads") else ""),
        "status": result.status,
    }
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts.items())
    return f"<table>{rows}</table>"


def _version(result: AnalysisResult, detector: str) -> str | None:
    """The detector's model version (its checkpoint's fingerprint) as run.json records it."""
    return result.info["detectors"].get(detector, {}).get("fingerprint")


def _model(result: AnalysisResult, detector: str) -> str:
    """A detector's name with its model version, if known."""
    version = _version(result, detector)
    return f"{detector} (model {version})" if version else detector


def _statistics(result: AnalysisResult, detector: str) -> dict[str, Any] | None:
    """The detector's reliability settings as run.json records them (None: no statistics)."""
    return result.info["detectors"].get(detector, {}).get("reliability")


def _outcomes(result: AnalysisResult) -> str:
    """Per detector: its model version, its reliability statistics and how many images got
    each outcome; then what the three outcomes mean."""
    head = ["detector", "model version", "reliability statistics"]
    head += [WORDS[v] for v in VERDICTS] + ["no verdict"]
    rows = []
    for detector, counts in result.verdicts().items():
        fitted = _statistics(result, detector)
        version = _version(result, detector) or "-"
        statistics = (
            f"{fitted['method']}, flags {fitted['flag_rate']:.0%} of validation faces"
            if fitted
            else f"none: it {NO_STATISTICS}"
        )
        cells = "".join(f'<td class="num">{counts[v]}</td>' for v in (*VERDICTS, "none"))
        rows.append(
            f"<tr><td>{_e(detector)}</td><td><code>{_e(version)}</code></td>"
            f"<td>{_e(statistics)}</td>{cells}</tr>"
        )
    header = "".join(f"<th>{_e(c)}</th>" for c in head)
    note = (
        f'<p class="muted">{_e(EXPLAINED)} The distance score measures how unlike the faces '
        "the detector learnt from an image is; the model version is the start of the SHA-256 "
        "of the detector's checkpoint file.</p>"
    )
    return f"<h2>Outcomes</h2><table><tr>{header}</tr>{''.join(rows)}</table>{note}"


def _limits(result: AnalysisResult) -> str:
    """What the verdicts cannot say, and each detector's own limits from its model card."""
    own = []
    for detector in result.detectors:
        card = result.info["detectors"].get(detector, {}).get("model_card")
        limits = card.get("limits") if isinstance(card, dict) else None
        if limits:
            own.append(f"<li><strong>{_e(detector)}</strong>: {_e(limits)}</li>")
    listed = f"<ul>{''.join(own)}</ul>" if own else ""
    return f"<h2>Limits</h2><p>{_e(LIMITS)}</p>{listed}"


def _metrics(metrics: dict[str, dict[str, Any]]) -> str:
    if not metrics:
        return ""
    names = [METRIC_WORDS.get(c, (c, ""))[0] for c in METRIC_COLUMNS]
    head = "".join(f"<th>{_e(c)}</th>" for c in ("detector", *names))
    rows = []
    for detector, values in metrics.items():
        cells = "".join(f'<td class="num">{_number(values.get(c))}</td>' for c in METRIC_COLUMNS)
        rows.append(f"<tr><td>{_e(detector)}</td>{cells}</tr>")
    words = "".join(
        f"<li><strong>{_e(name)}</strong>: {_e(meaning)}</li>"
        for name, meaning in (METRIC_WORDS[c] for c in METRIC_COLUMNS if c in METRIC_WORDS)
    )
    note = (
        f'<p class="muted">Positive class: fake; threshold {THRESHOLD} on P(fake), over every '
        "labelled image read, uncertain ones included. Shares are from 0 to 1.</p>"
        f'<ul class="muted">{words}</ul>'
    )
    return f"<h2>Metrics (labelled images)</h2><table><tr>{head}</tr>{''.join(rows)}</table>{note}"


def _by_source(table: pd.DataFrame) -> str:
    """One row per source and detector (see :meth:`AnalysisResult.by_source`), when the images
    come from at least two sources."""
    if table.empty or table[SOURCE].nunique() < 2:
        return ""
    said = [c for c in table.columns if c.startswith("said_")]
    labelled = bool(table["labelled"].any())
    columns = ["source", "detector", "images", *(SHORT[c.removeprefix("said_")] for c in said)]
    columns.append("no verdict")
    if labelled:
        columns += ["accuracy", "fakes caught", "real photos called fake"]
    rows = []
    for r in table.to_dict("records"):
        counts = [r["images"], *(r[c] for c in said), r["no_verdict"]]
        if labelled:
            counts += [
                share(r["accuracy"], r["labelled"]),
                share(r["fakes_caught"], r["fakes"]),
                share(r["reals_called_fake"], r["reals"]),
            ]
        cells = "".join(f'<td class="num">{_e(c)}</td>' for c in counts)
        rows.append(
            f"<tr><td>{_e(r[SOURCE] or NO_SOURCE)}</td><td>{_e(r['detector'])}</td>{cells}</tr>"
        )
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    note = (
        '<p class="muted">Source: the manifest\'s group column, or the sub-folder an image was '
        "found in. Shares are of the labelled images of that source with a verdict.</p>"
    )
    return f"<h2>By source</h2><table><tr>{head}</tr>{''.join(rows)}</table>{note}"


def _trust(result: AnalysisResult) -> str:
    """The explanation-trust summary of ``evaluate`` when it wrote into this run folder, else
    the robustness summaries the detectors' checkpoints carry."""
    for folder in TRUST_FOLDERS:
        path = result.out / folder / TRUST_FILE
        trust = _read_json(path).get("trust") if path.is_file() else None
        if trust:
            return _trust_section(trust, Path(folder))
    cards = {
        name: config["robustness"]
        for name, config in result.info.get("detectors", {}).items()
        if isinstance(config.get("robustness"), dict)
    }
    if not cards:
        return ""
    tables = "".join(
        f"<h3>{_e(name)} (on {_e(card.get('dataset', '?'))})</h3>"
        + _rows_table(card.get("rows", []), ("perturbation", "level", "accuracy", "roc_auc", "ece"))
        for name, card in cards.items()
    )
    return f"<h2>Robustness (from the checkpoints' cards)</h2>{tables}"


def _trust_section(trust: dict[str, Any], folder: Path) -> str:
    link = (folder / "comparison.md").as_posix()
    parts = [
        "<h2>Can the explanations be trusted?</h2>",
        f"<p>Measured by <code>deepfake-xai evaluate</code> on {_e(trust.get('dataset', '?'))}; "
        f'full tables in <a href="{_e(link)}">{_e(link)}</a> and its figures.</p>',
    ]
    verdicts = (trust.get("explanations") or {}).get("verdicts")
    if verdicts:
        parts.append(_rows_table(verdicts, VERDICT_COLUMNS))
        parts.append(
            '<p class="muted">Deletion AUC: lower is more faithful, insertion AUC: higher; '
            "compare each with the random map. Stability: rank correlation of the heatmap "
            "before and after degradations (1 = unchanged). Sanity: similarity to the maps of a "
            "randomised model; a map that stays alike is not explaining the model.</p>"
        )
    robustness = trust.get("robustness")
    if robustness:
        parts.append("<h3>Robustness</h3>")
        parts.append(
            _rows_table(
                robustness,
                (
                    "detector",
                    "perturbation",
                    "level",
                    "accuracy",
                    "roc_auc",
                    "ece",
                    "flipped",
                    "flagged_uncertain",
                ),
            )
        )
    return "".join(parts)


def _rows_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_number(r.get(c))}</td>' for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _projections(result: AnalysisResult) -> str:
    figures = []
    for detector in result.detectors:
        png = result.out / f"{projection_stem(detector)}.png"
        if png.exists():
            src = _data_uri(png.read_bytes(), "png")
            figures.append(f'<figure><img src="{src}" alt="{_e(detector)} projection"></figure>')
    if not figures:
        return ""
    method = result.info["parameters"].get("projection")
    named = f" with {PROJECTION_NAMES.get(method, method)}" if method else ""
    note = (
        "<p>Each point is an image, placed by the features the detector computes just before "
        f"its verdict, reduced to two dimensions{_e(named)}: images the detector finds alike "
        "lie close together. Left, coloured by label; right, by the detector's outcome. The "
        "axes have no units, and the distance between groups means little; what matters is "
        "whether fakes and real photos form separate groups.</p>"
    )
    return (
        "<h2>Embeddings: how each detector groups the images</h2>"
        f'{note}<div class="row">{"".join(figures)}</div>'
    )


def _galleries(result: AnalysisResult, names: Mapping[str, str]) -> list[str]:
    """Galleries by outcome: said fake, no signs found, uncertain (an image goes there when any
    detector said so), and misclassified when there are labels."""
    rows = result.predictions
    rows = rows[~rows["video"]]  # videos have a section of their own
    wide = _wide(rows)
    if wide.empty:
        return []
    scored = [d for d in result.detectors if d in wide.columns]
    flagged = rows[rows["verdict"] == UNCERTAIN].groupby("index")["ood_score"].max()
    flagged = flagged[flagged.index.isin(wide.index)]
    mean = wide[scored].mean(axis=1).drop(flagged.index)
    fakes = mean[mean >= THRESHOLD].sort_values(ascending=False).index[:PER_GALLERY]
    reals = mean[mean < THRESHOLD].sort_values().index[:PER_GALLERY]
    unsure = flagged.sort_values(ascending=False, na_position="last").index[:PER_GALLERY]
    kinds = _heatmap_kinds(result)
    wide["name"] = [names.get(p, display_path(p)) for p in wide["path"]]
    outcomes = rows.set_index(["index", "detector"])
    gallery = partial(_gallery, result=result, wide=wide, outcomes=outcomes, kinds=kinds)
    out = [
        gallery("Said fake (highest P(fake) first)", fakes),
        gallery(f"{WORDS['real'].capitalize()} (lowest P(fake) first)", reals),
    ]
    if len(unsure) or any(_statistics(result, d) for d in result.detectors):
        out.append(gallery("Uncertain (furthest from the training faces first)", unsure))
    if wide["label"].notna().any():
        out.append(gallery("Misclassified", _misclassified(rows)))
    return out


def _videos(result: AnalysisResult, names: Mapping[str, str]) -> str:
    from .video_report import video_section

    return video_section(result, names)


def _unreadable(errors: pd.DataFrame, names: Mapping[str, str]) -> str:
    if errors.empty:
        return ""
    shown = errors.head(MAX_ERRORS_LISTED)
    rows = "".join(
        f"<tr><td>{_e(names.get(r.path, display_path(r.path)))}</td><td>{_e(r.reason)}</td></tr>"
        for r in shown.itertuples()
    )
    more = len(errors) - len(shown)
    tail = f'<p class="muted">and {more} more (see errors.csv)</p>' if more > 0 else ""
    return (
        f"<h2>Unreadable images ({len(errors)})</h2>"
        f"<table><tr><th>path</th><th>reason</th></tr>{rows}</table>{tail}"
    )


# -- galleries --------------------------------------------------------------------------------
def _wide(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per image some detector scored: p_fake per detector (NaN where that one gave no
    verdict; a detector that scored nothing has no column), plus path, label and source."""
    ok = predictions[predictions["error"] == ""]
    if ok.empty:
        return pd.DataFrame()
    wide = ok.pivot(index="index", columns="detector", values="p_fake")
    first = ok.drop_duplicates("index").set_index("index")
    return wide.join(first[["path", "label", SOURCE]]).dropna(subset=list(wide.columns), how="all")


def _misclassified(predictions: pd.DataFrame) -> pd.Index:
    """Labelled images some detector called fake or real against their label, the furthest
    P(fake) from the label first."""
    said = predictions[predictions["verdict"].isin(("fake", "real")) & predictions["label"].notna()]
    wrong = said[said["verdict"] != said["label"]]
    miss = (wrong["p_fake"] - (wrong["label"] == "fake")).abs()
    return miss.groupby(wrong["index"]).max().sort_values(ascending=False).index[:PER_GALLERY]


def _heatmap_kinds(result: AnalysisResult) -> list[tuple[str, str]]:
    """Every stored (explainer, layer), in the run's explainer and layer order."""
    params = result.info["parameters"]
    explainers, layers = list(params["explainers"]), list(params["layers"])

    def order(pair: tuple[str, str]) -> tuple[int, int, str]:
        e, layer = pair
        rank = explainers.index(e) if e in explainers else len(explainers)
        return rank, layers.index(layer) if layer in layers else len(layers), layer

    return sorted(result.heatmap_kinds, key=order)


def _gallery(
    title: str,
    indices: Sequence[int],
    *,
    result: AnalysisResult,
    wide: pd.DataFrame,
    outcomes: pd.DataFrame,
    kinds: list[tuple[str, str]],
) -> str:
    if len(indices) == 0:
        return f'<h2>{_e(title)}</h2><p class="muted">No image falls in this group.</p>'
    cards = "".join(_card(result, wide.loc[i], int(i), outcomes, kinds) for i in indices)
    what = ", ".join(f"{e} at layer {layer}" for e, layer in kinds) or "no heatmaps"
    return (
        f'<h2>{_e(title)}</h2><p class="muted">Image as the first detector saw it, then a row '
        f"per detector with its outcome, P(fake), distance score and each heatmap "
        f'({_e(what)}).</p><div class="row">{cards}</div>'
    )


def _card(
    result: AnalysisResult,
    row: pd.Series,
    index: int,
    outcomes: pd.DataFrame,
    kinds: list[tuple[str, str]],
) -> str:
    original = _try_image(lambda: result.image(index, result.detectors[0]))
    head = [_figure(original, "input")] if original is not None else []
    label = row["label"] if isinstance(row["label"], str) else "unknown"
    source = f"<br>source: {_e(row[SOURCE])}" if row[SOURCE] else ""
    head.append(f'<div class="name">{_e(row["name"])}<br>label: {_e(label)}{source}</div>')
    rows = [f'<div class="imgs">{"".join(head)}</div>']
    for detector in result.detectors:
        outcome = outcomes.loc[(index, detector)] if (index, detector) in outcomes.index else None
        if outcome is None or not outcome["verdict"]:
            missing = f'<div class="who">{_e(detector)}<br>no verdict</div>'
            rows.append(f'<div class="imgs">{missing}</div>')
            continue
        cells = [_outcome_cell(detector, outcome)]
        seen = _try_image(lambda d=detector: result.image(index, d)) if kinds else None
        for explainer, layer in kinds:
            picture = _heatmap_picture(result, index, detector, explainer, layer, seen)
            cells.append(_figure(picture, f"{_e(explainer)} · {_e(layer)}"))
        rows.append(f'<div class="imgs">{"".join(cells)}</div>')
        if outcome["reasons"]:
            rows.append(f'<div class="why">why uncertain: {_e(outcome["reasons"])}</div>')
    return f'<div class="card">{"".join(rows)}</div>'


def _outcome_cell(detector: str, outcome: pd.Series) -> str:
    """The detector's name, its outcome in words, P(fake) and the distance score if measured."""
    verdict = outcome["verdict"]
    distance = outcome["ood_score"]
    lines = [
        _e(detector),
        f'<b class="{verdict}">{_e(WORDS[verdict])}</b>',
        _e(p_fake_text(outcome["p_fake"])),
        *([f"distance score {distance:.2f}"] if np.isfinite(distance) else []),
    ]
    return f'<div class="who">{"<br>".join(lines)}</div>'


def _heatmap_picture(
    result: AnalysisResult,
    index: int,
    detector: str,
    explainer: str,
    layer: str,
    image: Image.Image | None,
) -> Image.Image:
    """The heatmap over the image the detector saw, or the heatmap alone without the image."""
    from ..render import heatmap_image, overlay

    values = result.heatmap(index, detector, layer, explainer)
    if image is None:
        return heatmap_image(values, size=(THUMBNAIL, THUMBNAIL))
    return overlay(image, values)


def _try_image(make: Callable[[], Image.Image]) -> Image.Image | None:
    """``make()``, or None when the image cannot be decoded (file gone, or from a Dataset)."""
    try:
        return make()
    except ValueError:
        return None


def _figure(image: Image.Image, caption: str) -> str:
    src = _data_uri(_jpeg(image), "jpeg")
    return f'<figure><img src="{src}" alt=""><figcaption>{caption}</figcaption></figure>'


def _jpeg(image: Image.Image) -> bytes:
    thumb = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def share(value: float, total: int) -> str:
    """A share of ``total`` images as ``"75% of 4"``, or ``"-"`` when there is none."""
    return f"{value:.0%} of {total}" if total else "-"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else _e(value)


def _e(value: Any) -> str:
    return html.escape(str(value))
