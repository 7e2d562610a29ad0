"""Tests for the built-in synthetic face set: determinism, masks, layout, and no shortcuts."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score

from deepfake_xai import synthetic
from deepfake_xai.synthetic import (
    ARTIFACTS,
    REGIONS,
    FaceSample,
    SyntheticSummary,
    add_artifact,
    draw_face,
    generate_dataset,
    load_mask,
    make_sample,
)

N_PER_CLASS = 100


def _rows(summary: SyntheticSummary) -> list[dict[str, str]]:
    with open(summary.manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _digests(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> SyntheticSummary:
    """One flat 100 + 100 image set at the default size, shared by the dataset-level tests."""
    return generate_dataset(tmp_path_factory.mktemp("flat"), N_PER_CLASS, seed=0)


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> SyntheticSummary:
    return generate_dataset(tmp_path_factory.mktemp("split"), 20, size=64, seed=3, split=True)


def test_make_sample_is_deterministic():
    for label in ("real", "fake"):
        a = make_sample(7, label, seed=1)
        b = make_sample(7, label, seed=1)
        assert a.image.tobytes() == b.image.tobytes()
        assert (a.artifact, a.region) == (b.artifact, b.region)
        if label == "fake":
            assert np.array_equal(a.mask, b.mask)
        assert make_sample(7, label, seed=2).image.tobytes() != a.image.tobytes()
        assert make_sample(8, label, seed=1).image.tobytes() != a.image.tobytes()


def test_fake_is_a_different_face_not_the_real_plus_an_artifact():
    for i in range(5):
        real = np.asarray(make_sample(i, "real").image, dtype=float)
        fake = make_sample(i, "fake")
        outside = ~fake.mask
        diff = np.abs(real - np.asarray(fake.image, dtype=float))[outside]
        assert diff.mean() > 20


@pytest.mark.parametrize("size", [64, 128, 256])
def test_both_classes_share_size_and_mode(size):
    real, fake = make_sample(0, "real", size=size), make_sample(0, "fake", size=size)
    assert isinstance(real, FaceSample) and isinstance(fake, FaceSample)
    assert real.image.size == fake.image.size == (size, size)
    assert real.image.mode == fake.image.mode == "RGB"
    assert (real.label, real.mask, real.artifact, real.region) == ("real", None, None, None)
    assert fake.label == "fake" and fake.mask.shape == (size, size) and fake.mask.dtype == bool
    assert fake.artifact in ARTIFACTS and fake.region in REGIONS


def test_draw_face_regions_are_boxes_inside_the_image():
    image, regions = draw_face(np.random.default_rng(0), 96)
    assert image.size == (96, 96) and image.mode == "RGB"
    assert set(regions) == set(REGIONS)
    for x0, y0, x1, y1 in regions.values():
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96


@pytest.mark.parametrize("artifact", ARTIFACTS)
@pytest.mark.parametrize("region", REGIONS)
def test_artifact_is_local_and_inside_its_region(artifact, region):
    size = 128
    for k in range(3):
        image, regions = draw_face(np.random.default_rng([k, 11]), size)
        fake, mask = add_artifact(image, regions, np.random.default_rng([k, 12]), artifact, region)
        assert fake.size == image.size and mask.shape == (size, size) and mask.dtype == bool
        area = mask.sum()
        side = np.sqrt(area)
        assert 0.2 * size < side < 0.43 * size  # the patch is 24-42 % of the image side
        x0, y0, x1, y1 = regions[region]
        ys, xs = np.nonzero(mask)
        assert x0 <= xs.mean() <= x1 and y0 <= ys.mean() <= y1
        pad = int(0.1 * size)
        in_box = (xs >= x0 - pad) & (xs < x1 + pad) & (ys >= y0 - pad) & (ys < y1 + pad)
        assert in_box.mean() > 0.8
        diff = np.abs(np.asarray(fake, dtype=int) - np.asarray(image, dtype=int)).max(-1)
        assert (diff[mask] > 0).mean() > 0.5
        assert diff[mask].mean() > 3
        assert (diff[~mask] > 0).sum() < 0.2 * area  # only the soft edge, just outside
        assert (diff[~mask] > 8).sum() < 0.05 * area


def test_add_artifact_rejects_unknown_names():
    image, regions = draw_face(np.random.default_rng(0), 64)
    with pytest.raises(ValueError, match="artifact"):
        add_artifact(image, regions, np.random.default_rng(0), "jpeg_ghost", "eyes")
    with pytest.raises(ValueError, match="region"):
        add_artifact(image, regions, np.random.default_rng(0), "seam", "elbow")
    with pytest.raises(ValueError, match="label"):
        make_sample(0, "synthetic")


def test_flat_layout_and_manifest(flat):
    root = flat.root
    assert (flat.n_real, flat.n_fake) == (N_PER_CLASS, N_PER_CLASS)
    rows = _rows(flat)
    assert list(rows[0]) == ["path", "label", "artifact", "region", "mask"]
    assert len(rows) == 2 * N_PER_CLASS
    for row in rows:
        assert row["path"].startswith(row["label"] + "/")
        assert (root / row["path"]).is_file()
        mask = load_mask(root, row["path"])
        if row["label"] == "real":
            assert row["artifact"] == row["region"] == row["mask"] == "" and mask is None
        else:
            assert row["artifact"] in ARTIFACTS and row["region"] in REGIONS
            assert row["mask"] == f"masks/{pathlib.Path(row['path']).stem}.png"
            assert mask.dtype == bool and mask.any()
            with Image.open(root / row["path"]) as img:
                assert mask.shape == (img.height, img.width)
    on_disk = {str(p.relative_to(root)) for p in root.glob("*/*.png")}
    assert on_disk == {r["path"] for r in rows} | {r["mask"] for r in rows if r["mask"]}
    assert {r["artifact"] for r in rows if r["artifact"]} == set(ARTIFACTS)
    assert {r["region"] for r in rows if r["region"]} == set(REGIONS)


def test_filenames_carry_no_class_information(flat):
    rows = _rows(flat)
    names = {
        label: [pathlib.Path(r["path"]).name for r in rows if r["label"] == label]
        for label in ("real", "fake")
    }
    assert all(re.fullmatch(r"\d{6}\.png", n) for ns in names.values() for n in ns)
    ids = {k: np.array([int(n[:6]) for n in v]) for k, v in names.items()}
    assert not set(ids["real"]) & set(ids["fake"])
    x = np.concatenate([ids["real"], ids["fake"]])
    y = np.repeat([0, 1], N_PER_CLASS)
    assert 0.35 < roc_auc_score(y, x) < 0.65
    assert abs((ids["real"] % 2).mean() - (ids["fake"] % 2).mean()) < 0.2


def test_no_metadata_shortcut(flat):
    rows = _rows(flat)
    y = np.array([r["label"] == "fake" for r in rows])
    sizes = np.array([(flat.root / r["path"]).stat().st_size for r in rows], dtype=float)
    real_mean, fake_mean = sizes[~y].mean(), sizes[y].mean()
    assert abs(fake_mean - real_mean) / real_mean < 0.15
    feature = ((sizes - sizes.mean()) / sizes.std())[:, None]
    assert cross_val_score(LogisticRegression(), feature, y, cv=5).mean() < 0.65
    headers = set()
    for row in rows:
        with Image.open(flat.root / row["path"]) as img:
            headers.add((img.format, img.mode, img.size, tuple(sorted(img.info))))
    assert len(headers) == 1


def _highpass_inconsistency(pixels: np.ndarray, mask: np.ndarray) -> float:
    """How far the Laplacian energy inside the mask, or along its edge, departs from around it."""
    energy = np.abs(ndimage.laplace(pixels.astype(float).mean(-1)))
    edge = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
    ring = ndimage.binary_dilation(mask, iterations=8) & ~ndimage.binary_dilation(
        mask, iterations=3
    )
    around = energy[ring].mean()
    return max(abs(np.log(energy[mask].mean() / around)), abs(np.log(energy[edge].mean() / around)))


def test_a_trivial_highpass_feature_sees_the_artifact(flat):
    rows = _rows(flat)
    reals = [r for r in rows if r["label"] == "real"]
    fakes = [r for r in rows if r["label"] == "fake"]
    scores, labels, kinds = [], [], []
    for fake, real in zip(fakes, reals, strict=True):
        mask = load_mask(flat.root, fake["path"])  # the same region is scored on a real face
        for row, label in ((fake, 1), (real, 0)):
            pixels = np.asarray(Image.open(flat.root / row["path"]))
            scores.append(_highpass_inconsistency(pixels, mask))
            labels.append(label)
            kinds.append(fake["artifact"])
    scores, labels, kinds = np.array(scores), np.array(labels), np.array(kinds)
    assert roc_auc_score(labels, scores) > 0.9
    for artifact in ARTIFACTS:
        pick = kinds == artifact
        assert roc_auc_score(labels[pick], scores[pick]) > 0.8, artifact


def test_split_layout_is_stratified_80_10_10(small_split):
    rows = _rows(small_split)
    assert list(rows[0])[-1] == "split"
    counts = {}
    for row in rows:
        assert row["path"].startswith(f"{row['split']}/{row['label']}/")
        assert (small_split.root / row["path"]).is_file()
        if row["label"] == "fake":
            assert (small_split.root / row["mask"]).is_file()
        counts[row["split"], row["label"]] = counts.get((row["split"], row["label"]), 0) + 1
    for label in ("real", "fake"):
        assert (counts["train", label], counts["val", label], counts["test", label]) == (16, 2, 2)


def test_generation_is_idempotent_and_parallel_safe(small_split, tmp_path):
    before = _digests(small_split.root)
    generate_dataset(small_split.root, 20, size=64, seed=3, split=True)
    assert _digests(small_split.root) == before
    generate_dataset(tmp_path, 20, size=64, seed=3, split=True, workers=2)
    assert _digests(tmp_path) == before


def test_rerun_with_fewer_images_leaves_no_stale_files(tmp_path):
    generate_dataset(tmp_path, 6, size=64)
    summary = generate_dataset(tmp_path, 3, size=64)
    rows = _rows(summary)
    on_disk = {str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*.png")}
    assert on_disk == {r["path"] for r in rows} | {r["mask"] for r in rows if r["mask"]}
    assert len(rows) == 6


def test_jpeg_format_is_the_same_for_both_classes(tmp_path):
    summary = generate_dataset(tmp_path, 4, size=64, fmt="jpeg")
    for row in _rows(summary):
        assert row["path"].endswith(".jpg")
        with Image.open(tmp_path / row["path"]) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 64))
        if row["label"] == "fake":
            assert load_mask(tmp_path, row["path"]).any()
    with pytest.raises(ValueError, match="fmt"):
        generate_dataset(tmp_path, 4, fmt="webp")


def test_public_names():
    assert synthetic.ARTIFACTS == ("checkerboard", "spectral", "seam", "blur_sharpen")
    assert synthetic.REGIONS == ("eyes", "mouth", "nose", "forehead", "cheek")
