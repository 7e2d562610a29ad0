"""The key beside every heatmap: a colour bar drawn from the overlay's own colormap, its two ends
named, the method and layer in plain words and a one-line "how to read this". A flat map gets no
colour bar, only the words "no region stands out"."""

from __future__ import annotations

import html

from ..render import colormap_lut
from .text import NO_REGION, how_to_read, method_name

STOPS = 9


def colour_gradient(colormap: str = "jet") -> str:
    """A CSS ``linear-gradient`` (bottom to top) with the colormap's colours."""
    lut = colormap_lut(colormap)
    stops = []
    for i in range(STOPS):
        r, g, b = lut[round(i * (len(lut) - 1) / (STOPS - 1))]
        stops.append(f"rgb({r},{g},{b}) {100 * i / (STOPS - 1):.0f}%")
    return f"linear-gradient(to top, {', '.join(stops)})"


def heatmap_key(
    method: str, layer: str | None, target: str, colormap: str = "jet", *, lean: bool = False
) -> str:
    """HTML: the colour bar with its ends labelled, the plain method name and how to read it
    (``lean``: the map shows where the detector looked while it cannot tell, not evidence)."""
    name = html.escape(method_name(method, layer))
    return (
        '<div class="heatmap-key">'
        f'<div class="colour-bar" style="background: {colour_gradient(colormap)}" '
        'role="img" aria-label="colour bar from blue (none) to red (strongest)"></div>'
        '<div class="colour-bar-labels"><span>strongest</span><span>none</span></div>'
        f'<div class="key-text"><strong class="method-name">{name}</strong>'
        f'<span class="how-to-read">{html.escape(how_to_read(target, lean=lean))}</span></div>'
        "</div>"
    )


def no_region_key(method: str, layer: str | None) -> str:
    """HTML in place of the key when the map is flat: no colour bar, the plain words."""
    return (
        f'<div class="heatmap-key no-region"><div class="key-text">'
        f'<strong class="method-name">{html.escape(method_name(method, layer))}</strong>'
        f'<span class="how-to-read">{html.escape(NO_REGION)}</span></div></div>'
    )


CSS = """
.heatmap-key { display: flex; gap: 8px; align-items: stretch; font-size: 0.9rem; }
.colour-bar { width: 16px; min-height: 96px; border-radius: 3px; flex: none;
  border: 1px solid var(--border-color-primary); }
.colour-bar-labels { display: flex; flex-direction: column; justify-content: space-between;
  flex: none; font-size: 0.8rem; }
.key-text { display: flex; flex-direction: column; gap: 4px; }
"""
