"""``AnalysisResult``: read a finished or partial analysis folder back."""

from __future__ import annotations

import io
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .store import (
    CAM_INDEX,
    CAMS,
    EMBEDDINGS,
    FORMAT,
    PREDICTION_FIELDS,
    PREDICTIONS,
    REPORT,
    RUN_JSON,
    complete_text,
    embedding_filename,
    projection_stem,
    read_json,
)

ImageKey = int | str | os.PathLike
SHOWN_METRICS = ("accuracy", "f1", "roc_auc")


def read_predictions(path: Path) -> pd.DataFrame:
    """predictions.csv as a DataFrame (complete lines only); p_fake is NaN for failed images."""
    text = complete_text(path) if path.exists() else ""
    if not text:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in PREDICTION_FIELDS})
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    frame["index"] = frame["index"].astype(np.int64)
    frame["p_fake"] = pd.to_numeric(frame["p_fake"].replace("", np.nan))
    frame["label"] = frame["label"].replace("", None)
    return frame


class AnalysisResult:
    """The outputs of :func:`deepfake_xai.analyze` in folder ``out``, finished or not.

    Images are addressed by their index (their order in the run) or their path.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        run_json = self.out / RUN_JSON
        if not run_json.exists():
            raise FileNotFoundError(f"{self.out}: not an analysis folder (no {RUN_JSON})")
        self.info: dict[str, Any] = read_json(run_json)
        if self.info.get("format") != FORMAT:
            raise ValueError(
                f"{run_json}: not a deepfake-xai analysis ({self.info.get('format')!r})"
            )
        self._cams: dict[str, Any] = read_json(self.out / CAMS / CAM_INDEX)

    # -- tables -----------------------------------------------------------------------------
    @cached_property
    def predictions(self) -> pd.DataFrame:
        """One row per image and detector: index, path, detector, p_fake, verdict, label, error."""
        return read_predictions(self.out / PREDICTIONS)

    @property
    def errors(self) -> pd.DataFrame:
        """The images that could not be read: index, path, reason."""
        rows = self.predictions[self.predictions["error"] != ""]
        rows = rows.drop_duplicates("index")[["index", "path", "error"]]
        return rows.rename(columns={"error": "reason"}).reset_index(drop=True)

    @property
    def detectors(self) -> list[str]:
        return list(self.info["parameters"]["detectors"])

    @property
    def paths(self) -> list[str]:
        """Every input image, in run order."""
        return list(self._cams["images"])

    @property
    def heatmap_kinds(self) -> list[tuple[str, str]]:
        """The stored (explainer, layer) pairs."""
        return sorted({(m["explainer"], m["layer"]) for m in self._cams["files"].values()})

    @property
    def summary(self) -> dict[str, Any]:
        """Counts, errors, throughput and metrics (empty while the run is unfinished)."""
        return dict(self.info.get("summary", {}))

    @property
    def status(self) -> str:
        """``running``, ``interrupted``, ``failed`` or ``complete``."""
        return str(self.info.get("status"))

    @property
    def report_path(self) -> Path | None:
        path = self.out / REPORT
        return path if path.exists() else None

    def projection(self, detector: str) -> pd.DataFrame:
        """The 2-D projection of ``detector``'s embeddings: index, path, x, y, label, p_fake."""
        self._check_detector(detector)
        path = self.out / f"{projection_stem(detector)}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no projection (run with projection= set)")
        return pd.read_csv(path, keep_default_na=False, na_values={"p_fake": [""]})

    # -- arrays -----------------------------------------------------------------------------
    def embeddings(self, detector: str) -> np.ndarray:
        """``(N, D)`` float32 embeddings in run order; rows of unprocessed images are zero."""
        self._check_detector(detector)
        path = self.out / EMBEDDINGS / embedding_filename(detector)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no embeddings stored yet for {detector!r}")
        return np.load(path, mmap_mode="r").astype(np.float32)

    def index_of(self, key: ImageKey) -> int:
        """The run index of an image given by index or path."""
        if isinstance(key, (int, np.integer)):
            if not 0 <= key < len(self.paths):
                raise IndexError(f"image index {key} out of range for {len(self.paths)} images")
            return int(key)
        wanted = {os.fspath(key), os.path.abspath(os.fspath(key))}
        for i, path in enumerate(self.paths):
            if path in wanted:
                return i
        raise KeyError(f"{os.fspath(key)}: not among the {len(self.paths)} images of this run")

    def heatmap(
        self, key: ImageKey, detector: str, layer: str = "final", explainer: str = "gradcam"
    ) -> np.ndarray:
        """The stored ``(h, w)`` float32 heatmap in [0, 1] (feature resolution)."""
        index = self.index_of(key)
        self._check_processed(index, detector)
        maps = np.load(self.out / CAMS / self._cam_file(detector, explainer, layer), mmap_mode="r")
        return np.asarray(maps[index], dtype=np.float32)

    def image(self, key: ImageKey, detector: str) -> Image.Image:
        """The image decoded and harmonised as ``detector`` saw it."""
        from ..images import load_image
        from ..preprocessing import Harmonization

        index = self.index_of(key)
        config = self.info["detectors"][self._check_detector(detector)]
        path = self.paths[index]
        if self.info.get("dataset"):
            raise ValueError(f"{path}: came from a Dataset, so there is no file to decode")
        return Harmonization.from_dict(config["harmonization"]).apply(load_image(path))

    def overlay(
        self,
        key: ImageKey,
        detector: str,
        layer: str = "final",
        explainer: str = "gradcam",
        alpha: float = 0.5,
        colormap: str = "jet",
    ) -> Image.Image:
        """The harmonised image with its heatmap drawn over it."""
        from ..render import overlay

        heatmap = self.heatmap(key, detector, layer, explainer)
        return overlay(self.image(key, detector), heatmap, alpha=alpha, colormap=colormap)

    # -- checks -----------------------------------------------------------------------------
    def _check_detector(self, detector: str) -> str:
        if detector not in self.detectors:
            raise KeyError(f"no detector {detector!r} in this run; it has {self.detectors}")
        return detector

    def _cam_file(self, detector: str, explainer: str, layer: str) -> str:
        self._check_detector(detector)
        for name, meta in self._cams["files"].items():
            if (meta["detector"], meta["explainer"], meta["layer"]) == (detector, explainer, layer):
                return name
        raise KeyError(
            f"no {explainer!r} heatmaps at layer {layer!r} for {detector!r}; "
            f"stored (explainer, layer): {self.heatmap_kinds}"
        )

    def _check_processed(self, index: int, detector: str) -> None:
        rows = self.predictions
        row = rows[(rows["index"] == index) & (rows["detector"] == detector)]
        if row.empty:
            raise ValueError(f"{self.paths[index]}: not processed yet by {detector!r}")
        if row["error"].iloc[0]:
            raise ValueError(f"{self.paths[index]}: could not be read ({row['error'].iloc[0]})")

    def describe(self) -> str:
        """The end-of-run summary as a few lines of text (what the CLI prints)."""
        s = self.summary
        if not s:
            return f"{self.out}: {self.status}, no summary yet"
        lines = [
            f"analyzed {s['images']} images with {', '.join(s['detectors'])}: "
            f"{s['processed_now']} now in {s['seconds']:.1f} s "
            f"({s['images_per_second']:.1f} images/s), {s['resumed']} from before",
            f"  readable: {s['processed']}, unreadable: {s['errors']}"
            + (f" (reasons in {self.out / 'errors.csv'})" if s["errors"] else ""),
        ]
        for detector, metrics in s.get("metrics", {}).items():
            shown = ", ".join(
                f"{name} {metrics[name]:.3f}"
                for name in SHOWN_METRICS
                if metrics.get(name) is not None
            )
            lines.append(f"  {detector}: {shown} ({metrics['n']} labelled images)")
        report = f" (report: {self.report_path})" if self.report_path else ""
        lines.append(f"outputs: {self.out}{report}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"AnalysisResult({str(self.out)!r}, images={len(self.paths)}, "
            f"detectors={self.detectors}, status={self.status!r})"
        )
