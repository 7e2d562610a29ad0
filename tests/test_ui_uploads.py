"""What an upload may cost the app: handlers that read files run in the queue, checks are bounded
in time and memory, unpacking is bounded per request and per session and cleaned up, damaged
archives get messages in words, and the app's folders are deleted on SIGTERM.

A real Gradio server serves the known-answer quadrant detector; requests are sent the way the
page sends them (raw HTTP to the queue) or with ``gradio_client``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import gradio_client
import httpx
import numpy as np
import pytest
from models import SIZE, QuadrantDetector
from PIL import Image

from deepfake_xai.ui import build_demo, serve
from deepfake_xai.ui.upload_check import check_images
from deepfake_xai.ui.uploads import UploadError, UploadLimits, collect_uploads

KIB = 1024
PNG_BYTES = SIZE * SIZE * 3  # about what one noise PNG of the quadrant detector's size holds
LIMITS = UploadLimits(
    request_bytes=5 * PNG_BYTES,
    session_bytes=7 * PNG_BYTES,
    check_seconds=0.5,
    check_memory=64 * 2**20,
)


# -- files -----------------------------------------------------------------------------------------
def noise_png(seed: int, side: int = SIZE) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def chunk_png(path: Path, chunks: int) -> Path:
    """A small valid PNG behind ``chunks`` empty private chunks (the issue's 96 MB file, scaled)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buffer, format="PNG")
    data = buffer.getvalue()
    empty = struct.pack(">I", 0) + b"prIv" + struct.pack(">I", zlib.crc32(b"prIv"))
    path.write_bytes(data[:33] + empty * chunks + data[33:])
    return path


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def patched(path: Path, *edits: tuple[bytes, int, bytes]) -> Path:
    """``path`` with bytes replaced at offsets relative to the first occurrence of a marker."""
    data = bytearray(path.read_bytes())
    for marker, offset, new in edits:
        at = data.find(marker) + offset
        data[at : at + len(new)] = new
    path.write_bytes(bytes(data))
    return path


# -- the app ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    """The app with small limits. Yields (demo, url)."""
    demo = build_demo(detectors=[QuadrantDetector()], examples=[], limits=LIMITS)
    port = free_port()
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield demo, f"http://127.0.0.1:{port}"
    demo.close()


def upload_checks(demo) -> dict[str, object]:
    """The handlers that run when a file is dropped on the page, by the input's element id."""
    return {
        fn.inputs[0].elem_id: fn
        for fn in demo.fns.values()
        if any(t[1] == "upload" for t in fn.targets)
    }


def post_file(url: str, path: Path) -> dict:
    with open(path, "rb") as handle:
        response = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, handle)})
    response.raise_for_status()
    return {
        "path": response.json()[0],
        "orig_name": path.name,
        "meta": {"_type": "gradio.FileData"},
    }


def queued(url: str, fn_index: int, data: list, session: str = "test-session") -> dict:
    """Run one event the way the page does (join the queue, read its stream): the last message."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None}
    httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=30).raise_for_status()
    with httpx.stream(
        "GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=60
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue's stream ended without a result")


def client_for(url: str) -> gradio_client.Client:
    return gradio_client.Client(f"{url}/", verbose=False)


def run_batch_api(client, files, find_faces=False):
    handles = [gradio_client.handle_file(str(f)) for f in files]
    return client.predict(handles, ["quadrant"], "none", find_faces, api_name="/analyze_batch")


def runs(demo) -> list[Path]:
    return sorted(Path(demo.work_dir).glob("run-*"))


# -- item 1: nothing reads an upload outside the queue ---------------------------------------------
def test_upload_checks_run_in_the_queue_and_nothing_bypasses_it(app, tmp_path):
    demo, url = app
    for fn in demo.fns.values():  # an unqueued handler must not even open the file
        assert fn.queue or not fn.preprocess or not fn.inputs, fn.name
    checks = upload_checks(demo)
    assert set(checks) == {"inspect-image", "batch-files", "video-file"}
    assert all(fn.queue for fn in checks.values())
    assert {fn.concurrency_id for fn in checks.values()} == {"upload-checks"}
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    payload = post_file(url, text)
    for fn in checks.values():  # the REST door around the queue is shut
        direct = {"data": [payload], "fn_index": fn._id, "session_hash": "s"}
        assert httpx.post(f"{url}/gradio_api/run/predict", json=direct).status_code == 404
    inspect_call = {"data": [payload, ["quadrant"], "gradcam", "final", "fake", 0.5, False]}
    assert httpx.post(f"{url}/gradio_api/run/inspect", json=inspect_call).status_code == 404
    message = queued(url, checks["inspect-image"]._id, [payload])
    assert message["success"], message
    assert "notes.png is not a readable image" in message["output"]["data"][1]


def test_a_file_built_to_be_slow_or_huge_is_refused_within_the_bounds(app, tmp_path):
    slow = chunk_png(tmp_path / "chunks.png", 1_000_000)  # 12 MB; Pillow takes seconds to open
    huge = tmp_path / "huge.png"
    Image.new("RGB", (6000, 6000), (10, 200, 30)).save(huge)  # 120 kB, 108 MB decoded
    good = tmp_path / "good.png"
    good.write_bytes(noise_png(1))
    start = time.monotonic()
    slow_reason, huge_reason, good_reason = check_images(
        [(str(slow), "chunks.png"), (str(huge), "huge.png"), (str(good), "good.png")], LIMITS
    )
    assert time.monotonic() - start < 8
    assert slow_reason and ("0.5 s" in slow_reason or "chunk" in slow_reason), slow_reason
    assert huge_reason and ("memory" in huge_reason or "MiB" in huge_reason), huge_reason
    assert good_reason is None
    demo, url = app  # the same bound through the app's queue, as the page calls it
    batch_check = upload_checks(demo)["batch-files"]
    start = time.monotonic()
    message = queued(url, batch_check._id, [[post_file(url, slow), post_file(url, good)]])
    assert time.monotonic() - start < 8 and message["success"], message
    kept, status = message["output"]["data"]
    assert [item["orig_name"] for item in kept] == ["good.png"]
    assert "chunks.png: " in status and "Refused 1 file" in status


# -- item 3: unpacking is bounded per request and per session, and cleaned up ----------------------
def test_several_zips_share_one_limit_per_request(tmp_path):
    zips = [
        write_zip(
            tmp_path / f"part{n}.zip", {f"{n}-{i}.png": noise_png(10 * n + i) for i in range(2)}
        )
        for n in range(3)
    ]
    with pytest.raises(UploadError, match=r"part2\.zip: .* from the archives before it.*per batch"):
        collect_uploads(zips, tmp_path / "out", max_bytes=5 * PNG_BYTES)
    batch = collect_uploads(zips[:2], tmp_path / "ok", max_bytes=5 * PNG_BYTES)
    assert len(batch.images) == 4 and 0 < batch.unpacked <= 5 * PNG_BYTES


def test_a_request_and_a_session_unpack_within_their_limits_and_old_runs_go(app, tmp_path):
    demo, url = app
    zips = [
        write_zip(
            tmp_path / f"part{n}.zip", {f"{n}-{i}.png": noise_png(10 * n + i) for i in range(2)}
        )
        for n in range(3)
    ]
    first, second = client_for(url), client_for(url)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"part2\.zip: .*per batch"):
        run_batch_api(first, zips)
    assert runs(demo) == []  # a refused request leaves nothing behind
    run_batch_api(first, zips[:2])  # 4 images: within the request's limit, and kept
    [mine] = runs(demo)
    assert len(list((mine / "uploads").rglob("*.png"))) == 4
    with pytest.raises(gradio_client.exceptions.AppError, match="this session may still unpack"):
        run_batch_api(first, zips[1:])  # 4 more while 4 are shown: over the session's 7
    run_batch_api(second, zips[:1])  # another session is not held back by the first
    assert mine in runs(demo) and len(runs(demo)) == 2
    run_batch_api(first, zips[:1])  # replaces the first session's results: its run goes
    assert mine not in runs(demo) and len(runs(demo)) == 2


# -- item 8: damaged archives and messages in words ------------------------------------------------
def damaged_zips(folder: Path) -> dict[str, Path]:
    png = noise_png(3)
    bad_crc = write_zip(folder / "crc.zip", {"a.png": png})
    patched(bad_crc, (b"IDAT", 8, b"\x00\x01\x02\x03"))
    deflate = write_zip(folder / "deflate.zip", {"a.png": png * 4}, zipfile.ZIP_DEFLATED)
    patched(deflate, (b"a.png", 5, b"\xff" * 16))
    method = write_zip(folder / "method.zip", {"a.png": png})
    patched(method, (b"PK\x01\x02", 10, b"\x63"), (b"PK\x03\x04", 8, b"\x63"))
    locked = write_zip(folder / "locked.zip", {"a.png": png})
    patched(locked, (b"PK\x01\x02", 8, b"\x01"), (b"PK\x03\x04", 6, b"\x01"))
    clash = write_zip(folder / "clash.zip", {"a.png": png, "a.png/b.png": png})
    long_name = write_zip(folder / "long.zip", {"x" * 300 + ".png": png})
    renamed = write_zip(folder / "renamed.zip", {"a.png": png})
    patched(renamed, (b"PK\x03\x04", 30, b"b"))
    cut = write_zip(folder / "cut.zip", {"a.png": png, "b.png": png})
    cut.write_bytes(cut.read_bytes()[:200] + cut.read_bytes()[-22:])
    return {p.stem: p for p in (bad_crc, deflate, method, locked, clash, long_name, renamed, cut)}


REASONS = {
    "crc": "checksum does not match",
    "deflate": "compressed data cannot be read",
    "method": "compression method",
    "locked": "encrypted",
    "clash": "clashes with another member",
    "long": "file name too long",
    "renamed": "name differs",
    "cut": "a damaged zip archive",
}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_a_damaged_zip_is_skipped_naming_the_archive_and_why(tmp_path, case):
    archive = damaged_zips(tmp_path)[case]
    good = tmp_path / "good.png"
    good.write_bytes(noise_png(5))
    batch = collect_uploads([archive, good], tmp_path / "out")
    assert batch.images[-1] == good
    reasons = [r for r in batch.skipped if r.startswith(f"{archive.name}")]
    assert len(reasons) == 1 and REASONS[case] in reasons[0].lower(), batch.skipped
    assert str(tmp_path) not in reasons[0] and "Errno" not in reasons[0]


def test_the_app_says_why_in_plain_words_without_server_paths(app, tmp_path):
    demo, url = app
    client = client_for(url)
    zips = damaged_zips(tmp_path)
    notes = write_zip(tmp_path / "notes.zip", {"Tom & Jerry <1>.txt": b"hi"})
    with pytest.raises(gradio_client.exceptions.AppError) as refused:
        run_batch_api(client, [zips["long"], zips["cut"], zips["locked"], notes])
    message = str(refused.value)
    assert "internal error" not in message and demo.work_dir not in message, message
    assert "/tmp" not in message and str(tmp_path) not in message
    assert "long.zip/xxx" in message and "cut.zip: a damaged zip archive" in message
    assert "locked.zip/a.png: encrypted" in message
    assert "notes.zip/Tom & Jerry <1>.txt: not an image" in message  # plain text, no entities


# -- item 8: SIGTERM deletes what the app wrote ----------------------------------------------------
SERVE = """
import sys
from models import QuadrantDetector
from deepfake_xai.ui import build_demo, serve
demo = build_demo(detectors=[QuadrantDetector()], examples=[])
print("work", demo.work_dir, flush=True)
serve(demo, server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def test_sigterm_deletes_the_uploads_and_results(tmp_path):
    temp, cache = tmp_path / "tmp", tmp_path / "gradio"
    temp.mkdir()
    cache.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(cache)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    app = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        work = Path(app.stdout.readline().split(maxsplit=1)[1].strip())
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/gradio_api/info", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        archive = write_zip(
            tmp_path / "set.zip", {"real/a.png": noise_png(1), "fake/b.png": noise_png(2)}
        )
        run_batch_api(client_for(url), [archive])
        assert work.is_relative_to(temp) and list(work.glob("run-*/uploads/*/*/*.png"))
        assert any(p.is_file() for p in cache.rglob("*"))
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 0
    finally:
        app.kill()
        app.wait()
    assert not work.exists()
    # What the app uploaded and served is gone (Gradio leaves one empty staging file of its own).
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size]
