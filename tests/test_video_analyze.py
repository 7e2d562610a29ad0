"""Videos through analyze, the CLI and dx.explain: verdicts per video, tracks, frames without a
face, bad files, and a killed run that resumes with every frame row exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from video_data import face_pixels, numbered_frames, write_clip

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.cli import main
from deepfake_xai.video import Sampling

CANDIDATES = 6
FRAMES = 4  # sampled per clip (count), at 4 fps over 2 s
SAMPLING = Sampling(count=FRAMES)


@pytest.fixture(scope="module")
def detector():
    return dx.load_detector("default", device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, detector) -> dict[str, Path]:
    """A real and a fake clip that the shipped detector calls so (chosen among the first shared
    faces by what it says on each clip), a clip without a face, one whose face changes from
    that real photo to that fake halfway, a truncated file, a text file named .mp4, a photo."""
    from conftest import SHARED_FACES

    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared face sample not found at {SHARED_FACES}")
    folder = tmp_path_factory.mktemp("clips")
    scratch = tmp_path_factory.mktemp("candidates")
    val = SHARED_FACES / "val"

    def first(label: str) -> np.ndarray:
        for path in sorted((val / label).glob("*.jpg"))[:CANDIDATES]:
            clip = write_clip(scratch / f"{label}-{path.stem}.mp4", [face_pixels(path)] * 2)
            said = dx.explain(detector, clip, method=None, sampling=Sampling(count=1))
            if said.verdict.verdict == label:
                return face_pixels(path)
        pytest.fail(f"the shipped detector calls none of {CANDIDATES} {label} clips {label}")

    real, fake = first("real"), first("fake")
    files = {
        "real": write_clip(folder / "real.mp4", [real] * 8),
        "fake": write_clip(folder / "fake.mp4", [fake] * 8),
        "noface": write_clip(folder / "noface.mp4", [np.full_like(real, 90)] * 8),
        "change": write_clip(folder / "change.mp4", [real] * 4 + [fake] * 4),
        "photo": folder / "photo.png",
        "truncated": folder / "truncated.mp4",
        "notvideo": folder / "notvideo.mp4",
    }
    Image.fromarray(real).save(files["photo"])
    data = files["fake"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["notvideo"].write_text("#EXTM3U\nhttp://example.invalid/stream.ts\n")
    return files


@pytest.fixture(scope="module")
def run(clips, detector, tmp_path_factory) -> AnalysisResult:
    out = tmp_path_factory.mktemp("run") / "out"
    return analyze(
        clips["real"].parent,
        detectors=[detector],
        projection=None,
        out=out,
        num_workers=0,
        progress=False,
        video=SAMPLING,
    )


def _video(result: AnalysisResult, path: Path):
    rows = result.videos[result.videos["path"] == str(path)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_one_verdict_per_video_with_tracks_and_frames(run, clips):
    for label in ("real", "fake"):
        video = _video(run, clips[label])
        assert video["verdict"] == label
        assert (video["frames_sampled"], video["no_face_frames"], video["tracks"]) == (4, 0, 1)
        assert video["duration"] == 2.0 and video["reliability"].startswith("100% of 4")
        assert video["flagged"] == (1.0 if label == "fake" else 0.0)
        assert video["p_fake"] == video["p_mean"] and np.isfinite(video["p_high"])
    frames = run.predictions[run.predictions["path"] == str(clips["fake"])]
    assert frames["frame"].tolist() == [1, 3, 5, 7] and frames["track"].tolist() == [0] * 4
    assert frames["time"].tolist() == [0.25, 0.75, 1.25, 1.75] and frames["video"].all()
    assert (run.out / "videos.csv").exists()
    photo = run.predictions[run.predictions["path"] == str(clips["photo"])]
    assert len(photo) == 1 and not photo["video"].iloc[0] and photo["frame"].isna().all()


def test_videos_decoded_in_threads_give_the_same_rows(run, clips, detector, tmp_path):
    """Three decoding threads (each video and photo in its own thread, bad files among them)
    give the rows and verdicts of decoding in the caller's thread, in the same order."""
    threaded = analyze(
        clips["real"].parent, detectors=[detector], projection=None, out=tmp_path / "out",
        num_workers=3, progress=False, report=False, video=SAMPLING,
    )  # fmt: skip
    columns = ["path", "status", "frame", "track", "face_width"]
    one, three = run.predictions, threaded.predictions
    pd.testing.assert_frame_equal(one[columns], three[columns])
    np.testing.assert_allclose(one["p_fake"], three["p_fake"], atol=1e-6)
    assert run.videos["verdict"].tolist() == threaded.videos["verdict"].tolist()


def test_frames_without_a_face_are_counted_not_scored(run, clips):
    video = _video(run, clips["noface"])
    assert (video["frames_sampled"], video["no_face_frames"], video["tracks"]) == (4, 4, 0)
    assert video["verdict"] == "" and video["reliability"] == "no frame scored"
    rows = run.predictions[run.predictions["path"] == str(clips["noface"])]
    assert (rows["status"] == "no_face").all() and rows["p_fake"].isna().all()


def test_a_face_that_changes_halfway_shows_in_its_frames(run, clips):
    rows = run.predictions[run.predictions["path"] == str(clips["change"])]
    # the new face sits where the old one was, so it continues the track (no appearance model)
    assert rows["verdict"].tolist() == ["real", "real", "fake", "fake"]
    track = run.tracks[run.tracks["path"] == str(clips["change"])].iloc[0]
    assert track["flagged"] == 0.5 and track["p_high"] > 0.5
    assert _video(run, clips["change"])["verdict"] in ("fake", "real")  # the mean decides


def test_bad_videos_are_errors_that_name_the_reason_and_the_run_goes_on(run, clips):
    errors = run.errors.set_index("path")["reason"]
    assert errors[str(clips["truncated"])].startswith("truncated: the MP4/MOV box")
    assert errors[str(clips["notvideo"])].startswith("not a video file")
    assert _video(run, clips["notvideo"])["error"] == errors[str(clips["notvideo"])]
    assert run.summary["videos"]["videos"] == 6 and run.summary["errors"] == 2
    page = run.report_path.read_text(encoding="utf-8")
    assert "<h2>Videos</h2>" in page and 'alt="timeline of fake.mp4"' in page


def test_the_suspicious_frames_can_be_shown_with_their_heatmaps(run, clips):
    index = run.index_of(clips["fake"])
    image = run.frame_overlay(index, run.detectors[0], frame=5, track=0)
    assert image.size[0] == image.size[1] > 0
    with pytest.raises(KeyError, match="no face 1 in frame 5"):
        run.frame_overlay(index, run.detectors[0], frame=5, track=1)


def test_explain_on_a_video_gives_per_frame_results(clips, detector):
    said = dx.explain(detector, clips["change"], sampling=SAMPLING)
    assert said.frames["verdict"].tolist() == ["real", "real", "fake", "fake"]
    assert said.frames["row"].tolist() == [0, 1, 2, 3] and list(said.tracks) == [0]
    assert said.explanation.heatmaps["final"].maps.shape[0] == 4
    top = said.suspicious(1).iloc[0]
    assert top["frame"] in (5, 7) and said.overlay(int(top["row"])).size[0] > 0
    assert said.timeline_png().startswith(b"\x89PNG")
    record = json.loads(json.dumps(said.as_dict()))  # JSON-ready, as an app's API returns it
    assert record["verdict"]["verdict"] == said.verdict.verdict and record["frames_sampled"] == 4
    assert [f["verdict"] for f in record["frames"]] == ["real", "real", "fake", "fake"]
    with pytest.raises(dx.VideoLoadError, match="notvideo.mp4: not a video file"):
        dx.explain(detector, clips["notvideo"])


def test_the_cli_analyzes_one_clip_and_exits_1_on_a_bad_one(clips, tmp_path, capsys):
    options = ["--projection", "none", "--no-progress", "--workers", "0", "--video-frames", "2"]
    assert main(["analyze", str(clips["fake"]), "--out", str(tmp_path / "a"), *options]) == 0
    said = capsys.readouterr().out
    assert "videos: 1, 2 frames sampled, 0 without a face" in said
    assert "on videos: fake 1, no signs found 0, uncertain 0" in said
    assert main(["analyze", str(clips["notvideo"]), "--out", str(tmp_path / "b"), *options]) == 1
    assert "not a video file" in (tmp_path / "b" / "errors.csv").read_text()


# -- a killed run resumes with every frame row exactly once -------------------------------------
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from deepfake_xai.analysis import analyze, store
    from deepfake_xai.video import Sampling

    original, added = store.RunStore.add, []

    def add(self, block):  # commit each video's rows at once; die after the third
        original(self, block)
        self.commit()
        added.append(block)
        if len(added) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    store.RunStore.add = add
    analyze(sys.argv[1], detectors=[sys.argv[2]], explainers=["gradcam"], projection=None,
            out=sys.argv[3], batch_size=4, num_workers=0, progress=False, report=False,
            faces=False, device="cpu", video=Sampling(count=4, max_frames=4))
    """
)


def test_a_killed_run_over_videos_resumes_with_every_frame_once(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for k in range(6):
        write_clip(folder / f"clip{k}.mp4", numbered_frames(8 + k))
    with pytest.warns(dx.detectors.UntrainedDetectorWarning):
        tiny = dx.load_detector("mobilenetv2_100", image_size=64, device="cpu")
    checkpoint = str(tiny.save(tmp_path / "tiny"))
    out = tmp_path / "out"
    env = {**os.environ, "DEEPFAKE_XAI_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(folder), checkpoint, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    assert len(AnalysisResult(out).predictions) == 3 * 4
    options = {"explainers": ["gradcam"], "projection": None, "batch_size": 4, "faces": False}
    resumed = analyze(
        folder,
        detectors=[checkpoint],
        out=out,
        num_workers=0,
        progress=False,
        report=False,
        device="cpu",
        video=Sampling(count=4, max_frames=4),
        **options,
    )
    assert resumed.summary["resumed"] == 3 and resumed.summary["processed_now"] == 3
    rows = resumed.predictions
    assert len(rows) == 6 * 4 and not rows.duplicated(["index", "frame", "track"]).any()
    assert sorted(rows.groupby("index")["frame"].nunique()) == [4] * 6
    assert (resumed.videos["frames_sampled"] == 4).all() and (resumed.videos["tracks"] == 1).all()


def test_the_ray_backend_refuses_videos_naming_the_first(clips, detector, tmp_path):
    pytest.importorskip("ray")
    from deepfake_xai.analysis import Analyzer

    analyzer = Analyzer(detectors=[detector], backend="ray", projection=None, progress=False)
    with pytest.raises(ValueError, match="fake.mp4: videos run on the local backend only"):
        analyzer.run([clips["photo"], clips["fake"]], tmp_path / "out")
    assert not (tmp_path / "out").exists()
