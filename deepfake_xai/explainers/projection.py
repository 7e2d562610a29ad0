"""2-D projections of detector embeddings: PCA, t-SNE (openTSNE) and UMAP.

t-SNE and UMAP first reduce wide embeddings to ``pca_dims`` dimensions with PCA, which keeps
the neighbourhoods and cuts the neighbour search cost (1280-D EfficientNet features to 50-D).
openTSNE is used for t-SNE: with the same perplexity and iterations it measured about 4x faster
than scikit-learn's TSNE at 10k points and on par at 2k (``benchmarks/projection_speed.py``);
scikit-learn is the fallback when openTSNE is missing.
UMAP needs the ``[umap]`` extra. Every projection is deterministic for a fixed ``random_state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import EXPLAINERS
from .base import Projection, ProjectionExplainer

MIN_POINTS = 4
"""Fewest points t-SNE and UMAP accept: the perplexity / neighbourhood clamps need N >= 4."""

FFT_MIN_POINTS = 10_000
"""From this many points openTSNE uses FFT-interpolated gradients (linear in N); below it,
Barnes-Hut, as the FFT grid has a fixed cost per iteration (measured: Barnes-Hut ahead at 2k
points, FFT about 2.5x faster at 10k)."""

UMAP_INSTALL_HINT = "pip install 'deepfake-xai[umap]'"


def check_embeddings(embeddings: np.ndarray, method: str, min_points: int = 2) -> np.ndarray:
    """``embeddings`` as a finite float32 ``(N, D)`` array, or a ValueError saying what is wrong."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(
            f"{method}: embeddings must be a 2-D (N, D) array, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{method}: embeddings must be numeric, got dtype {array.dtype}")
    if len(array) < min_points:
        raise ValueError(f"{method}: needs at least {min_points} points, got {len(array)}")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{method}: {len(rows)} embedding rows contain NaN or inf (first rows: "
            f"{rows[:5].tolist()}); drop or fix them before projecting"
        )
    return array


def pca_reduce(array: np.ndarray, dims: int, random_state: int) -> np.ndarray:
    """The first ``dims`` principal components of ``array`` (fewer when N or D is smaller)."""
    from sklearn.decomposition import PCA

    dims = min(dims, *array.shape)
    return PCA(n_components=dims, random_state=random_state).fit_transform(array).astype(np.float32)


def _pca_first(
    array: np.ndarray, pca_dims: int | None, random_state: int
) -> tuple[np.ndarray, int | None]:
    """PCA to ``pca_dims`` when the embeddings are wider; returns the data and the dims used."""
    if pca_dims is None or array.shape[1] <= pca_dims:
        return array, None
    reduced = pca_reduce(array, pca_dims, random_state)
    return reduced, reduced.shape[1]


def _check_positive(**values: float | None) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"{key} must be > 0, got {value}")


@EXPLAINERS.register("pca")
class PCAProjection(ProjectionExplainer):
    """Linear projection on the top principal components: fast, global, and exact."""

    name = "pca"

    def __init__(self, n_components: int = 2, random_state: int = 0):
        _check_positive(n_components=n_components)
        self.n_components = n_components
        self.random_state = random_state

    def fit_transform(self, embeddings: np.ndarray) -> Projection:
        """Coordinates ``(N, n_components)`` of ``embeddings`` ``(N, D)``."""
        array = check_embeddings(embeddings, self.name, min_points=max(2, self.n_components))
        coords = pca_reduce(array, self.n_components, self.random_state)
        params = {"n_components": self.n_components, "random_state": self.random_state}
        return Projection(coords, self.name, params)


@EXPLAINERS.register("tsne", aliases=("t-sne",))
class TSNEProjection(ProjectionExplainer):
    """t-SNE after PCA to ``pca_dims``; ``perplexity`` is clamped to ``(N - 1) / 3`` for small N.

    ``n_jobs=-1`` uses every core. openTSNE uses FFT-interpolated gradients from
    :data:`FFT_MIN_POINTS` points on (two components only) and Barnes-Hut below.
    """

    name = "tsne"

    def __init__(
        self,
        n_components: int = 2,
        perplexity: float = 30.0,
        pca_dims: int | None = 50,
        random_state: int = 0,
        n_jobs: int = -1,
    ):
        _check_positive(n_components=n_components, perplexity=perplexity, pca_dims=pca_dims)
        self.n_components = n_components
        self.perplexity = perplexity
        self.pca_dims = pca_dims
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit_transform(self, embeddings: np.ndarray) -> Projection:
        """Coordinates ``(N, n_components)``; ``params`` records the perplexity actually used."""
        array = check_embeddings(embeddings, self.name, min_points=MIN_POINTS)
        data, pca_dims = _pca_first(array, self.pca_dims, self.random_state)
        perplexity = min(self.perplexity, (len(data) - 1) / 3)
        coords, implementation = self._run(data, perplexity)
        params = {
            "n_components": self.n_components,
            "perplexity": perplexity,
            "pca_dims": pca_dims,
            "random_state": self.random_state,
            "implementation": implementation,
        }
        return Projection(coords.astype(np.float32), self.name, params)

    def gradient_method(self, n_points: int) -> str:
        """openTSNE's negative-gradient method for ``n_points`` (FFT supports 2-D at most)."""
        return "fft" if n_points >= FFT_MIN_POINTS and self.n_components <= 2 else "bh"

    def _run(self, data: np.ndarray, perplexity: float) -> tuple[np.ndarray, str]:
        try:
            from openTSNE import TSNE
        except ImportError:
            return self._run_sklearn(data, perplexity), "scikit-learn"
        tsne = TSNE(
            n_components=self.n_components,
            perplexity=perplexity,
            negative_gradient_method=self.gradient_method(len(data)),
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        return np.asarray(tsne.fit(data)), "openTSNE"

    def _run_sklearn(self, data: np.ndarray, perplexity: float) -> np.ndarray:
        from sklearn.manifold import TSNE

        tsne = TSNE(
            n_components=self.n_components,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        return tsne.fit_transform(data)


@EXPLAINERS.register("umap")
class UMAPProjection(ProjectionExplainer):
    """UMAP after PCA to ``pca_dims``; ``n_neighbors`` is clamped to ``N - 1`` for small N.

    Needs umap-learn (the ``[umap]`` extra). Its numba kernels compile on first use (15-45 s)
    unless ``NUMBA_CACHE_DIR`` points at a persistent directory.
    """

    name = "umap"

    def __init__(
        self,
        n_components: int = 2,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        pca_dims: int | None = 50,
        random_state: int = 0,
        metric: str = "euclidean",
    ):
        _check_positive(n_components=n_components, n_neighbors=n_neighbors, pca_dims=pca_dims)
        if min_dist < 0:
            raise ValueError(f"min_dist must be >= 0, got {min_dist}")
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.pca_dims = pca_dims
        self.random_state = random_state
        self.metric = metric

    def fit_transform(self, embeddings: np.ndarray) -> Projection:
        """Coordinates ``(N, n_components)``; ``params`` records the neighbours actually used."""
        umap = _import_umap()
        array = check_embeddings(embeddings, self.name, min_points=MIN_POINTS)
        data, pca_dims = _pca_first(array, self.pca_dims, self.random_state)
        n_neighbors = max(2, min(self.n_neighbors, len(data) - 1))
        reducer = umap.UMAP(
            n_components=self.n_components,
            n_neighbors=n_neighbors,
            min_dist=self.min_dist,
            metric=self.metric,
            random_state=self.random_state,
            n_jobs=1,  # a fixed random_state makes umap-learn single-threaded anyway
        )
        coords = reducer.fit_transform(data)
        params: dict[str, Any] = {
            "n_components": self.n_components,
            "n_neighbors": n_neighbors,
            "min_dist": self.min_dist,
            "pca_dims": pca_dims,
            "random_state": self.random_state,
            "metric": self.metric,
        }
        return Projection(np.asarray(coords, dtype=np.float32), self.name, params)


def _import_umap() -> Any:
    try:
        import umap
    except ImportError as exc:
        raise ImportError(f"the 'umap' projection needs umap-learn: {UMAP_INSTALL_HINT}") from exc
    return umap
