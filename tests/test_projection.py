"""PCA, t-SNE and UMAP projections: determinism, separation, PCA-first, small N, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from deepfake_xai.explainers.base import Projection
from deepfake_xai.explainers.projection import (
    PCAProjection,
    TSNEProjection,
    UMAPProjection,
)
from deepfake_xai.registry import EXPLAINERS


def blobs(n_per_blob: int = 40, dim: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two far-apart Gaussian blobs, float32, and their labels."""
    rng = np.random.default_rng(seed)
    points = rng.normal(0.0, 1.0, (2 * n_per_blob, dim)).astype(np.float32)
    labels = np.repeat([0, 1], n_per_blob)
    points[labels == 1] += 6.0
    return points, labels


def linearly_separable(coords: np.ndarray, labels: np.ndarray) -> bool:
    classifier = LinearSVC(C=100.0, max_iter=20_000).fit(coords, labels)
    return bool((classifier.predict(coords) == labels).all())


PROJECTIONS = {
    "pca": lambda: PCAProjection(),
    "tsne": lambda: TSNEProjection(perplexity=10, n_jobs=1),
    "umap": lambda: UMAPProjection(n_neighbors=10),
}


@pytest.mark.parametrize("name", list(PROJECTIONS))
def test_deterministic_2d_and_keeps_far_blobs_apart(name: str) -> None:
    points, labels = blobs()
    first = PROJECTIONS[name]().fit_transform(points)
    again = PROJECTIONS[name]().fit_transform(points)
    assert isinstance(first, Projection) and first.method == name
    assert first.coords.shape == (80, 2) and first.coords.dtype == np.float32
    assert np.isfinite(first.coords).all()
    np.testing.assert_array_equal(first.coords, again.coords)
    assert linearly_separable(first.coords, labels)


def test_a_different_seed_gives_a_different_tsne() -> None:
    points, _ = blobs()
    one = TSNEProjection(perplexity=10, n_jobs=1, random_state=0).fit_transform(points)
    two = TSNEProjection(perplexity=10, n_jobs=1, random_state=1).fit_transform(points)
    assert not np.allclose(one.coords, two.coords)


@pytest.mark.parametrize(
    ("dim", "pca_dims", "expected"), [(100, 50, 50), (30, 50, None), (100, None, None)]
)
def test_pca_first_only_when_wider_than_pca_dims(
    dim: int, pca_dims: int | None, expected: int | None
) -> None:
    points, _ = blobs(n_per_blob=30, dim=dim)
    projection = TSNEProjection(perplexity=10, pca_dims=pca_dims, n_jobs=1).fit_transform(points)
    assert projection.params["pca_dims"] == expected


def test_pca_first_is_limited_by_the_number_of_points() -> None:
    points, _ = blobs(n_per_blob=10, dim=100)
    assert TSNEProjection(n_jobs=1).fit_transform(points).params["pca_dims"] == 20


def test_small_n_clamps_perplexity_and_neighbours() -> None:
    points, _ = blobs(n_per_blob=5, dim=8)
    tsne = TSNEProjection(n_jobs=1).fit_transform(points)
    assert tsne.params["perplexity"] == pytest.approx(3.0)
    assert tsne.coords.shape == (10, 2)
    umap = UMAPProjection().fit_transform(points[:6])
    assert umap.params["n_neighbors"] == 5
    assert umap.coords.shape == (6, 2) and np.isfinite(umap.coords).all()
    tiny = TSNEProjection(n_jobs=1).fit_transform(points[:4])
    assert tiny.params["perplexity"] == pytest.approx(1.0)


@pytest.mark.parametrize("factory", [TSNEProjection, UMAPProjection])
def test_fewer_than_four_points_is_a_clear_error(factory) -> None:
    with pytest.raises(ValueError, match=f"{factory.name}: needs at least 4 points, got 3"):
        factory().fit_transform(np.zeros((3, 5), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("factory", [PCAProjection, TSNEProjection, UMAPProjection])
def test_non_finite_embeddings_are_rejected(factory, bad: float) -> None:
    points, _ = blobs(n_per_blob=5, dim=8)
    points[7, 2] = bad
    with pytest.raises(
        ValueError, match=r"1 embedding rows contain NaN or inf \(first rows: \[7\]\)"
    ):
        factory().fit_transform(points)


def test_wrong_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"2-D \(N, D\) array, got shape \(5,\)"):
        PCAProjection().fit_transform(np.zeros(5))
    with pytest.raises(ValueError, match="must be numeric"):
        PCAProjection().fit_transform(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="perplexity must be > 0"):
        TSNEProjection(perplexity=0)


def test_missing_umap_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ImportError, match=r"pip install 'deepfake-xai\[umap\]'"):
        UMAPProjection().fit_transform(blobs()[0])


def test_scikit_learn_fallback_without_opentsne(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    points, labels = blobs(n_per_blob=20)
    projection = TSNEProjection(perplexity=10, n_jobs=1).fit_transform(points)
    assert projection.params["implementation"] == "scikit-learn"
    assert linearly_separable(projection.coords, labels)


def test_registered_as_projections() -> None:
    assert isinstance(EXPLAINERS.create("t-sne", perplexity=5), TSNEProjection)
    for name in ("pca", "tsne", "umap"):
        assert EXPLAINERS.get(name).kind == "projection"
