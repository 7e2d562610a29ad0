"""The video gate (sampling, seeking, rotation, budget, errors), tracks and the rollup."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from video_data import frame_number, numbered_frames, rotate_90, write_clip

from deepfake_xai.analysis.decode import Decoder
from deepfake_xai.analysis.inputs import resolve_inputs
from deepfake_xai.faces import FaceBox
from deepfake_xai.images import ImageLoadError
from deepfake_xai.preprocessing import Harmonization
from deepfake_xai.tracks import link_tracks, overlap
from deepfake_xai.video import (
    Sampling,
    VideoLimits,
    VideoLoadError,
    is_video_path,
    iter_frames,
    probe_video,
    read_frame,
    read_video,
)
from deepfake_xai.video_verdict import mean_logit, roll_up, video_rollup


# -- sampling ---------------------------------------------------------------------------------
def test_default_sampling_is_one_per_second_evenly_spread_at_most_32():
    assert Sampling().frame_numbers(100, 25.0) == [12, 37, 62, 87]  # 4 s at 25 fps
    assert len(Sampling().frame_numbers(25 * 3600, 25.0)) == 32  # an hour: 32 samples
    assert Sampling(count=3).frame_numbers(9, 3.0) == [1, 4, 7]
    assert Sampling(count=50).frame_numbers(5, 1.0) == [0, 1, 2, 3, 4]  # never more than there are
    assert Sampling(rate=2.0).frame_numbers(10, 10.0) == [2, 7]
    with pytest.raises(ValueError, match="count"):
        Sampling(count=0)
    with pytest.raises(ValueError, match="rate"):
        Sampling(rate=-1)


def test_only_sampled_frames_come_out_with_their_times(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", numbered_frames(12), fps=4.0)
    clip = read_video(path)
    assert (clip.info.frame_count, clip.info.fps, clip.info.duration) == (12, 4.0, 3.0)
    assert (clip.info.width, clip.info.height, clip.info.rotation) == (64, 48, 0)
    assert [f.number for f in clip.frames] == [2, 6, 10]
    assert [f.time for f in clip.frames] == [0.5, 1.5, 2.5]
    for frame in clip.frames:
        assert frame.image.mode == "RGB" and frame.image.size == (64, 48)
        assert frame_number(frame.image) == frame.number
    assert clip.problem == ""
    assert probe_video(path) == clip.info


def test_seeking_to_far_samples_gives_the_same_frames_as_decoding_all(tmp_path):
    path = write_clip(tmp_path / "long.mp4", numbered_frames(60), fps=30.0)
    sampled = list(iter_frames(path, Sampling(count=2)))  # frames 15 and 45: 15 apart, grabbed
    assert [f.number for f in sampled] == [15, 45]
    for frame in sampled:
        assert frame_number(frame.image) == frame.number
    frame = read_frame(path, 55)  # a seek of 55 frames
    assert frame.number == 55 and frame_number(frame.image) == 55
    with pytest.raises(VideoLoadError, match="has no frame 60"):
        read_frame(path, 60)


def test_rotation_metadata_is_applied(tmp_path):
    wide = [np.zeros((48, 96, 3), dtype=np.uint8) for _ in range(4)]
    for frame in wide:
        frame[:, :48] = 255  # left half white: after a turn it is at the top or the bottom
    path = rotate_90(write_clip(tmp_path / "wide.mp4", wide), tmp_path / "turned.mp4")
    clip = read_video(path)
    assert clip.info.rotation == 90 and (clip.info.width, clip.info.height) == (48, 96)
    pixels = np.asarray(clip.frames[0].image)
    assert pixels.shape == (96, 48, 3)
    assert pixels[:48].mean() > 200 > 50 > pixels[48:].mean()


# -- bad files --------------------------------------------------------------------------------
def test_bad_files_get_an_error_naming_them_and_the_reason(tmp_path):
    good = write_clip(tmp_path / "good.mp4", numbered_frames(8))
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_bytes(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\nfile:///etc/passwd\n")
    (tmp_path / "empty.mov").write_bytes(b"")
    (tmp_path / "noindex.mp4").write_bytes(data[:28] + b"\x00\x00\x00\x10mdat" + b"\x00" * 8)
    os.mkfifo(tmp_path / "pipe.mp4")
    expected = {
        "cut.mp4": "truncated: the MP4/MOV box",
        "text.mp4": "not a video file",
        "empty.mov": "an empty file",
        "noindex.mp4": "index ('moov' box) is missing",
        "pipe.mp4": "not a regular file",
        "missing.mp4": "cannot be opened (No such file or directory)",
    }
    for name, reason in expected.items():
        with pytest.raises(VideoLoadError) as caught:
            read_video(tmp_path / name)
        assert caught.value.source == str(tmp_path / name)
        assert reason in caught.value.reason, caught.value.reason
        assert isinstance(caught.value, ImageLoadError)  # every bad-image handler takes it


def test_a_stream_that_ends_early_keeps_the_frames_before_the_end(tmp_path):
    # An AVI needs no index at its end, so a cut one still opens and ends early.
    whole = write_clip(tmp_path / "whole.avi", numbered_frames(20), codec="MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    clip = read_video(cut, Sampling(count=4))
    assert [frame_number(f.image) for f in clip.frames] == [f.number for f in clip.frames] == [2, 7]
    assert clip.problem.startswith("truncated or damaged: the stream ends at frame")
    assert clip.problem.endswith(
        "of the 20 it declares; the 2 sampled frame(s) before it were kept"
    )
    decoder = Decoder((Harmonization(image_size=32),), faces=False, sampling=Sampling(count=4))
    items = decoder.video(3, cut, "cut.avi", "fake")
    assert [(i.status, i.frame, i.track) for i in items] == [
        ("ok", 2, 0),
        ("ok", 7, 0),
        ("unreadable", None, None),
    ]
    assert items[-1].error == clip.problem and all(i.video and i.index == 3 for i in items)


def test_the_decode_budget_is_enforced(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", numbered_frames(8))
    cases = {
        VideoLimits(max_pixels=1000): "frames of 64x48 exceed the limit of 1000 pixels",
        VideoLimits(max_seconds=1.0): "lasts 2 s, over the limit of 1 s",
        VideoLimits(max_frame_count=5): "declares 8 frames, over the limit of 5",
        VideoLimits(max_decoded_frames=3): "reaching the samples needs over 3 frames",
    }
    for limits, reason in cases.items():
        with pytest.raises(VideoLoadError, match=reason):
            read_video(path, Sampling(count=1), limits=limits)  # frame 4: 5 decoded
    # a budget spent after some frames came out keeps them, and says why it stopped
    clip = read_video(path, Sampling(count=2), limits=VideoLimits(max_decoded_frames=3))
    assert [f.number for f in clip.frames] == [2]
    assert clip.problem == "reaching the samples needs over 3 frames"


def test_is_video_path_and_discovery(tmp_path):
    assert is_video_path("a/b/Clip.MP4") and is_video_path("x.webm")
    assert not is_video_path("photo.jpg") and not is_video_path(".hidden.mp4")
    for label in ("real", "fake"):
        (tmp_path / "clips" / label).mkdir(parents=True)
        write_clip(tmp_path / "clips" / label / f"{label}.mp4", numbered_frames(4))
    (tmp_path / "clips" / "real" / "photo.png").write_bytes(b"not decoded here")
    inputs = resolve_inputs(tmp_path / "clips")
    names = [os.path.basename(p) for p in inputs.paths]
    assert names == ["fake.mp4", "photo.png", "real.mp4"]
    assert inputs.labels == ["fake", "real", "real"] and inputs.videos == [0, 2]
    single = resolve_inputs(tmp_path / "clips" / "real" / "real.mp4")
    assert single.labels == ["real"] and single.videos == [0]
    globbed = resolve_inputs(str(tmp_path / "clips" / "*" / "*.mp4"))
    assert len(globbed) == 2 and globbed.videos == [0, 1]


# -- tracks -----------------------------------------------------------------------------------
def test_faces_are_linked_by_overlap_between_neighbouring_samples():
    face = FaceBox(100, 100, 80, 80)
    moved = FaceBox(110, 105, 80, 80)
    other = FaceBox(300, 100, 60, 60)
    assert overlap(face, face) == 1.0 and overlap(face, other) == 0.0
    frames = [
        [face],
        [moved, other],
        [],
        [other, FaceBox(115, 100, 80, 80)],
        [FaceBox(400, 300, 50, 50)],
    ]
    # the first face persists across the empty frame (a gap of one); a far box is a new track
    assert link_tracks(frames) == [[0], [0, 1], [], [1, 0], [2]]
    assert link_tracks([[face], [], [], [face]]) == [[0], [], [], [1]]  # a gap of two splits


# -- rollup -----------------------------------------------------------------------------------
def test_track_and_video_rollups():
    assert math.isclose(mean_logit(np.array([0.5, 0.5])), 0.5)
    assert math.isclose(mean_logit(np.array([0.1, 0.9])), 0.5)
    real = roll_up([0.1, 0.2, 0.9], ["real", "real", "fake"])
    assert real.verdict == "real" and real.frames == 3 and math.isclose(real.flagged, 1 / 3)
    assert real.p_high > 0.5 > real.p_mean  # one odd frame moves the quantile, not the mean
    fake = roll_up([0.95, 0.9, 0.2], ["fake", "fake", "uncertain"])
    assert fake.verdict == "fake" and math.isclose(fake.uncertain, 1 / 3)
    assert math.isclose(fake.p_mean, mean_logit(np.array([0.95, 0.9])))  # uncertain left out
    unsure = roll_up([0.9, 0.9, 0.1], ["uncertain", "uncertain", "real"])
    assert unsure.verdict == "uncertain"
    assert roll_up([], []).verdict == ""
    everything = roll_up([0.1, 0.2, 0.9, 0.95, 0.9, 0.2], ["real"] * 2 + ["fake"] * 3 + ["real"])
    video = video_rollup([real, fake], everything)
    assert video.verdict == "fake" and video.p_fake == fake.p_fake  # one fake face is enough
    assert video_rollup([unsure], unsure).verdict == "uncertain"
