"""Can the detector and its explanations be trusted? Robustness curves under everyday
degradations, heatmap stability, faithfulness against a random map and the model-randomisation
sanity check, measured in one batched pass (see ``docs/evaluate.md``)."""

from .assess import TrustSettings, assess
from .perturbations import GRAMMAR, Perturbation, parse_perturbations
from .report import TrustReport

__all__ = [
    "GRAMMAR",
    "Perturbation",
    "TrustReport",
    "TrustSettings",
    "assess",
    "parse_perturbations",
]
