"""``AnalysisResult``: read an analysis folder back, finished or not, from either backend."""

from __future__ import annotations

import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from ..explainers.base import heatmap_layers
from ..paths import display_path, text_to_path
from ..reliability import VERDICTS
from .outcomes import BRIEF, NO_STATISTICS, SHORT
from .store import (
    EMBEDDING,
    ERRORS,
    FACE_FIELDS,
    FILLED_TEXT,
    FORMAT,
    NO_FACE,
    OK,
    REPORT,
    ROW_FIELDS,
    RUN_JSON,
    SOURCE,
    UNREADABLE,
    VIDEOS,
    cam_column,
    column_values,
    pandas_type,
    part_files,
    projection_stem,
    read_inputs,
    read_json,
    read_parts,
)

ImageKey = int | str | os.PathLike
SHOWN_METRICS = ("accuracy", "f1", "roc_auc")
COLUMNS = (*ROW_FIELDS, SOURCE)
# by_source()'s columns after the verdict counts
BY_SOURCE = (
    "no_verdict",
    "labelled",
    "accuracy",
    "fakes",
    "fakes_caught",
    "reals",
    "reals_called_fake",
)
NO_SOURCE = "(none)"


class AnalysisResult:
    """The outputs of :func:`deepfake_xai.analyze` in folder ``out``, finished or not.

    Images are addressed by their index (their order in the run) or their path. Tables hold
    paths as strings that ``open()`` accepts, whatever bytes the file name holds (see
    :mod:`deepfake_xai.paths`); use :func:`deepfake_xai.paths.display_path` to show them.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        run_json = self.out / RUN_JSON
        if not run_json.exists():
            raise FileNotFoundError(f"{self.out}: not an analysis folder (no {RUN_JSON})")
        self.info: dict[str, Any] = read_json(run_json)
        if self.info.get("format") != FORMAT:
            raise ValueError(
                f"{run_json}: not a deepfake-xai analysis in format {FORMAT!r} "
                f"({self.info.get('format')!r})"
            )

    # -- tables -----------------------------------------------------------------------------
    @cached_property
    def predictions(self) -> pd.DataFrame:
        """One row per image and detector, in run order: index, path, detector, p_fake,
        verdict (``fake``, ``real``: no signs of generation found, which is no proof, or
        ``uncertain``: unlike the faces the detector learnt from, so its P(fake) is not to be
        relied on), ood_score (the distance to those faces, 1 or more flags; NaN when not
        measured), reliable (<NA> when the detector has no reliability statistics), reasons
        (why not reliable, ``"; "``-joined), label, error, then status (ok, unreadable,
        no_face, invalid_score), faces (the number found; <NA> with the face check off) and the
        box of the face analysed (face_left, face_top, face_width, face_height), jpeg_quality
        (from the file's header; <NA> for other formats), model_version (the fingerprint of the
        detector's checkpoint file; ``""`` when it came from none) and source (where the image
        comes from: a manifest's group or a sub-folder, see :mod:`.inputs`; ``""`` when
        unknown). Rows without a verdict have NaN p_fake, an empty verdict and their reason in
        ``error``. A video has a row per face of each sampled frame: ``video`` is True, with
        the face's ``track``, the ``frame`` number, its ``time`` and the video's ``duration``
        in seconds (see :attr:`videos`); photos have ``video`` False and the others <NA>."""
        table = read_parts(self.out, [f for f in ROW_FIELDS if f not in ("index", "detector")])
        frame = table.to_pandas(types_mapper=pandas_type)
        if frame.empty:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
        for name in FILLED_TEXT:
            frame[name] = frame[name].fillna("")
        frame["video"] = frame["video"].fillna(False).astype(bool)
        frame["path"] = pd.Series([text_to_path(p) for p in frame["path"]], dtype=object)
        frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
        sources = self._inputs.set_index("index")[SOURCE]
        frame[SOURCE] = frame["index"].map(sources).fillna("").astype(object)
        order = {name: k for k, name in enumerate(self.detectors)}
        frame["_order"] = frame["detector"].map(order)
        keys = ["index", "frame", "track", "_order"]  # a video's frames in time order
        frame = frame.sort_values(keys, kind="stable").drop(columns="_order")
        return frame[list(COLUMNS)].reset_index(drop=True)

    @cached_property
    def tracks(self) -> pd.DataFrame:
        """One row per face track of each video and detector (see :mod:`.videos`)."""
        from .videos import track_table

        return track_table(self.predictions)

    @cached_property
    def videos(self) -> pd.DataFrame:
        """One row per video and detector: path, duration, frames_sampled, no_face_frames,
        tracks, p_fake (deciding), p_mean and p_high, flagged, verdict, reliability, error
        (see :mod:`.videos` and :mod:`deepfake_xai.video_verdict`); empty without videos."""
        from .videos import video_table

        return video_table(self.predictions, self.tracks)

    def by_source(self) -> pd.DataFrame:
        """One row per source and detector (sources by name, ``""`` last): ``images``, one
        ``said_<verdict>`` count per verdict given in the run, ``no_verdict``, and over the
        labelled images with a verdict: ``labelled``, ``accuracy``, ``fakes`` and
        ``fakes_caught`` (the share of them called fake), ``reals`` and ``reals_called_fake``
        (the share of them called fake); NaN where a share has no image to count."""
        from ..metrics import per_group_metrics

        rows = self.predictions
        verdicts = sorted(v for v in rows["verdict"].unique() if v)
        table = []
        for detector in self.detectors:
            mine = rows[rows["detector"] == detector]
            scored = mine[(mine["status"] == OK) & mine["label"].notna()]
            metrics = per_group_metrics(
                (scored["label"] == "fake").to_numpy(dtype=np.int64),
                scored["p_fake"].to_numpy(dtype=np.float64),
                scored[SOURCE].tolist(),
            )
            groups = sorted(mine.groupby(SOURCE), key=lambda g: (g[0] == "", g[0]))
            for source, group in groups:
                counts = group["verdict"].value_counts()
                m = metrics.get(source, {})
                table.append(
                    {
                        SOURCE: source,
                        "detector": detector,
                        "images": int(group["index"].nunique()),
                        **{f"said_{v}": int(counts.get(v, 0)) for v in verdicts},
                        "no_verdict": int((group["verdict"] == "").sum()),
                        "labelled": m.get("n", 0),
                        "accuracy": m.get("accuracy", np.nan),
                        "fakes": m.get("n_fake", 0),
                        "fakes_caught": _share(m.get("tp", 0), m.get("n_fake", 0)),
                        "reals": m.get("n_real", 0),
                        "reals_called_fake": _share(m.get("fp", 0), m.get("n_real", 0)),
                    }
                )
        said = [f"said_{v}" for v in verdicts]
        return pd.DataFrame(table, columns=[SOURCE, "detector", "images", *said, *BY_SOURCE])

    def verdicts(self) -> dict[str, dict[str, int]]:
        """Per detector, how many images got each verdict (fake, real, uncertain) and how many
        got ``none`` (unreadable, no face, unusable score)."""
        rows = self.predictions
        out = {}
        for name in self.detectors:
            given = rows.loc[rows["detector"] == name, "verdict"]
            counts = {v: int((given == v).sum()) for v in VERDICTS}
            out[name] = {**counts, "none": int((given == "").sum())}
        return out

    @property
    def errors(self) -> pd.DataFrame:
        """The images that could not be read: index, path, reason."""
        rows = self.predictions[self.predictions["status"] == UNREADABLE]
        rows = rows.drop_duplicates("index")[["index", "path", "error"]]
        return rows.rename(columns={"error": "reason"}).reset_index(drop=True)

    @property
    def detectors(self) -> list[str]:
        return list(self.info["parameters"]["detectors"])

    @cached_property
    def _inputs(self) -> pd.DataFrame:
        return read_inputs(self.out)

    @property
    def paths(self) -> list[str]:
        """Every input image, in run order."""
        return list(self._inputs["path"])

    @property
    def heatmap_kinds(self) -> list[tuple[str, str]]:
        """The stored (explainer, layer) pairs."""
        params = self.info["parameters"]
        return sorted(
            (e, layer)
            for e in params["explainers"]
            for layer in heatmap_layers(e, params["layers"])
        )

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
        """The 2-D projection of ``detector``'s embeddings: index, path, x, y, label, p_fake,
        verdict (absent from projections written before the three outcomes)."""
        self._check_detector(detector)
        path = self.out / f"{projection_stem(detector)}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no projection (run with projection= set)")
        table = pd.read_csv(
            path, keep_default_na=False, na_values={"p_fake": [""]}, dtype={"path": object}
        )
        table["path"] = pd.Series([text_to_path(p) for p in table["path"]], dtype=object)
        return table

    # -- arrays -----------------------------------------------------------------------------
    def embeddings(self, detector: str) -> np.ndarray:
        """``(N, D)`` float32 embeddings in run order; rows of images without one are zero
        (and of videos: their frames' embeddings are in the parts, a row per face)."""
        self._check_detector(detector)
        table = read_parts(self.out, [EMBEDDING, "video"], detector)
        photo = pc.invert(pc.fill_null(table["video"], False))
        table = table.filter(pc.and_(pc.is_valid(table[EMBEDDING]), photo))
        if table.num_rows == 0:
            raise FileNotFoundError(f"{self.out}: no embeddings stored yet for {detector!r}")
        values = column_values(table[EMBEDDING])
        out = np.zeros((len(self.paths), values.shape[1]), dtype=np.float32)
        out[table["index"].to_numpy()] = values
        return out

    @cached_property
    def _locations(self) -> dict[tuple[int, str], tuple[Path, int]]:
        """(index, detector) -> (part, row) of each committed row (first copy)."""
        found: dict[tuple[int, str], tuple[Path, int]] = {}
        for part in part_files(self.out):
            keys = pq.read_table(part, columns=["index", "detector"])
            indices, names = keys["index"].to_pylist(), keys["detector"].to_pylist()
            for row, key in enumerate(zip(indices, names, strict=True)):
                found.setdefault(key, (part, row))
        return found

    @cached_property
    def _path_index(self) -> dict[str, int]:
        return {path: i for i, path in enumerate(self.paths)}

    def index_of(self, key: ImageKey) -> int:
        """The run index of an image given by index or path."""
        if isinstance(key, (int, np.integer)):
            if not 0 <= key < len(self.paths):
                raise IndexError(f"image index {key} out of range for {len(self.paths)} images")
            return int(key)
        text = os.fsdecode(os.fspath(key))
        for candidate in (text, os.path.abspath(text)):
            if candidate in self._path_index:
                return self._path_index[candidate]
        raise KeyError(f"{display_path(text)}: not among the {len(self.paths)} images of this run")

    def heatmap(
        self, key: ImageKey, detector: str, layer: str = "final", explainer: str = "gradcam"
    ) -> np.ndarray:
        """The stored ``(h, w)`` float32 heatmap in [0, 1] (feature resolution)."""
        index = self.index_of(key)
        self._check_kind(detector, explainer, layer)
        self._check_processed(index, detector)
        part, row = self._locations[(index, detector)]
        cell = _part_column(part, cam_column(explainer, layer)).slice(row, 1)
        return column_values(cell)[0]

    def image(self, key: ImageKey, detector: str) -> Image.Image:
        """The image decoded, face-framed and harmonised as ``detector`` saw it."""
        from ..faces import FaceBox, frame_face
        from ..images import load_image
        from ..preprocessing import Harmonization
        from .decode import draft_size

        index = self.index_of(key)
        harmonizations = {
            name: Harmonization.from_dict(config["harmonization"])
            for name, config in self.info["detectors"].items()
        }
        harmonization = harmonizations[self._check_detector(detector)]
        path = self.paths[index]
        if self.info.get("dataset"):
            raise ValueError(f"{path}: came from a Dataset, so there is no file to decode")
        if not self.faces_checked:
            draft = draft_size(list(harmonizations.values()))
            return harmonization.apply(load_image(path, draft_size=draft))
        row = self._row(index, detector)
        if row is None or row["status"] in (UNREADABLE, NO_FACE):
            reason = "not processed yet" if row is None else row["error"]
            raise ValueError(f"{display_path(path)}: no face to show ({reason})")
        box = FaceBox(*(int(row[f]) for f in FACE_FIELDS[1:]))
        return harmonization.apply(frame_face(load_image(path), box))

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

    def frame_overlay(
        self,
        key: ImageKey,
        detector: str,
        frame: int,
        track: int,
        layer: str = "final",
        explainer: str = "gradcam",
        alpha: float = 0.5,
    ) -> Image.Image:
        """A video's face ``track`` in ``frame``, decoded again and framed and harmonised as
        ``detector`` saw it, with its stored heatmap drawn over it."""
        from ..faces import FaceBox, frame_face
        from ..preprocessing import Harmonization
        from ..render import overlay
        from ..video import read_frame

        index = self.index_of(key)
        self._check_kind(detector, explainer, layer)
        place = self._frame_locations.get((index, detector, int(frame), int(track)))
        if place is None:
            name = display_path(self.paths[index])
            raise KeyError(f"{name}: no face {track} in frame {frame} analysed by {detector!r}")
        part, row = place
        heatmap = column_values(_part_column(part, cam_column(explainer, layer)).slice(row, 1))[0]
        facts = pq.read_table(part, columns=list(FACE_FIELDS[1:])).slice(row, 1).to_pylist()[0]
        config = self.info["detectors"][detector]["harmonization"]
        image = read_frame(self.paths[index], int(frame)).image
        if facts[FACE_FIELDS[1]] is not None:
            image = frame_face(image, FaceBox(*(int(facts[f]) for f in FACE_FIELDS[1:])))
        return overlay(Harmonization.from_dict(config).apply(image), heatmap, alpha=alpha)

    @cached_property
    def _frame_locations(self) -> dict[tuple[int, str, int, int], tuple[Path, int]]:
        """(index, detector, frame, track) -> (part, row) of each video face row (first copy)."""
        found: dict[tuple[int, str, int, int], tuple[Path, int]] = {}
        for part in part_files(self.out):
            names = pq.read_schema(part).names
            if "frame" not in names:
                continue
            keys = pq.read_table(part, columns=["index", "detector", "frame", "track"])
            columns = [keys[c].to_pylist() for c in keys.column_names]
            for row, key in enumerate(zip(*columns, strict=True)):
                if key[2] is not None and key[3] is not None:
                    found.setdefault(key, (part, row))
        return found

    @property
    def faces_checked(self) -> bool:
        """Whether faces were found first (the detectors then saw the largest face, framed)."""
        return bool(self.info["parameters"].get("faces", False))

    # -- checks -----------------------------------------------------------------------------
    def _check_detector(self, detector: str) -> str:
        if detector not in self.detectors:
            raise KeyError(f"no detector {detector!r} in this run; it has {self.detectors}")
        return detector

    def _check_kind(self, detector: str, explainer: str, layer: str) -> None:
        self._check_detector(detector)
        if (explainer, layer) not in self.heatmap_kinds:
            raise KeyError(
                f"no {explainer!r} heatmaps at layer {layer!r} for {detector!r}; "
                f"stored (explainer, layer): {self.heatmap_kinds}"
            )

    def _row(self, index: int, detector: str) -> pd.Series | None:
        rows = self.predictions
        row = rows[(rows["index"] == index) & (rows["detector"] == detector)]
        return None if row.empty else row.iloc[0]

    def _check_processed(self, index: int, detector: str) -> None:
        row = self._row(index, detector)
        name = display_path(self.paths[index])
        if row is None:
            raise ValueError(f"{name}: not processed yet by {detector!r}")
        if row["status"] == UNREADABLE:
            raise ValueError(f"{name}: could not be read ({row['error']})")
        if row["status"] == NO_FACE:
            raise ValueError(f"{name}: no heatmap ({row['error']})")

    def describe(self) -> str:
        """The end-of-run summary as a few lines of text (what the CLI prints)."""
        s = self.summary
        if not s:
            return f"{self.out}: {self.status}, no summary yet"
        inputs = "images and videos" if s.get("videos") else "images"
        lines = [
            "every image was already analysed; nothing recomputed" if s.get("up_to_date") else "",
            f"analyzed {s['images']} {inputs} with {', '.join(s['detectors'])}: "
            f"{s['processed_now']} in {s['seconds']:.1f} s "
            f"({s['images_per_second']:.1f} images/s, torch threads: {s.get('threads', '?')}"
            f"{', ' + s['backend'] if s.get('backend') else ''}), {s['resumed']} from before",
            f"  readable: {s['processed']}, unreadable: {s['errors']}"
            + (f" (reasons in {self.out / ERRORS})" if s["errors"] else ""),
        ]
        if s.get("no_face") is not None:
            lines.append(f"  no face found: {s['no_face']} (no verdict for them)")
        if s.get("invalid_scores"):
            lines.append(f"  NaN or infinite scores (no verdict): {s['invalid_scores']}")
        lines += self._describe_verdicts(s.get("verdicts", {}), frames=bool(s.get("videos")))
        lines += self._describe_videos(s.get("videos"))
        for detector, metrics in s.get("metrics", {}).items():
            shown = ", ".join(
                f"{name} {metrics[name]:.3f}"
                for name in SHOWN_METRICS
                if metrics.get(name) is not None
            )
            lines.append(f"  {detector}: {shown} ({metrics['n']} labelled images)")
        lines += self._describe_sources()
        report = f" (report: {self.report_path})" if self.report_path else ""
        lines.append(f"outputs: {self.out}{report}")
        return "\n".join(line for line in lines if line)

    def _describe_verdicts(
        self, verdicts: dict[str, dict[str, int]], frames: bool = False
    ) -> list[str]:
        """A line per detector: its model version and how many images (and video frames, with
        ``frames``) got each outcome."""
        lines = []
        counted = " (photos and video frames)" if frames else ""
        for detector, counts in verdicts.items():
            facts = self.info["detectors"].get(detector, {})
            version = f" (model {facts['fingerprint']})" if facts.get("fingerprint") else ""
            said = ", ".join(f"{SHORT[v]} {counts.get(v, 0)}" for v in VERDICTS)
            lines.append(f"  {detector}{version}{counted}: {said}")
            if "reliability" in facts and facts["reliability"] is None:
                lines.append(f"    {detector} {NO_STATISTICS}")
        return [*lines, f"  ({BRIEF})"] if lines else []

    def _describe_videos(self, videos: dict[str, Any] | None) -> list[str]:
        """Videos, frames, and each detector's verdicts over videos (details in videos.csv)."""
        if not videos:
            return []
        lines = [
            f"  videos: {videos['videos']}, {videos['frames_sampled']} frames sampled, "
            f"{videos['no_face_frames']} without a face (per video: {self.out / VIDEOS})"
        ]
        for detector, counts in videos["verdicts"].items():
            said = ", ".join(f"{SHORT[v]} {counts.get(v, 0)}" for v in VERDICTS)
            lines.append(f"    {detector} on videos: {said}, no verdict {counts.get('', 0)}")
        return lines

    def _describe_sources(self) -> list[str]:
        """A line per source and detector, when the images come from several sources."""
        table = self.by_source()
        if table[SOURCE].nunique() < 2:
            return []
        lines = ["  by source:"]
        for row in table.to_dict("records"):
            said = [
                f"{SHORT[k.removeprefix('said_')]} {v}"
                for k, v in row.items()
                if k.startswith("said_")
            ]
            scored = f", accuracy {row['accuracy']:.3f}" if row["labelled"] else ""
            lines.append(
                f"    {row[SOURCE] or NO_SOURCE}, {row['detector']}: {row['images']} images "
                f"({', '.join(said) or 'no verdict'}){scored}"
            )
        return lines

    def __repr__(self) -> str:
        return (
            f"AnalysisResult({str(self.out)!r}, images={len(self.paths)}, "
            f"detectors={self.detectors}, status={self.status!r})"
        )


def _share(count: int, total: int) -> float:
    return count / total if total else np.nan


@lru_cache(maxsize=16)
def _part_column(part: Path, column: str) -> pa.ChunkedArray:
    """One column of a committed part (parts never change once committed)."""
    return pq.read_table(part, columns=[column])[column]
