"""Judging a dropped file before "Analyse", in a child process bounded in time and memory.

The check decodes each file with :func:`deepfake_xai.images.load_image`, so that a file which is
not a usable image is refused at once, naming the reason; a video is probed instead
(:func:`deepfake_xai.video.probe_video`: its container, its header and the decode budget). A
file can be built to take minutes or gigabytes to decode (millions of empty PNG chunks, hundreds
of progressive JPEG scans), so the decode runs in a separate process with an address-space
limit, one file at a time, and is stopped at a deadline: such a file costs the server at most
:attr:`UploadLimits.check_seconds` and :attr:`UploadLimits.check_memory`, and is refused with
the bound it hit. The event handlers that call this run in Gradio's queue, under its concurrency
limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict

from ..video import VideoLimits
from .uploads import UploadLimits

CHECKS_AT_ONCE = 2  # upload checks running at once (the queue holds the rest)
log = logging.getLogger(__name__)
START_SECONDS = 60.0  # for the child to import the decoder (not counted against a file)
READY = "ready"


def check_images(
    files: Sequence[tuple[str, str]],
    limits: UploadLimits | None = None,
    *,
    video: VideoLimits | None = None,
) -> list[str | None]:
    """For each ``(path, name)``: why it is not a usable image, or None when it decodes; with
    ``video``, why it is not a usable video within those limits, or None when it opens.

    Files still waiting when the request's total check time (``limits.check_total_seconds``)
    is spent get None: they are judged again when analysed.
    """
    limits = limits or UploadLimits()
    reasons: list[str | None] = [None] * len(files)
    if not files:
        return reasons
    stop = time.monotonic() + limits.check_total_seconds
    worker = None
    try:
        for number, (path, name) in enumerate(files):
            worker = worker or _start(limits.check_memory)
            if worker is None or time.monotonic() >= stop:
                break
            reasons[number] = worker.check(path, name, limits.check_seconds, video)
            if worker.stopped:
                worker.close()
                worker = None
    finally:
        if worker is not None:
            worker.close()
    return reasons


def _start(memory: int) -> _Worker | None:
    """A fresh child process, or None (logged) when none starts: the files are still judged
    when analysed."""
    try:
        return _Worker(memory)
    except (OSError, RuntimeError) as exc:
        log.warning("upload check skipped: %s", exc)
        return None


class _Worker:
    """One child process that decodes the files it is sent, one JSON line each way."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.stopped = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        paths = os.pathsep.join(path for path in sys.path if path)  # find what the app finds
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(memory)],
            env={**os.environ, "PYTHONPATH": paths},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )
        threading.Thread(target=self._read, daemon=True).start()
        try:
            ready = self._next(START_SECONDS) == READY
        except queue.Empty:
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("the upload check process did not start")

    def check(
        self, path: str, name: str, seconds: float, video: VideoLimits | None = None
    ) -> str | None:
        """Why ``path`` cannot be used (None: it decodes, or with ``video`` opens as a video
        within those limits); the child is killed at ``seconds``."""
        budget = asdict(video) if video is not None else None
        try:
            self._process.stdin.write(json.dumps([path, name, budget]) + "\n")
            self._process.stdin.flush()
        except OSError:
            self.stopped = True
            return _stopped(self.memory)
        try:
            line = self._next(seconds)
        except queue.Empty:
            self.stopped = True
            return f"took more than {seconds:g} s to decode (the limit per file)"
        if line is None:
            self.stopped = True
            return _stopped(self.memory)
        return json.loads(line)["reason"]

    def close(self) -> None:
        """Stop the child (killed: it may be inside a decode) and reap it."""
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def _next(self, seconds: float) -> str | None:
        line = self._lines.get(timeout=seconds)
        return line.rstrip("\n") if line is not None else None

    def _read(self) -> None:
        try:
            for line in self._process.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)


def _stopped(memory: int) -> str:
    return f"the decoder stopped (it may need more than {memory / 2**20:.0f} MiB of memory)"


def _limit_memory(extra: int) -> None:
    """Cap this process's address space at what it uses now plus ``extra`` bytes."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + extra, used + extra))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no setrlimit (Windows, macOS): the time bound still holds


def _serve(memory: int) -> None:
    """The child: decode each ``[path, name, video budget or null]`` line (a video is probed),
    answer ``{"reason": ...}``."""
    from ..images import ImageLoadError, load_image
    from ..video import probe_video

    with contextlib.suppress(ImportError):  # before "ready": imports never count against a file
        import cv2  # noqa: F401
    _limit_memory(memory)
    print(READY, flush=True)
    for line in sys.stdin:
        path, name, budget = json.loads(line)
        try:
            if budget is None:
                load_image(path, name=name)
            else:
                probe_video(path, limits=VideoLimits(**budget), name=name)
            reason = None
        except ImageLoadError as exc:
            reason = exc.reason
        except MemoryError:
            reason = f"needs more than {memory / 2**20:.0f} MiB of memory to decode"
        print(json.dumps({"reason": reason}), flush=True)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
