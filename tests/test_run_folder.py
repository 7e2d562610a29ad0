"""One writer per run folder, unique temporary names, and exports that keep every input
(issue 24, items 4 and 8): two real processes on one ``--out``, a carriage return in a file
name, an unreadable folder and a path longer than the system allows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.analysis.store import RUN_JSON, read_json, write_json
from deepfake_xai.cli import main

SIZE = 32
N_IMAGES = 6
# A run of a dataset that, when told to, waits (holding its run folder) after its first image
# until the file named by argv[3] exists; prints "waiting" when it gets there.
HELD_RUN = textwrap.dedent(
    f"""
    import os, sys, time
    import numpy as np
    from torch.utils.data import Dataset
    from deepfake_xai.analysis import analyze

    class Held(Dataset):
        def __len__(self):
            return {N_IMAGES}

        def __getitem__(self, index):
            if index == 1 and sys.argv[3]:
                print("waiting", flush=True)
                while not os.path.exists(sys.argv[3]):
                    time.sleep(0.05)
            rng = np.random.default_rng(index)
            return rng.integers(0, 256, ({SIZE}, {SIZE}, 3), dtype=np.uint8), index % 2

    try:
        analyze(Held(), detectors=[sys.argv[1]], explainers=(), projection=None,
                out=sys.argv[2], batch_size=1, num_workers=0, progress=False, report=False,
                faces=False, device="cpu")
    except Exception as exc:
        print(f"{{type(exc).__name__}}: {{exc}}", flush=True)
        sys.exit(3)
    print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    import deepfake_xai as dx

    folder = tmp_path_factory.mktemp("checkpoint")
    with pytest.warns(dx.detectors.UntrainedDetectorWarning):
        detector = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    return str(detector.save(folder / "tiny"))


def _python(*args: str, **options) -> subprocess.Popen:
    env = {**os.environ, "DEEPFAKE_XAI_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **options,
    )


def test_a_second_run_on_a_folder_in_use_stops_and_the_first_finishes(checkpoint, tmp_path, capsys):
    out, go = tmp_path / "out", tmp_path / "go"
    first = _python("-c", HELD_RUN, checkpoint, str(out), str(go))
    try:
        assert first.stdout.readline().strip() == "waiting"
        second = _python("-c", HELD_RUN, checkpoint, str(out), "")
        said, _ = second.communicate(timeout=120)
        assert second.returncode == 3, said
        assert said.strip() == (
            f"RunFolderInUseError: {out}: this folder is in use by process {first.pid} "
            "(another analysis is writing into it); wait for that run to end, or use another "
            "output folder"
        )
        images = tmp_path / "images"
        images.mkdir()
        Image.new("RGB", (SIZE, SIZE)).save(images / "a.png")
        options = ["--no-face-check", "--projection", "none", "--explainer", "none"]
        options += ["--no-report", "--no-progress", "--workers", "0"]
        args = ["analyze", str(images), "--detector", checkpoint, "--out", str(out)]
        assert main([*args, *options]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{out}: this folder is in use by process {first.pid}" in err
        assert read_json(out / RUN_JSON)["status"] == "running"
    finally:
        go.touch()
        said, err = first.communicate(timeout=120)
    assert first.returncode == 0 and said.strip() == "done", err
    result = AnalysisResult(out)
    assert result.status == "complete"
    assert sorted(result.predictions["index"]) == list(range(N_IMAGES))
    assert not [p.name for p in out.rglob("*.tmp")]


def test_temporary_names_are_unique_per_writer(tmp_path):
    path, failures = tmp_path / "run.json", []

    def write(writer: int) -> None:
        for i in range(200):
            try:
                write_json(path, {"writer": writer, "i": i, "pad": "x" * 4096})
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


# -- every input gets a row (item 8) ------------------------------------------------------------
def _analyze(inputs, detector, out):
    return analyze(
        inputs,
        detectors=[detector],
        explainers=(),
        projection=None,
        out=out,
        batch_size=4,
        num_workers=0,
        progress=False,
        report=False,
        faces=False,
        device="cpu",
    )


def _image(path) -> None:
    Image.new("RGB", (SIZE, SIZE), (120, 80, 40)).save(path, format="PNG")


def test_a_carriage_return_in_a_file_name_keeps_one_csv_row_per_image(checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _image(folder / "a\rb.png")
    _image(folder / "c.png")
    (folder / "bad\rname.png").write_bytes(b"not an image")
    result = _analyze(folder, checkpoint, tmp_path / "out")
    table = pd.read_csv(result.out / "predictions.csv")
    assert len(table) == 3
    assert sorted(Path(p).name for p in table["path"]) == ["a\rb.png", "bad\rname.png", "c.png"]
    errors = pd.read_csv(result.out / "errors.csv")
    assert [Path(p).name for p in errors["path"]] == ["bad\rname.png"]


def test_a_path_longer_than_the_system_allows_gets_a_row_with_its_reason(checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _image(folder / "short.png")
    deep = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(18):  # 18 folders of 250 characters: a path of about 4,600 bytes
            os.mkdir("d" * 250, dir_fd=deep)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = inner
        fd = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=deep)
        os.write(fd, (folder / "short.png").read_bytes())
        os.close(fd)
    finally:
        os.close(deep)
    rows = _analyze(folder, checkpoint, tmp_path / "out").predictions
    assert len(rows) == 2
    long = rows[rows["path"].map(lambda p: len(os.fsencode(p)) > 4096)]
    assert len(long) == 1 and Path(long["path"].iloc[0]).name == "deep.png"
    assert long["status"].iloc[0] == "unreadable"
    assert "File name too long" in long["error"].iloc[0]


@pytest.fixture
def shared_folder():
    """A folder under /tmp that any user may enter (pytest's own are the owner's only)."""
    folder = Path(tempfile.mkdtemp(prefix="dfx-run-folder-"))
    folder.chmod(0o777)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


@contextmanager
def unprivileged():
    """Run as ``nobody`` where the tests run as root (who may read any folder)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_folder_that_cannot_be_listed_gets_a_row_with_its_reason(checkpoint, shared_folder):
    import deepfake_xai as dx

    detector = dx.load_detector(checkpoint, device="cpu")
    root = shared_folder / "images"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        _image(root / label / "a.png")
    (root / "fake" / "locked").mkdir()
    _image(root / "fake" / "locked" / "hidden.png")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    _analyze(root, detector, shared_folder / "warm-up")  # every lazy import, as this user
    (root / "fake" / "locked").chmod(0)
    with unprivileged():
        result = _analyze(root, detector, shared_folder / "out")
    rows = result.predictions
    assert len(rows) == 3 and set(rows["status"]) == {"ok", "unreadable"}
    locked = rows[rows["status"] == "unreadable"].iloc[0]
    assert str(locked["path"]) == str(root / "fake" / "locked") and locked["label"] == "fake"
    assert locked["error"] == (
        "a folder that cannot be read (Permission denied): the images in it were not analysed"
    )
    assert result.summary["errors"] == 1
    errors = pd.read_csv(result.out / "errors.csv")
    assert list(errors["path"]) == [str(root / "fake" / "locked")]


def test_one_process_cannot_open_a_folder_twice_and_a_closed_store_frees_it(tmp_path):
    from deepfake_xai.analysis.store import FORMAT, RunFolderInUseError, RunStore

    info = {"format": FORMAT, "fingerprint": {"inputs": "i"}}
    first = RunStore(tmp_path, info, ["a.png"], [None], ["d"])
    with pytest.raises(RunFolderInUseError, match=f"in use by process {os.getpid()} "):
        RunStore(tmp_path, info, ["a.png"], [None], ["d"])
    first.close()
    RunStore(tmp_path, info, ["a.png"], [None], ["d"]).close()
    del first
    RunStore(tmp_path, info, ["a.png"], [None], ["d"])  # never closed: freed when collected
    RunStore(tmp_path, info, ["a.png"], [None], ["d"]).close()
