"""Batch analysis: ``analyze`` a folder, list or dataset into a resumable output folder.

``AnalysisResult`` reads such a folder back (finished or not): predictions, errors,
heatmaps, overlays, embeddings, projections and the HTML report.
"""

from .analyzer import DEFAULT_DETECTORS, Analyzer, analyze
from .result import AnalysisResult

__all__ = ["DEFAULT_DETECTORS", "AnalysisResult", "Analyzer", "analyze"]
