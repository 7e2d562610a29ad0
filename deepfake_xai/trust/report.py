"""Tables, Markdown, figures and the model-card summary of a robustness and explanation check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..explainers.faithfulness import curve_area
from ..metrics import classification_metrics
from .assess import CLEAN, Measurements, TrustSettings
from .perturbations import Perturbation
from .sanity import PASS_BELOW
from .similarity import GRID, TOP_FRACTION

if TYPE_CHECKING:
    import pandas as pd

CARD_FIELDS = ("perturbation", "level", "accuracy", "roc_auc", "ece", "n")
_TEXT_COLUMNS = frozenset(
    ("detector", "explainer", "layer", "perturbation", "level", "down_to", "sanity_passed")
)
#: The headline columns of the verdicts table (one row per detector x explainer x layer).
VERDICT_COLUMNS = (
    "detector",
    "explainer",
    "layer",
    "deletion_auc",
    "deletion_auc_random",
    "insertion_auc",
    "insertion_auc_random",
    "stability",
    "stability_geometric",
    "sanity_similarity",
    "sanity_passed",
)
FIGURES = ("robustness", "stability", "faithfulness", "sanity")


@dataclass
class TrustReport:
    """Robustness curves and explanation checks for several detectors (see ``docs/evaluate.md``).

    Each table is a DataFrame (None when not measured): ``robustness`` per detector x level,
    ``stability`` per detector x explainer x layer x level, ``faithfulness`` and ``sanity``
    (per cascade stage) per detector x explainer x layer, ``verdicts`` one row per detector x
    explainer x layer with the headline numbers and the sanity pass/fail flag.
    """

    dataset: str
    settings: dict[str, Any]
    robustness: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    faithfulness: pd.DataFrame | None = None
    sanity: pd.DataFrame | None = None
    verdicts: pd.DataFrame | None = None
    curves: dict[tuple[str, str, str], dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        measured: Measurements,
        settings: TrustSettings,
        dataset: str,
    ) -> TrustReport:
        """Aggregate raw measurements into the report's tables."""
        report = cls(
            dataset=dataset,
            settings=_settings(settings, measured),
            seconds={k: round(v, 3) for k, v in measured.seconds.items()},
            errors=dict(measured.errors),
        )
        if settings.robustness:
            report.robustness = _robustness(measured, settings.perturbations)
        if settings.explainers and measured.explained:
            report.stability = _stability(measured, settings.perturbations)
            report.faithfulness, report.curves = _faithfulness(measured)
            report.sanity = _sanity(measured)
            report.verdicts = _verdicts(report)
        return report

    # -- outputs ----------------------------------------------------------------------------
    def card(self, detector: str) -> dict[str, Any]:
        """``metadata["robustness"]`` for ``detector``'s checkpoint (the app's About tab)."""
        if self.robustness is None:
            raise ValueError("no robustness curves were measured (run with robustness on)")
        rows = self.robustness[self.robustness["detector"] == detector]
        if rows.empty:
            raise ValueError(f"no robustness rows for detector {detector!r}")
        return {
            "dataset": self.dataset,
            "rows": [
                {
                    "perturbation": str(r["perturbation"]),
                    "level": str(r["level"]),
                    "accuracy": float(r["accuracy"]),
                    "roc_auc": None if _missing(r["roc_auc"]) else float(r["roc_auc"]),
                    "ece": float(r["ece"]),
                    "n": int(r["n"]),
                }
                for r in rows.to_dict(orient="records")
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, every table as a list of rows, mean curves, timing."""
        out: dict[str, Any] = {"dataset": self.dataset, "settings": self.settings}
        if self.robustness is not None:
            out["robustness"] = _records(self.robustness)
        explanations = {
            name: _records(table)
            for name, table in (
                ("verdicts", self.verdicts),
                ("stability", self.stability),
                ("faithfulness", self.faithfulness),
                ("sanity", self.sanity),
            )
            if table is not None
        }
        if explanations:
            explanations["curves"] = [
                {"detector": d, "explainer": e, "layer": lyr, **curves}
                for (d, e, lyr), curves in self.curves.items()
            ]
            out["explanations"] = explanations
        out["seconds"] = self.seconds
        return out

    def to_markdown(self, digits: int = 3) -> str:
        parts = []
        if self.robustness is not None:
            parts.append(_robustness_markdown(self.robustness, digits))
        if self.verdicts is not None:
            parts.append(_explanations_markdown(self, digits))
        timing = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items() if v)
        parts.append(f"Time spent: {timing}.\n")
        return "\n".join(parts)

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures by name (only those whose measurements exist)."""
        from . import figures

        out = {}
        if self.robustness is not None:
            out["robustness"] = figures.robustness_figure(self.robustness)
        if self.stability is not None:
            out["stability"] = figures.stability_figure(self.stability)
        if self.curves:
            out["faithfulness"] = figures.faithfulness_figure(self.curves)
        if self.sanity is not None:
            out["sanity"] = figures.sanity_figure(self.sanity)
        return out


# -- aggregation ------------------------------------------------------------------------------
def _settings(settings: TrustSettings, measured: Measurements) -> dict[str, Any]:
    return {
        "seed": settings.seed,
        "perturbations": [
            {"perturbation": p.kind, "level": p.level, "description": p.describe()}
            for p in settings.perturbations
        ],
        "explainers": list(settings.explainers),
        "layers": list(settings.layers),
        "explained_images": measured.explained,
        "deletion_steps": settings.steps,
        "deletion_baseline": settings.baseline,
        "comparison_grid": GRID,
        "top_fraction": TOP_FRACTION,
        "sanity_pass_below": PASS_BELOW,
        "heatmap_target": "the class predicted on the clean image",
    }


def _robustness(measured: Measurements, perturbations: list[Perturbation]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    levels = [CLEAN, *(p for p in perturbations if not p.geometric)]
    detectors = dict.fromkeys(d for d, _ in measured.predictions)
    for detector in detectors:
        clean_means = None
        for level in levels:
            parts = measured.predictions.get((detector, level.label))
            if not parts:
                continue
            _, y, p, flipped, distance = (
                np.concatenate(column) for column in zip(*parts, strict=True)
            )
            metrics = classification_metrics(y, p)
            means = [float(p[y == c].mean()) if (y == c).any() else math.nan for c in (0, 1)]
            clean_means = means if clean_means is None else clean_means
            rows.append(
                {
                    "detector": detector,
                    "perturbation": level.kind,
                    "level": level.level,
                    "description": level.describe(),
                    "accuracy": metrics["accuracy"],
                    "roc_auc": metrics["roc_auc"],
                    "ece": metrics["ece"],
                    "mean_p_fake_real": means[0],
                    "mean_p_fake_fake": means[1],
                    "shift_real": means[0] - clean_means[0],
                    "shift_fake": means[1] - clean_means[1],
                    "flipped": float(flipped.mean()),
                    "flagged_uncertain": _flagged(distance),
                    "n": metrics["n"],
                }
            )
    return pd.DataFrame(rows)


def _stability(measured: Measurements, perturbations: list[Perturbation]) -> pd.DataFrame:
    import pandas as pd

    described = {p.label: p for p in perturbations}
    rows = []
    for (detector, explainer, layer, label), parts in measured.stability.items():
        correlation, overlap = (np.concatenate(column) for column in zip(*parts, strict=True))
        level = described[label]
        rows.append(
            {
                "detector": detector,
                "explainer": explainer,
                "layer": layer,
                "perturbation": level.kind,
                "level": level.level,
                "rank_correlation": _nanmean(correlation),
                "top10_overlap": float(overlap.mean()),
                "n": int(overlap.size),
            }
        )
    return pd.DataFrame(rows)


def _faithfulness(measured: Measurements):
    import pandas as pd

    rows, curves = [], {}
    for key, parts in measured.curves.items():
        deletion, insertion, random_deletion, random_insertion = (
            np.concatenate(column) for column in zip(*parts, strict=True)
        )
        areas = {
            name: curve_area(curve)
            for name, curve in (
                ("deletion", deletion),
                ("insertion", insertion),
                ("deletion_random", random_deletion),
                ("insertion_random", random_insertion),
            )
        }
        detector, explainer, layer = key
        rows.append(
            {
                "detector": detector,
                "explainer": explainer,
                "layer": layer,
                "deletion_auc": float(areas["deletion"].mean()),
                "deletion_auc_random": float(areas["deletion_random"].mean()),
                "insertion_auc": float(areas["insertion"].mean()),
                "insertion_auc_random": float(areas["insertion_random"].mean()),
                "deletion_beats_random": float(
                    (areas["deletion"] < areas["deletion_random"]).mean()
                ),
                "insertion_beats_random": float(
                    (areas["insertion"] > areas["insertion_random"]).mean()
                ),
                "n": int(deletion.shape[0]),
            }
        )
        curves[key] = {
            "deletion": deletion.mean(axis=0).round(5).tolist(),
            "insertion": insertion.mean(axis=0).round(5).tolist(),
            "deletion_random": random_deletion.mean(axis=0).round(5).tolist(),
            "insertion_random": random_insertion.mean(axis=0).round(5).tolist(),
        }
    return pd.DataFrame(rows), curves


def _sanity(measured: Measurements) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for (detector, explainer, layer, index), parts in measured.sanity.items():
        correlation, overlap = (np.concatenate(column) for column in zip(*parts, strict=True))
        stage = measured.stages[detector][index]
        rows.append(
            {
                "detector": detector,
                "explainer": explainer,
                "layer": layer,
                "stage": index,
                "randomised": stage.randomised,
                "of": stage.total,
                "down_to": stage.deepest,
                "rank_correlation": _nanmean(correlation),
                "top10_overlap": float(overlap.mean()),
                "n": int(overlap.size),
            }
        )
    return pd.DataFrame(rows)


def _verdicts(report: TrustReport) -> pd.DataFrame:
    """One row per detector x explainer x layer: the headline of each check."""
    import pandas as pd

    rows = []
    for f in report.faithfulness.to_dict(orient="records"):
        key = (f["detector"], f["explainer"], f["layer"])
        stable = report.stability[
            (report.stability["detector"] == key[0])
            & (report.stability["explainer"] == key[1])
            & (report.stability["layer"] == key[2])
        ]
        sanity = report.sanity[
            (report.sanity["detector"] == key[0])
            & (report.sanity["explainer"] == key[1])
            & (report.sanity["layer"] == key[2])
        ].sort_values("stage")
        geometric = stable["perturbation"].isin(("shift", "flip"))
        final = float(sanity["rank_correlation"].iloc[-1]) if len(sanity) else math.nan
        rows.append(
            {
                "detector": key[0],
                "explainer": key[1],
                "layer": key[2],
                "deletion_auc": f["deletion_auc"],
                "deletion_auc_random": f["deletion_auc_random"],
                "insertion_auc": f["insertion_auc"],
                "insertion_auc_random": f["insertion_auc_random"],
                "stability": _nanmean(stable.loc[~geometric, "rank_correlation"].to_numpy()),
                "stability_geometric": _nanmean(
                    stable.loc[geometric, "rank_correlation"].to_numpy()
                ),
                "sanity_similarity": final,
                "sanity_passed": bool(final < PASS_BELOW) if not math.isnan(final) else None,
            }
        )
    return pd.DataFrame(rows)


# -- markdown ---------------------------------------------------------------------------------
def _robustness_markdown(table: pd.DataFrame, digits: int) -> str:
    lines = [
        "## Robustness",
        "",
        "Accuracy, ROC AUC and calibration error (ECE) as the images are degraded before the "
        "detector sees them; mean P(fake) per class and its shift from the clean images; "
        "`flipped`: share of verdicts that changed; `flagged_uncertain`: share whose distance "
        "score says they are unlike the faces the detector learnt from (detectors with "
        "reliability statistics).",
        "",
    ]
    columns = (
        "detector",
        "perturbation",
        "level",
        "accuracy",
        "roc_auc",
        "ece",
        "mean_p_fake_real",
        "shift_real",
        "mean_p_fake_fake",
        "shift_fake",
        "flipped",
        "flagged_uncertain",
        "n",
    )
    lines.append(_table(table, columns, digits))
    return "\n".join(lines)


def _explanations_markdown(report: TrustReport, digits: int) -> str:
    lines = [
        "## Can the explanations be trusted?",
        "",
        f"On {report.settings['explained_images']} images. Deletion AUC: lower is more faithful; "
        "insertion AUC: higher is; `_random` is the same test with a random map. Stability: mean "
        "rank correlation between the map of the clean image and of each degraded copy "
        "(`_geometric`: shifted and flipped, mapped back); 1 = unchanged. Sanity: rank "
        f"correlation with the maps of a fully randomised model; it passes below {PASS_BELOW}.",
        "",
        _table(report.verdicts, VERDICT_COLUMNS, digits),
        "### Heatmap stability per level",
        "",
        _table(
            report.stability,
            (
                "detector",
                "explainer",
                "layer",
                "perturbation",
                "level",
                "rank_correlation",
                "top10_overlap",
                "n",
            ),
            digits,
        ),
        "### Sanity check: similarity to the intact model's maps as layers are randomised",
        "",
        _table(
            report.sanity,
            (
                "detector",
                "explainer",
                "layer",
                "randomised",
                "of",
                "down_to",
                "rank_correlation",
                "top10_overlap",
            ),
            digits,
        ),
    ]
    return "\n".join(lines)


def _table(frame: pd.DataFrame, columns: tuple[str, ...], digits: int) -> str:
    def cell(value: Any) -> str:
        if _missing(value):
            return "-"
        if isinstance(value, (bool, np.bool_)):
            return "pass" if value else "FAIL"
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" if c in _TEXT_COLUMNS else "---:" for c in columns) + "|"
    body = [
        "| " + " | ".join(cell(r[c]) for c in columns) + " |"
        for r in frame.to_dict(orient="records")
    ]
    return "\n".join([header, rule, *body]) + "\n"


# -- small helpers ----------------------------------------------------------------------------
def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _flagged(distance: np.ndarray) -> float:
    """The share of images whose distance score flags them (NaN: no reliability statistics)."""
    measured = np.isfinite(distance)
    return float((distance[measured] >= 1.0).mean()) if measured.any() else math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if _missing(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
