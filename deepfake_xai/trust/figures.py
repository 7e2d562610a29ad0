"""Figures of a :class:`~deepfake_xai.trust.report.TrustReport` (matplotlib, no pyplot state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .sanity import PASS_BELOW

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_ROBUSTNESS_ROWS = (
    ("accuracy", "accuracy"),
    ("roc_auc", "ROC AUC"),
    ("mean_p_fake", "mean P(fake)"),
)


def robustness_figure(table: pd.DataFrame) -> Figure:
    """One column per perturbation: accuracy, ROC AUC and mean P(fake) per class by level,
    from clean to the strongest level, one line per detector."""
    import pandas as pd
    from matplotlib.figure import Figure

    kinds = [k for k in dict.fromkeys(table["perturbation"]) if k != "clean"] or ["clean"]
    fig = Figure(figsize=(3.1 * len(kinds), 7.2), layout="constrained")
    axes = fig.subplots(len(_ROBUSTNESS_ROWS), len(kinds), squeeze=False)
    for column, kind in enumerate(kinds):
        for detector, rows in table.groupby("detector", sort=False):
            clean = rows[rows["perturbation"] == "clean"]
            levels = rows[rows["perturbation"] == kind]
            levels = levels.iloc[np.argsort([_strength(kind, lvl) for lvl in levels["level"]])]
            series = pd.concat([clean, levels]) if kind != "clean" else clean
            x = np.arange(len(series))
            labels = ["clean", *levels["level"]] if kind != "clean" else ["clean"]
            for row, (key, title) in enumerate(_ROBUSTNESS_ROWS):
                ax = axes[row, column]
                if key == "mean_p_fake":
                    line = ax.plot(x, series["mean_p_fake_fake"], "o-", label=f"{detector} fake")
                    ax.plot(
                        x,
                        series["mean_p_fake_real"],
                        "s--",
                        color=line[0].get_color(),
                        label=f"{detector} real",
                    )
                    ax.set_ylim(0, 1)
                else:
                    values = series[key].astype(float)
                    ax.plot(x, values, "o-", label=detector)
                    ax.set_ylim(min(0.45, np.nanmin(values.to_numpy(), initial=1) - 0.05), 1.01)
                ax.set_xticks(x, labels, rotation=30 if kind == "social" else 0)
                ax.set_ylabel(title if column == 0 else "")
                ax.grid(alpha=0.3)
        axes[0, column].set_title(_KIND_TITLES.get(kind, kind))
    axes[0, 0].legend(fontsize="small")
    axes[-1, 0].legend(fontsize="x-small")
    return fig


def stability_figure(table: pd.DataFrame) -> Figure:
    """Per detector, mean rank correlation (clean vs degraded map) per explainer x level."""
    from matplotlib.figure import Figure

    detectors = list(dict.fromkeys(table["detector"]))
    levels = list(dict.fromkeys(zip(table["perturbation"], table["level"], strict=True)))
    fig = Figure(
        figsize=(1.0 + 0.55 * len(levels), 1.2 + 1.6 * len(detectors)), layout="constrained"
    )
    axes = fig.subplots(len(detectors), 1, squeeze=False)[:, 0]
    for ax, detector in zip(axes, detectors, strict=True):
        rows = table[table["detector"] == detector]
        methods = list(dict.fromkeys(zip(rows["explainer"], rows["layer"], strict=True)))
        grid = np.full((len(methods), len(levels)), np.nan)
        for r in rows.to_dict(orient="records"):
            grid[
                methods.index((r["explainer"], r["layer"])),
                levels.index((r["perturbation"], r["level"])),
            ] = r["rank_correlation"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 else "white",
                )
        ax.set_xticks(range(len(levels)), [f"{k}\n{lvl}" for k, lvl in levels], fontsize=7)
        ax.set_yticks(range(len(methods)), [f"{e} ({lyr})" for e, lyr in methods], fontsize=8)
        ax.set_title(f"{detector}: heatmap rank correlation, clean vs perturbed")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def faithfulness_figure(curves: dict[tuple[str, str, str], dict[str, list[float]]]) -> Figure:
    """Per detector, deletion and insertion curves per explainer (solid) and random (dotted)."""
    from matplotlib.figure import Figure

    detectors = list(dict.fromkeys(d for d, _, _ in curves))
    fig = Figure(figsize=(8.5, 3.4 * len(detectors)), layout="constrained")
    axes = fig.subplots(len(detectors), 2, squeeze=False)
    for row, detector in enumerate(detectors):
        for column, mode in enumerate(("deletion", "insertion")):
            ax = axes[row, column]
            random_drawn = set()
            for (d, explainer, layer), values in curves.items():
                if d != detector:
                    continue
                x = np.linspace(0, 1, len(values[mode]))
                line = ax.plot(x, values[mode], "-", label=f"{explainer} ({layer})")
                random = tuple(values[f"{mode}_random"])
                if random not in random_drawn:
                    random_drawn.add(random)
                    ax.plot(x, random, ":", color=line[0].get_color(), label="random map")
            ax.set(
                xlabel=f"fraction of pixels {'removed' if mode == 'deletion' else 'restored'}",
                ylabel="P(explained class)",
                ylim=(0, 1.01),
                title=f"{detector}: {mode} ({_BETTER[mode]} is better)",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    return fig


def sanity_figure(table: pd.DataFrame) -> Figure:
    """Per detector, rank correlation with the intact model's maps along the cascade."""
    from matplotlib.figure import Figure

    detectors = list(dict.fromkeys(table["detector"]))
    fig = Figure(figsize=(4.8 * len(detectors), 3.6), layout="constrained")
    axes = fig.subplots(1, len(detectors), squeeze=False)[0]
    for ax, detector in zip(axes, detectors, strict=True):
        rows = table[table["detector"] == detector]
        for (explainer, layer), group in rows.groupby(["explainer", "layer"], sort=False):
            group = group.sort_values("stage")
            ax.plot(
                group["randomised"], group["rank_correlation"], "o-", label=f"{explainer} ({layer})"
            )
        ax.axhline(PASS_BELOW, color="grey", linestyle=":", linewidth=1)
        ax.set(
            xlabel=f"parameter modules randomised, from the top (of {int(rows['of'].iloc[0])})",
            ylabel="rank correlation with intact maps",
            ylim=(-0.2, 1.02),
            title=f"{detector}: model randomisation",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return fig


_BETTER = {"deletion": "lower", "insertion": "higher"}
_KIND_TITLES = {
    "jpeg": "JPEG quality",
    "blur": "Gaussian blur sigma (px)",
    "resize": "down-and-up scale",
    "noise": "noise std (grey levels)",
    "social": "social: scale:quality",
}


def _strength(kind: str, level: str) -> float:
    """Sort key: weakest level first (high JPEG quality and large scales are weak)."""
    values = [float(v) for v in level.split(":")]
    if kind == "jpeg":
        return -values[0]
    if kind in ("resize", "social"):
        return -values[0] * 1000 - (values[1] if kind == "social" else 0)
    return values[0]
