"""Safe decoding of video files into sampled RGB frames; the video side of the input gate.

A video is a sequence of frames sampled at a rate or a count (default: one per second, at most
32, evenly spread over the whole clip), each with its frame number and time in seconds. Only
the sampled frames are decoded: the reader grabs (decodes without converting) the frames in
between when the next sample is near, and seeks when it is far. Every frame then goes through
:func:`deepfake_xai.images.load_image`, so frames meet the same checks as photos.

Before FFmpeg sees a file its first bytes must be those of a known container (MP4/MOV, Matroska
/WebM, AVI, MPEG-PS/TS, FLV, Ogg, ASF): a text file named ``.mp4`` (an HLS playlist that would
make FFmpeg open other files or URLs, say) is refused with its reason, never handed to FFmpeg.
For MP4/MOV the top-level boxes are walked first, so a file cut short is named as truncated.
The file is opened once and FFmpeg reads it through that descriptor (``/proc/self/fd``), so a
file name that is not UTF-8 works and the file read is the file checked. A decode budget bounds
the resolution, the duration, the declared frame count and the frames decoded per video.
Errors are :class:`VideoLoadError`, an :class:`~deepfake_xai.images.ImageLoadError` that names
the file and the reason, so every caller that handles bad images handles bad videos too.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import ImageLoadError, load_image

VIDEO_SUFFIXES: frozenset[str] = frozenset(
    [".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"]
    + [".ogv", ".3gp"]
)
DEFAULT_RATE = 1.0  # sampled frames per second
DEFAULT_MAX_FRAMES = 32  # sampled frames per video at most
SEEK_GAP = 48  # frames: a farther next sample is reached by seeking, a nearer one by grabbing

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
_SIGNATURES = (
    (b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (b"FLV", "FLV"),
    (b"OggS", "Ogg"),
    (b"\x00\x00\x01\xba", "MPEG program stream"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"),
)


class VideoLoadError(ImageLoadError):
    """A video file that cannot be used; ``.source`` names it, ``.reason`` says why."""


@dataclass(frozen=True)
class VideoLimits:
    """The decode budget of one video: anything beyond it is refused before decoding."""

    max_pixels: int = 4096 * 4096  # per frame
    max_seconds: float = 3 * 3600.0
    max_frame_count: int = 1_000_000  # as the container declares it
    max_decoded_frames: int = 20_000  # frames decoded (grabbed) to reach the samples
    max_fps: float = 1000.0


@dataclass(frozen=True)
class Sampling:
    """Which frames to take: ``rate`` per second, or ``count`` in all, at most ``max_frames``;
    evenly spread over the clip (each sample at the middle of its share of the frames)."""

    rate: float | None = DEFAULT_RATE
    count: int | None = None
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise ValueError(f"count must be a positive int or None, got {self.count!r}")
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and self.rate > 0):
            raise ValueError(f"rate must be a number > 0 or None, got {self.rate!r}")
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"max_frames must be a positive int, got {self.max_frames!r}")

    def frame_numbers(self, frame_count: int, fps: float) -> list[int]:
        """The sampled frame numbers of a clip of ``frame_count`` frames at ``fps``."""
        if self.count is not None:
            wanted = self.count
        else:
            wanted = math.ceil(frame_count / fps * (self.rate or DEFAULT_RATE))
        n = max(1, min(wanted, self.max_frames, frame_count))
        return sorted({min(frame_count - 1, int((k + 0.5) * frame_count / n)) for k in range(n)})


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares: the frame size as frames come out (upright, rotation
    applied), frame rate, frames and duration."""

    width: int
    height: int
    fps: float
    frame_count: int
    rotation: int  # degrees, from the container's metadata; frames come out upright

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps


@dataclass
class VideoFrame:
    """One sampled frame: its number in the stream, its time in seconds, the RGB image."""

    number: int
    time: float
    image: Image.Image


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a video file (by its suffix; nothing is opened)."""
    name = os.path.basename(os.fsdecode(os.fspath(path)))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def probe_video(
    path: str | os.PathLike, *, limits: VideoLimits = VideoLimits(), name: str | None = None
) -> VideoInfo:
    """The declared facts of the video at ``path``, checked against ``limits``."""
    label = name or os.fsdecode(os.fspath(path))
    with _capture(path, label) as capture:
        return _info(capture, label, limits)


@dataclass
class VideoClip:
    """A video's declared facts, its sampled frames, and why sampling stopped early, if it
    did (``""`` when every sample was decoded)."""

    info: VideoInfo
    frames: list[VideoFrame]
    problem: str = ""


def read_video(
    path: str | os.PathLike,
    sampling: Sampling = Sampling(),
    *,
    limits: VideoLimits = VideoLimits(),
    name: str | None = None,
) -> VideoClip:
    """The video's facts and sampled frames. A stream that ends early keeps the frames decoded
    before the end, with the reason in ``problem``; with no frame at all it raises
    :class:`VideoLoadError`, as for every file that is no usable video."""
    frames: list[VideoFrame] = []
    with open_video(path, sampling, limits=limits, name=name) as (info, sampled):
        try:
            frames.extend(sampled)
        except VideoLoadError as exc:
            if not frames:
                raise
            return VideoClip(info, frames, exc.reason)
    return VideoClip(info, frames)


@contextmanager
def open_video(
    path: str | os.PathLike,
    sampling: Sampling = Sampling(),
    *,
    limits: VideoLimits = VideoLimits(),
    name: str | None = None,
) -> Iterator[tuple[VideoInfo, Iterator[VideoFrame]]]:
    """The video's facts and its sampled frames, decoded one at a time as they are taken, from
    one opening of the file.

    Raises :class:`VideoLoadError` (naming the file and the reason) for a file that is not a
    video, is damaged, or exceeds ``limits``; the frames raise it too when the stream ends
    before its last sample (once the frames before that end were given).
    """
    label = name or os.fsdecode(os.fspath(path))
    with _capture(path, label) as capture:
        info = _info(capture, label, limits)
        numbers = sampling.frame_numbers(info.frame_count, info.fps)
        yield info, _frames(capture, info, numbers, limits, label)


def iter_frames(
    path: str | os.PathLike,
    sampling: Sampling = Sampling(),
    *,
    limits: VideoLimits = VideoLimits(),
    name: str | None = None,
) -> Iterator[VideoFrame]:
    """The sampled frames of the video at ``path``, decoded one at a time (see
    :func:`open_video`: a caller that keeps the frames given before an error keeps every good
    frame)."""
    with open_video(path, sampling, limits=limits, name=name) as (_, frames):
        yield from frames


def read_frame(
    path: str | os.PathLike,
    number: int,
    *,
    limits: VideoLimits = VideoLimits(),
    name: str | None = None,
) -> VideoFrame:
    """Frame ``number`` of the video at ``path`` (to show a frame a run analysed)."""
    label = name or os.fsdecode(os.fspath(path))
    with _capture(path, label) as capture:
        info = _info(capture, label, limits)
        if not 0 <= number < info.frame_count:
            raise VideoLoadError(label, f"has no frame {number} (it has {info.frame_count})")
        return next(_frames(capture, info, [number], limits, label))


# -- opening ------------------------------------------------------------------------------------
@contextmanager
def _capture(path: str | os.PathLike, label: str) -> Iterator[object]:
    """An opened ``cv2.VideoCapture`` on the checked file (its descriptor, where possible)."""
    import cv2

    try:
        fd = os.open(os.fspath(path), _OPEN_FLAGS)  # O_NONBLOCK: a FIFO never blocks here
    except OSError as exc:
        raise VideoLoadError(label, f"cannot be opened ({exc.strerror or exc})") from exc
    capture = None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VideoLoadError(label, "not a regular file")
        _check_container(fd, label)
        source = f"/proc/self/fd/{fd}" if os.path.exists(f"/proc/self/fd/{fd}") else path
        capture = cv2.VideoCapture(os.fspath(source), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise VideoLoadError(label, "FFmpeg cannot open it (damaged, or a codec it lacks)")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        yield capture
    finally:
        if capture is not None:
            capture.release()
        os.close(fd)


def _check_container(fd: int, label: str) -> None:
    """Refuse a file whose first bytes are no known container; name a cut-short MP4/MOV."""
    size = os.fstat(fd).st_size
    if size == 0:
        raise VideoLoadError(label, "an empty file (0 bytes)")
    head = os.pread(fd, 16, 0)
    if head[4:8] in _ISO_BOXES:
        _check_iso_boxes(fd, size, label)
        return
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return
    if head[:1] == b"\x47" and (size < 189 or os.pread(fd, 1, 188) == b"\x47"):
        return
    if any(head.startswith(magic) for magic, _ in _SIGNATURES):
        return
    raise VideoLoadError(
        label,
        "not a video file: its first bytes are those of no supported container "
        "(MP4/MOV, Matroska/WebM, AVI, MPEG, FLV, Ogg, ASF)",
    )


def _check_iso_boxes(fd: int, size: int, label: str) -> None:
    """Walk the top-level boxes of an MP4/MOV: each must fit the file, one must be ``moov``."""
    offset, names = 0, []
    while offset + 8 <= size and len(names) < 10_000:
        header = os.pread(fd, 16, offset)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if length == 1 and len(header) == 16:
            length = int.from_bytes(header[8:16], "big")
        elif length == 0:
            length = size - offset  # the box runs to the end of the file
        if length < 8:
            raise VideoLoadError(label, f"damaged MP4/MOV: box {kind!r} at byte {offset} is empty")
        if offset + length > size:
            raise VideoLoadError(
                label,
                f"truncated: the MP4/MOV box {kind.decode('latin-1')!r} at byte {offset} needs "
                f"{length} bytes but the file ends after {size - offset}",
            )
        names.append(kind)
        offset += length
    if b"moov" not in names:
        raise VideoLoadError(
            label, "truncated or damaged: the MP4/MOV index ('moov' box) is missing"
        )


# -- the declared facts ---------------------------------------------------------------------------
def _info(capture, label: str, limits: VideoLimits) -> VideoInfo:
    import cv2

    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    if width <= 0 or height <= 0:
        raise VideoLoadError(label, "declares no frame size (no video stream?)")
    if width * height > limits.max_pixels:
        raise VideoLoadError(
            label,
            f"frames of {width}x{height} exceed the limit of {limits.max_pixels} pixels",
        )
    if not (math.isfinite(fps) and 0 < fps <= limits.max_fps):
        raise VideoLoadError(label, f"declares an unusable frame rate ({fps:g} per second)")
    if count <= 0:
        raise VideoLoadError(label, "declares no frames (an empty or unindexed stream)")
    if count > limits.max_frame_count:
        raise VideoLoadError(
            label, f"declares {count} frames, over the limit of {limits.max_frame_count}"
        )
    if count / fps > limits.max_seconds:
        raise VideoLoadError(
            label, f"lasts {count / fps:.0f} s, over the limit of {limits.max_seconds:.0f} s"
        )
    return VideoInfo(width, height, fps, count, rotation)


# -- the sampled frames ---------------------------------------------------------------------------
def _frames(
    capture, info: VideoInfo, numbers: Sequence[int], limits: VideoLimits, label: str
) -> Iterator[VideoFrame]:
    """The frames ``numbers`` (ascending), grabbing up to near ones and seeking to far ones."""
    import cv2

    position, decoded = 0, 0
    for given, number in enumerate(numbers):
        if number - position > SEEK_GAP and capture.set(cv2.CAP_PROP_POS_FRAMES, number):
            position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        while position < number:
            if not capture.grab():
                _ended(label, position, info, given)
                return
            position += 1
            decoded += 1
            if decoded > limits.max_decoded_frames:
                raise VideoLoadError(
                    label, f"reaching the samples needs over {limits.max_decoded_frames} frames"
                )
        ok, bgr = capture.read()
        if not ok or bgr is None:
            _ended(label, position, info, given)
            return
        number, position = position, position + 1  # a seek may land past the sample
        decoded += 1
        image = load_image(np.ascontiguousarray(bgr[..., ::-1]), name=f"{label} frame {number}")
        yield VideoFrame(number, number / info.fps, image)


def _ended(label: str, position: int, info: VideoInfo, given: int) -> None:
    """The stream ended before a sampled frame: say so (with what was already given)."""
    kept = f"; the {given} sampled frame(s) before it were kept" if given else ""
    raise VideoLoadError(
        label,
        f"truncated or damaged: the stream ends at frame {position} of the "
        f"{info.frame_count} it declares{kept}",
    )
