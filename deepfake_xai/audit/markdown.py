"""Markdown rendering of an :class:`~deepfake_xai.audit.report.AuditReport`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .features import FEATURES
from .shortcut import ShortcutScore

if TYPE_CHECKING:
    from .report import AuditReport

MAX_ERRORS_LISTED = 50


def render(report: AuditReport, plotted: set[str]) -> str:
    """The whole report as Markdown; ``plotted`` features get a link to their histogram."""
    counts = report.counts
    lines = [
        f"# Dataset audit: `{report.source}`",
        "",
        f"**Verdict.** {report.verdict}",
        "",
        f"Images audited: {counts['real']} real, {counts['fake']} fake"
        f" ({len(report.errors)} unreadable).",
        "",
        "| score | balanced accuracy | ROC-AUC | folds |",
        "|---|---:|---:|---:|",
        _score_row("shortcut (file, pixel statistics, framing)", report.shortcut),
        _score_row("file names only", report.filename),
        "",
        "A gradient-boosting classifier sees only the features below, never the face; 50% is "
        "chance. Each feature is also scored alone (out-of-fold balanced accuracy). With "
        f"{report.shortcut.n_samples} images, scores from {report.shortcut.leak_level:.0%} count "
        f"as a leak and from {report.shortcut.weak_level:.0%} as a weak signal.",
        "",
    ]
    if report.shortcut.group_scores:
        ranked = sorted(report.shortcut.group_scores.items(), key=lambda kv: -kv[1])
        groups = ", ".join(f"{name} {score:.0%}" for name, score in ranked)
        lines += [f"Scored by feature group (balanced accuracy): {groups}.", ""]
    lines += _leaks(report, plotted)
    lines += ["## Recommendations", ""]
    advice = report.recommendations() or ["Nothing to fix: no feature separates the classes."]
    lines += [f"- {a}" for a in advice] + [""]
    lines += _all_features(report, plotted)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    if report.errors:
        lines += _errors(report.errors)
    return "\n".join(lines)


def _score_row(name: str, score: ShortcutScore) -> str:
    return f"| {name} | {score.accuracy:.1%} | {score.roc_auc:.3f} | {score.folds} |"


def _leaks(report: AuditReport, plotted: set[str]) -> list[str]:
    leaks = report.leaking_features
    if not leaks:
        level = report.shortcut.leak_level
        return [f"No single feature predicts the label with {level:.0%} accuracy or more.", ""]
    lines = [
        "## Features that leak the label",
        "",
        "| feature | alone predicts the label with | real | fake |",
        "|---|---:|---|---|",
    ]
    for name, score in leaks:
        stats = report.per_class[name]
        lines.append(
            f"| {name} | {score:.0%} | {_cell(stats.get('real'))} | {_cell(stats.get('fake'))} |"
        )
    lines.append("")
    lines += [f"![{name}](histograms/{name}.png)" for name, _ in leaks if name in plotted]
    return lines + [""]


def _all_features(report: AuditReport, plotted: set[str]) -> list[str]:
    scores = {**report.shortcut.feature_scores, **report.filename.feature_scores}
    lines = [
        "## All features",
        "",
        "| feature | group | alone | real | fake | what |",
        "|---|---|---:|---|---|---|",
    ]
    for name, score in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        stats = report.per_class[name]
        link = f"[{name}](histograms/{name}.png)" if name in plotted else name
        lines.append(
            f"| {link} | {FEATURES[name].group} | {score:.0%} | {_cell(stats.get('real'))} "
            f"| {_cell(stats.get('fake'))} | {FEATURES[name].description} |"
        )
    return lines + [""]


def _cell(stats: dict[str, Any] | None) -> str:
    """A short per-class summary: mean ± std (and missing) or the most common values."""
    if not stats:
        return "-"
    if "top" in stats:
        return ", ".join(f"{_escape(k)} {v:.0%}" for k, v in list(stats["top"].items())[:2])
    if stats["n"] == 0:
        return "all missing"
    text = f"{stats['mean']:.4g} ± {stats['std']:.2g}"
    return text + (f" ({stats['missing']} missing)" if stats["missing"] else "")


def _escape(text: str, limit: int = 40) -> str:
    """Safe inside a table cell, and short."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _errors(errors: list[tuple[str, str]]) -> list[str]:
    lines = [f"## Unreadable files ({len(errors)})", "", "| file | reason |", "|---|---|"]
    lines += [f"| `{p}` | {_escape(r, 200)} |" for p, r in errors[:MAX_ERRORS_LISTED]]
    if len(errors) > MAX_ERRORS_LISTED:
        lines.append(f"| ... | {len(errors) - MAX_ERRORS_LISTED} more in errors.csv |")
    return lines + [""]
