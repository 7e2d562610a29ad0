"""Robustness curves and explanation checks (deepfake_xai.trust) on models with known answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from models import AlignedQuadrantDetector, QuadrantDetector, quadrant_share
from PIL import Image

from deepfake_xai.explainers.base import AttributionExplainer, Heatmaps, normalize_maps
from deepfake_xai.preprocessing import Harmonization, to_uint8_tensor
from deepfake_xai.registry import EXPLAINERS
from deepfake_xai.trust import TrustReport, TrustSettings, assess, parse_perturbations
from deepfake_xai.trust.harmonize import harmonize_batch
from deepfake_xai.trust.jpeg import jpeg_compress
from deepfake_xai.trust.perturbations import Perturbation
from deepfake_xai.trust.sanity import cascade, parameter_modules, randomised_copies
from deepfake_xai.trust.similarity import rank_correlation, top_overlap


def _smooth_images(n: int = 3, height: int = 45, width: int = 53) -> torch.Tensor:
    rng = np.random.default_rng(1)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 6, 7))).float()
    return (
        torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
        .clamp(0, 255)
        .round()
        .to(torch.uint8)
    )


def _check(perturbations, explainers=("gradcam",), **kwargs) -> TrustSettings:
    return TrustSettings(
        perturbations=parse_perturbations(perturbations),
        explainers=list(explainers),
        batch_size=8,
        **kwargs,
    )


# -- perturbations ----------------------------------------------------------------------------
def test_every_default_level_keeps_size_dtype_and_is_seeded():
    images = _smooth_images()
    keys = torch.tensor([3, 7, 11])
    for level in parse_perturbations(None):
        if level.geometric:
            x = images.float()
            assert level.transform(x).shape == x.shape, level.label
            continue
        out = level.apply(images, keys, seed=5)
        assert out.shape == images.shape and out.dtype == torch.uint8, level.label
        assert torch.equal(out, level.apply(images, keys, seed=5)), level.label
        assert not torch.equal(out, images), f"{level.label} changed nothing"
    noise = Perturbation("noise", "5")
    assert not torch.equal(noise.apply(images, keys, 5), noise.apply(images, keys, 6))
    # an image's noise depends on its key, not on its batch or position
    alone = noise.apply(images[1:2], keys[1:2], 5)
    assert torch.equal(alone, noise.apply(images, keys, 5)[1:2])
    assert torch.equal(alone, noise.apply(images.flip(0), keys.flip(0), 5)[1:2])


def test_perturbation_grammar_and_errors():
    levels = parse_perturbations(["jpeg=30,50", "blur=1.0", "social=0.5:70", "flip"])
    assert [p.label for p in levels] == [
        "jpeg=30",
        "jpeg=50",
        "blur=1",
        "social=0.5:70",
        "flip=horizontal",
    ]
    assert Perturbation("social", "0.5:70").describe() == "downscaled to 50%, JPEG quality 70, back"
    assert len(parse_perturbations(["noise"])) == 3  # a bare kind takes its default levels
    for bad, message in (
        ("jpeg=0", "jpeg=0: out of range"),
        ("blur=soft", "blur=soft: levels are numbers"),
        ("sharpen=2", "unknown perturbation 'sharpen'"),
        ("social=0.5", "social=0.5: expected"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_perturbations([bad])


def test_jpeg_matches_pillow():
    images = _smooth_images(2, 64, 72)
    for quality in (30, 75):
        ours = jpeg_compress(images, quality).int()
        pillow = []
        for image in images.permute(0, 2, 3, 1).numpy():
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=quality)
            pillow.append(to_uint8_tensor(Image.open(buffer)))
        pillow = torch.stack(pillow).int()
        difference = (ours - pillow).abs().float().mean().item()
        assert difference < 1.5, f"quality {quality}: {difference:.2f} grey levels from Pillow"


def test_device_harmonisation_matches_pillow(rgb_images):
    for harmonization in (
        Harmonization(image_size=32),
        Harmonization(image_size=40, fit="squash", resize="bilinear"),
    ):
        for image in rgb_images:
            ours = harmonize_batch(to_uint8_tensor(image)[None], harmonization)[0].int()
            reference = to_uint8_tensor(harmonization.apply(image)).int()
            assert ours.shape == reference.shape
            assert (ours - reference).abs().float().mean() < 2.0


# -- similarity -------------------------------------------------------------------------------
def test_rank_correlation_matches_spearman_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 6, 6, generator=generator)
    a[0, :3] = 0.0  # ties
    b = a + 0.5 * torch.rand(4, 6, 6, generator=generator)
    ours = rank_correlation(a, b)
    for i in range(4):
        expected = scipy_stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic
        assert ours[i].item() == pytest.approx(expected, abs=1e-5)
    flat = torch.zeros(2, 6, 6)
    assert rank_correlation(flat, flat).tolist() == [1.0, 1.0]
    assert rank_correlation(flat, a[:2]).tolist() == [0.0, 0.0]
    assert top_overlap(a, a).tolist() == [1.0] * 4


# -- the checks on known-answer models --------------------------------------------------------
def test_quadrant_heatmap_stays_put_under_jpeg(noise_faces):
    detector = AlignedQuadrantDetector()
    settings = _check(["jpeg=50", "noise=5", "shift=4"], explain_images=8)
    measured = assess([detector], ["quadrant"], noise_faces, settings)
    report = TrustReport.build(measured, settings, "noise")
    robustness = report.robustness.set_index("perturbation")
    assert robustness.loc["clean", "accuracy"] == 1.0
    assert robustness.loc["clean", "n"] == 8 and robustness.loc["clean", "roc_auc"] == 1.0
    assert robustness.loc["jpeg", "shift_fake"] < -0.3  # JPEG wipes out the noise it detects
    stability = report.stability.set_index("perturbation")
    assert stability.loc["jpeg", "rank_correlation"] > 0.9
    assert stability.loc["jpeg", "top10_overlap"] > 0.5  # chance: 0.1
    assert stability.loc["shift", "rank_correlation"] > 0.8  # shifted back, it lines up again
    # and the perturbed map itself is still in the top-left quadrant
    fakes = [s.path for s in noise_faces if s.label == "fake"]
    pixels = torch.stack([to_uint8_tensor(Image.open(p)) for p in fakes])
    jpeg = Perturbation("jpeg", "50").apply(pixels, torch.arange(len(pixels)))
    maps = EXPLAINERS.get("gradcam")(detector).attribute(detector.normalize(jpeg), "fake")
    assert (quadrant_share(maps["final"].maps) > 0.95).all()


def test_gradcam_beats_a_random_map_on_deletion_and_insertion(noise_faces):
    detector = AlignedQuadrantDetector()
    fakes = [s for s in noise_faces if s.label == "fake"]
    settings = _check(["jpeg=50"], explain_images=4, robustness=False)
    measured = assess([detector], ["quadrant"], fakes, settings)
    report = TrustReport.build(measured, settings, "noise")
    assert report.robustness is None
    row = report.faithfulness.iloc[0]
    assert row["deletion_auc"] < row["deletion_auc_random"] - 0.2
    assert row["insertion_auc"] > row["insertion_auc_random"] + 0.2
    assert row["deletion_beats_random"] == 1.0 and row["n"] == 4
    curves = report.curves["quadrant", "gradcam", "final"]
    assert len(curves["deletion"]) == settings.steps + 1


class _EdgeExplainer(AttributionExplainer):
    """Ignores the model: the image's own edge strength (what a sanity check must catch)."""

    name = "test-edges"

    def attribute(self, inputs, target="fake", layers=("final",)):
        gray = inputs.mean(dim=1)
        edges = (gray[:, 1:, 1:] - gray[:, :-1, 1:]).abs() + (
            gray[:, 1:, 1:] - gray[:, 1:, :-1]
        ).abs()
        targets = (
            torch.as_tensor(target) if isinstance(target, torch.Tensor) else torch.ones(len(inputs))
        )
        return {"input": Heatmaps(normalize_maps(edges), self.name, "input", targets)}


@pytest.fixture
def edge_explainer():
    EXPLAINERS.register("test-edges")(_EdgeExplainer)
    yield "test-edges"
    EXPLAINERS.remove("test-edges")


def test_sanity_check_passes_gradcam_and_fails_a_model_blind_map(noise_faces, edge_explainer):
    detector = AlignedQuadrantDetector()
    fakes = [s for s in noise_faces if s.label == "fake"]
    settings = _check(["jpeg=50"], explainers=("gradcam", edge_explainer), explain_images=4)
    measured = assess([detector], ["quadrant"], fakes, settings)
    report = TrustReport.build(measured, settings, "noise")
    verdicts = report.verdicts.set_index("explainer")
    assert verdicts.loc["gradcam", "sanity_passed"]
    assert verdicts.loc["gradcam", "sanity_similarity"] < 0.3
    assert not verdicts.loc[edge_explainer, "sanity_passed"]
    assert verdicts.loc[edge_explainer, "sanity_similarity"] > 0.99
    cascade_rows = report.sanity[report.sanity["explainer"] == "gradcam"].sort_values("stage")
    assert list(cascade_rows["randomised"]) == [1, 2, 3]
    assert list(cascade_rows["down_to"]) == ["2", "1", "0"]  # head, mask, convolution


def test_plain_quadrant_detector_fails_the_sanity_check_for_gradcam(noise_faces):
    """Its only weights are a fixed random filter: re-drawing them leaves a similar contrast
    map, so Grad-CAM there shows the image's texture rather than learned knowledge."""
    fakes = [s for s in noise_faces if s.label == "fake"]
    settings = _check(["jpeg=50"], explain_images=4)
    measured = assess([QuadrantDetector()], ["quadrant"], fakes, settings)
    verdict = TrustReport.build(measured, settings, "noise").verdicts.iloc[0]
    assert not verdict["sanity_passed"]


def test_cascade_is_top_down_and_leaves_the_detector_alone():
    detector = AlignedQuadrantDetector()
    assert parameter_modules(detector.model) == ["2", "1", "0"]
    stages = cascade(detector, stages=5)
    assert [s.randomised for s in stages] == [1, 2, 3]
    before = {k: v.clone() for k, v in detector.model.state_dict().items()}
    copies = randomised_copies(detector, stages, seed=0)
    again = randomised_copies(detector, stages, seed=0)
    for key, value in detector.model.state_dict().items():
        assert torch.equal(value, before[key])
    last = copies[-1][1].model.state_dict()
    assert all(not torch.equal(last[k], before[k]) for k in before)
    assert all(torch.equal(last[k], again[-1][1].model.state_dict()[k]) for k in before)
    first = copies[0][1].model.state_dict()
    assert torch.equal(first["0.weight"], before["0.weight"])  # only the head at stage 1
    assert not torch.equal(first["2.weight"], before["2.weight"])


def test_report_dict_card_and_figures(noise_faces):
    detector = AlignedQuadrantDetector()
    settings = _check(["jpeg=50", "flip"], explain_images=4)
    measured = assess([detector], ["quadrant"], noise_faces, settings)
    report = TrustReport.build(measured, settings, "noise faces")
    saved = report.to_dict()
    assert {"robustness", "explanations", "settings", "seconds"} <= set(saved)
    assert saved["seconds"]["predict"] > 0 and saved["seconds"]["sanity"] > 0
    assert {"verdicts", "stability", "faithfulness", "sanity", "curves"} <= set(
        saved["explanations"]
    )
    card = report.card("quadrant")
    assert card["dataset"] == "noise faces"
    assert [(r["perturbation"], r["level"]) for r in card["rows"]] == [
        ("clean", ""),
        ("jpeg", "50"),
    ]
    assert set(card["rows"][0]) == {"perturbation", "level", "accuracy", "roc_auc", "ece", "n"}
    assert set(report.figures()) == {"robustness", "stability", "faithfulness", "sanity"}
    markdown = report.to_markdown()
    assert "## Robustness" in markdown and "## Can the explanations be trusted?" in markdown
