"""docs/plugins.md tells the truth: every Python example in it runs, and the detectors and
explainers it defines pass the conformance kit (issue 12, item 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepfake_xai.detectors import Detector
from deepfake_xai.registry import DETECTORS, EXPLAINERS
from deepfake_xai.testing import CheckReport, CheckResult, check_detector

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def examples() -> dict:
    """The namespace after running every ```python block of the page, in order."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict = {"__name__": "plugins_md"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


@pytest.fixture(scope="module")
def registered(examples):
    detectors = {
        "resnet18": "ResNet18",
        "resnet18_fine": "ResNet18Fine",
        "resnet18_versioned": "ResNet18Versioned",
        "my_detector": "MyDetector",
    }
    explainers = {"input_x_gradient": "InputTimesGradient", "random_projection": "RandomProjection"}
    added = []
    for registry, names in ((DETECTORS, detectors), (EXPLAINERS, explainers)):
        for name, cls in names.items():
            if name not in registry:
                registry.add(name, examples[cls])
                added.append((registry, name))
    yield examples
    for registry, name in added:
        registry.remove(name)


def test_the_pages_own_conformance_tests_pass(registered):
    registered["test_detector_conforms"]()
    registered["test_explainer_conforms"]()


def test_path_a_detector_passes_the_kit(registered):
    report = check_detector("resnet18", image_size=48)
    report.raise_if_failed()
    assert isinstance(report, CheckReport) and len(report) == len(list(report))
    assert all(isinstance(result, CheckResult) for result in report)
    assert report["save/load"].passed


def test_cam_layers_recipe(registered):
    check_detector("resnet18_fine", image_size=48).raise_if_failed()
    detector = registered["ResNet18Fine"](image_size=48, device="cpu")
    assert detector.cam_layers == {"final": "layer4", "mid": "layer2", "stage3": "layer3"}
    by_argument = registered["ResNet18"](cam_layers={"mid": "layer1"}, device="cpu")
    assert by_argument.cam_layers == {"final": "layer4", "mid": "layer1"}


def test_metadata_recipe_is_saved_and_restored(registered, tmp_path):
    detector = registered["ResNet18Versioned"](image_size=48, device="cpu")
    loaded = Detector.load(detector.save(tmp_path / "versioned"), device="cpu")
    assert loaded.metadata["plugin_version"] == "0.1.0"
    assert loaded.metadata["pretrained"] is False


@pytest.mark.parametrize("architecture", ["mobilenetv3_small_050", "lcnet_050"])
def test_the_mobilenetv3_family_passes_the_kit(registered, architecture):
    cls = type(architecture, (registered["TimmDetector"],), {"architecture": architecture})
    cls.detector_name = architecture
    DETECTORS.add(architecture, cls)
    try:
        check_detector(architecture, image_size=64).raise_if_failed()
    finally:
        DETECTORS.remove(architecture)


def test_signed_logit_is_importable_where_documented():
    from deepfake_xai.explainers import signed_logit

    assert signed_logit.__module__ == "deepfake_xai.explainers.base"
