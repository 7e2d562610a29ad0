"""Where detectors look, as numbers: facial regions from landmarks, heatmap mass per region,
concentration, class separation, and ``evaluate --regions`` on detectors with known heatmaps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from models import SIZE, AlignedQuadrantDetector

from deepfake_xai import face_regions
from deepfake_xai.evaluation import evaluate
from deepfake_xai.face_regions import (
    EYES,
    FACE_REGIONS,
    FOREHEAD,
    MOUTH,
    NOSE,
    OUTSIDE,
    SKIN,
    area_shares,
    face_region_map,
    half_mass_area,
    region_shares,
)
from deepfake_xai.trust import regions
from deepfake_xai.trust.separation import separation

# A frontal face centred in a SIZE x SIZE image: eyes 16 px apart.
CENTRED = np.array([(24, 28), (40, 28), (32, 37), (26, 44), (38, 44)], dtype=float)
# The same face in the bottom-right quadrant, away from the quadrant detectors' evidence.
BOTTOM_RIGHT = CENTRED / 2 + (SIZE / 2, SIZE / 2) + (0, 2)


def _index(name: str) -> int:
    return FACE_REGIONS.index(name)


def test_regions_follow_the_landmarks():
    labels = face_region_map(SIZE, SIZE, CENTRED)
    at = {(x, y): labels[y, x] for x, y in [(24, 28), (40, 28), (32, 33), (32, 44), (32, 8)]}
    assert at[24, 28] == at[40, 28] == _index(EYES)
    assert at[32, 33] == _index(NOSE) and at[32, 44] == _index(MOUTH)
    assert at[32, 8] == _index(FOREHEAD)
    assert labels[38, 18] == _index(SKIN)  # a cheek
    assert labels[0, 0] == labels[63, 63] == _index(OUTSIDE)
    assert set(np.unique(labels)) == set(range(len(FACE_REGIONS)))
    # a face turned by 90 degrees (and mirrored in the same move) turns its regions with it
    turned = face_region_map(SIZE, SIZE, CENTRED[:, ::-1])
    np.testing.assert_array_equal(turned, labels.T)


def test_shares_and_concentration_of_known_maps():
    labels = face_region_map(SIZE, SIZE, CENTRED)
    eyes = (labels == _index(EYES)).astype(float)
    shares = region_shares(eyes, labels)
    assert shares[_index(EYES)] == pytest.approx(1.0) and shares.sum() == pytest.approx(1.0)
    face_area = (labels != _index(OUTSIDE)).sum()
    expected = eyes.sum() / 2 / face_area  # an even map on the eyes: half the eyes hold half
    assert half_mass_area(eyes, labels) == pytest.approx(expected, abs=1 / face_area)

    even = np.ones((SIZE, SIZE))
    np.testing.assert_allclose(region_shares(even, labels), area_shares(labels))
    assert half_mass_area(even, labels) == pytest.approx(0.5, abs=1 / face_area)
    assert region_shares(np.zeros((SIZE, SIZE)), labels) is None
    assert math.isnan(half_mass_area(np.zeros((SIZE, SIZE)), labels))


def test_separation_of_two_clusters_and_of_none():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 20)
    apart = rng.normal(size=(40, 8)) + targets[:, None] * 10
    figures = separation(apart, targets, ("pca",))
    for space in ("embedding", "pca"):
        assert figures[space]["silhouette"] > 0.7 and figures[space]["knn_accuracy"] == 1.0
    mixed = separation(rng.normal(size=(40, 8)), targets, ())
    assert abs(mixed["embedding"]["silhouette"]) < 0.1
    assert mixed["embedding"]["knn_accuracy"] < 0.8
    one_class = separation(apart, np.zeros(40, dtype=np.int64), ())
    assert math.isnan(one_class["embedding"]["silhouette"])


@pytest.fixture
def landmarks(monkeypatch):
    """Sets where every image's face is found (no MTCNN on noise images)."""

    def place(points):
        monkeypatch.setattr(regions, "face_landmarks", lambda image: points)

    return place


def test_a_detector_that_looks_at_one_quadrant(noise_faces, landmarks):
    detector = AlignedQuadrantDetector()
    landmarks(BOTTOM_RIGHT)  # the face lies outside the only place the detector looks
    study = regions.study_regions([detector], ["quadrant"], noise_faces, projections=("pca",))
    summary = study.detectors["quadrant"]
    assert summary["images"] == 8 and summary["faces_found"] == 8
    fake = summary["classes"]["fake"]
    assert fake["faces"] == 4 and fake["shares"][OUTSIDE] == pytest.approx(1.0)
    assert math.isnan(fake["half_mass_area"])  # no mass on the face at all
    assert summary["classes"]["real"]["faces"] == 0  # no evidence for "real" to map
    assert summary["separation"]["embedding"]["knn_accuracy"] == 1.0

    landmarks(CENTRED)  # now the left eye, not the mouth, is inside the quadrant
    fake = regions.study_regions([detector], ["q"], noise_faces, projections=()).detectors["q"]
    shares = fake["classes"]["fake"]["shares"]
    assert shares[MOUTH] == 0.0 and shares[EYES] > 2 * fake["classes"]["fake"]["area"][EYES]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert fake["classes"]["fake"]["half_mass_area"] < 0.5


def test_images_without_a_face_are_counted_not_guessed(noise_faces, landmarks):
    landmarks(None)
    study = regions.study_regions([AlignedQuadrantDetector()], ["q"], noise_faces, projections=())
    assert study.detectors["q"]["faces_found"] == 0
    assert study.detectors["q"]["classes"]["all"] == {"faces": 0}
    assert "| q | area" not in study.to_markdown()


def test_evaluate_writes_regions_to_json_and_markdown(noise_faces, landmarks, tmp_path):
    landmarks(CENTRED)
    comparison = evaluate(
        [AlignedQuadrantDetector()],
        noise_faces,
        split=None,
        latency=False,
        regions=True,
        projections=("pca",),
        out=tmp_path,
    )
    saved = json.loads((tmp_path / "comparison.json").read_text())["regions"]
    assert saved["regions"] == list(FACE_REGIONS) and saved["target"] == "predicted"
    fake = saved["detectors"]["quadrant"]["classes"]["fake"]
    assert fake["shares"][MOUTH] == 0.0 and fake["faces"] == 4
    assert set(saved["detectors"]["quadrant"]["separation"]) == {"embedding", "pca"}
    markdown = (tmp_path / "comparison.md").read_text()
    assert "## Where the detectors look" in markdown and "| quadrant | fake | 4 |" in markdown
    assert "silhouette: pca" in markdown
    assert comparison.regions is not None


def test_evaluate_cli_regions_flag(noise_faces, landmarks, tmp_path, capsys):
    from deepfake_xai.cli import main
    from deepfake_xai.data import write_manifest

    landmarks(CENTRED)
    detector = tmp_path / "mobilenetv2.safetensors"
    import deepfake_xai as dx

    dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu").save(detector)
    manifest = write_manifest(noise_faces, tmp_path / "faces.csv")
    args = ["evaluate", str(manifest), "--detector", str(detector), "--split", "all"]
    code = main([*args, "--no-latency", "--no-progress", "--regions", "--projection", "pca"])
    assert code == 0
    out = capsys.readouterr().out
    assert "## Where the detectors look" in out and "k-NN: pca" in out


def test_face_landmarks_on_a_real_face(faces_sample):
    from PIL import Image

    path = next((faces_sample / "val" / "real").glob("*.jpg"))
    points = face_regions.face_landmarks(Image.open(path).convert("RGB"))
    assert points is not None and points.shape == (5, 2)
    labels = face_region_map(256, 256, points)
    assert 0.2 < 1 - area_shares(labels)[_index(OUTSIDE)] < 0.6  # the face fills a good part
