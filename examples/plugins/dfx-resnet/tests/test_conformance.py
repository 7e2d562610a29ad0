"""dfx-resnet honours deepfake-xai's detector contract (run after `pip install -e .`)."""

import deepfake_xai as dx
from deepfake_xai.testing import check_detector


def test_registered_through_its_entry_point():
    entry = dx.DETECTORS.entry("resnet18")
    assert entry.source == "dfx-resnet"
    assert "resnet18" in dx.list_detectors()


def test_conformance():
    check_detector("resnet18", image_size=48).raise_if_failed()


def test_cam_layers_are_the_last_two_stages():
    detector = dx.load_detector("resnet18", image_size=64, device="cpu")
    assert detector.cam_layers == {"final": "layer4", "mid": "layer3"}
    assert detector.input_size == 64 and detector.architecture == "resnet18"
