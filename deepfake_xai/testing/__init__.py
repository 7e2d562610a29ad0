"""The conformance kit: does a detector or explainer plugin honour deepfake-xai's contract?

In the spirit of scikit-learn's ``check_estimator``: :func:`check_detector` and
:func:`check_explainer` run every check, never stop at the first failure, and return a
:class:`CheckReport` whose failures say what to fix. In a plugin's test suite::

    from deepfake_xai.testing import check_detector

    def test_conformance():
        check_detector("my_detector", image_size=64).raise_if_failed()

``deepfake-xai plugins check NAME`` runs the same checks from the command line.
"""

from .detector import check_detector
from .explainer import check_explainer
from .report import CheckFailed, CheckReport, CheckResult, CheckSkipped, ConformanceError

__all__ = [
    "CheckFailed",
    "CheckReport",
    "CheckResult",
    "CheckSkipped",
    "ConformanceError",
    "check_detector",
    "check_explainer",
]
