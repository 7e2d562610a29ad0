"""``deepfake-xai analyze``: options, exit statuses, and resuming after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from analysis_data import NON_UTF8_NAME, save_builtins
from PIL import Image

from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.analysis.store import part_files, read_parts
from deepfake_xai.cli import main

N_PER_CLASS = 150
SIZE = 32
BATCH = 4
# The CLI, committing results every 0.05 s instead of every second: a run of these tiny images
# can end within its first second, before any part is committed, leaving nothing to kill.
CLI_COMMITTING_OFTEN = (
    "import sys; from deepfake_xai.analysis.store import RunStore; "
    "RunStore.__init__.__kwdefaults__['commit_interval'] = 0.05; "
    "from deepfake_xai.cli import main; sys.exit(main())"
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The CLI sets torch's threads for the whole process: keep this one at one thread."""
    monkeypatch.setenv("DEEPFAKE_XAI_THREADS", "1")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """150 real and 150 fake 32 px PNGs, plus one unreadable file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(N_PER_CLASS):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:03d}.png")
    (root / "real" / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[str]:
    """Both built-ins as checkpoints, so every process analyses with the same weights."""
    return save_builtins(tmp_path_factory.mktemp("checkpoints"), SIZE)


def cli_args(images: Path, checkpoints: list[str], out: Path) -> list[str]:
    detectors = [arg for path in checkpoints for arg in ("--detector", path)]
    return [
        "analyze",
        str(images),
        *detectors,
        "--out",
        str(out),
        "--batch-size",
        str(BATCH),
        "--workers",
        "1",
        "--device",
        "cpu",
        "--projection",
        "none",
        "--no-report",
        "--no-progress",
        "--no-face-check",
        "--threads",
        "1",
    ]


def rows_written(out: Path) -> int:
    """Rows in the committed parts of run folder ``out``."""
    return read_parts(out, []).num_rows


def kill_when_parts_appear(process: subprocess.Popen, out: Path) -> None:
    """SIGKILL ``process`` once a part has been committed in ``out``."""
    deadline = time.monotonic() + 240
    while not part_files(out):
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before it could be killed")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no rows were written within 240 s")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_resume_after_sigkill_matches_a_clean_run(images, checkpoints, tmp_path, capsys):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", CLI_COMMITTING_OFTEN, *cli_args(images, checkpoints, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_when_parts_appear(process, out)
    assert process.returncode == -signal.SIGKILL
    total = 2 * (2 * N_PER_CLASS + 1)
    assert 0 < rows_written(out) < total

    assert main(cli_args(images, checkpoints, out)) == 1
    printed = capsys.readouterr().out
    assert "unreadable: 1" in printed and "errors.csv" in printed

    resumed = AnalysisResult(out)
    assert resumed.status == "complete" and resumed.summary["resumed"] >= 1
    rows = resumed.predictions
    assert len(rows) == total and not rows.duplicated(["index", "detector"]).any()
    assert sorted(rows["index"].unique()) == list(range(2 * N_PER_CLASS + 1))

    clean = analyze(
        images,
        detectors=checkpoints,
        projection=None,
        out=tmp_path / "clean",
        batch_size=BATCH,
        num_workers=0,
        device="cpu",
        progress=False,
        report=False,
        faces=False,
    )
    key = ["index", "detector"]
    a = rows.sort_values(key).reset_index(drop=True)
    b = clean.predictions.sort_values(key).reset_index(drop=True)
    same = ["index", "path", "detector", "verdict", "label", "error"]
    assert a[same].equals(b[same])
    np.testing.assert_allclose(a["p_fake"], b["p_fake"], atol=1e-5)
    assert resumed.errors.equals(clean.errors)
    for name in clean.detectors:
        np.testing.assert_allclose(resumed.embeddings(name), clean.embeddings(name), atol=1e-2)
        for i in (0, 50, 150):
            np.testing.assert_allclose(resumed.heatmap(i, name), clean.heatmap(i, name), atol=2e-3)


def test_exit_status_zero_when_every_image_is_read(images, checkpoints, tmp_path, capsys):
    folder = tmp_path / "few" / "fake"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.png").write_bytes((images / "fake" / f"{i:03d}.png").read_bytes())
    args = cli_args(folder.parent, checkpoints[1:], tmp_path / "out")
    assert main([*args, "--explainer", "none"]) == 0
    assert "readable: 3, unreadable: 0" in capsys.readouterr().out
    columns = pq.read_schema(part_files(tmp_path / "out")[0]).names
    assert not [c for c in columns if c.startswith("cam:")]


def test_checkpoint_alias_threads_and_a_non_utf8_name(images, checkpoints, tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "face.png").write_bytes((images / "fake" / "000.png").read_bytes())
    (folder / NON_UTF8_NAME).write_bytes((images / "fake" / "001.png").read_bytes())
    args = cli_args(folder, [], tmp_path / "out")
    assert main([*args, "--checkpoint", checkpoints[1]]) == 0
    assert "readable: 2, unreadable: 0" in capsys.readouterr().out
    result = AnalysisResult(tmp_path / "out")
    assert result.info["parameters"]["threads"] == 1 and result.summary["threads"] == 1
    assert str(folder / NON_UTF8_NAME) in set(result.predictions["path"])
    assert main([*args, "--checkpoint", checkpoints[1]]) == 0
    assert "nothing recomputed" in capsys.readouterr().out


def test_a_missing_face_detector_exits_with_2_naming_the_fix(images, monkeypatch, capsys):
    import deepfake_xai.faces as faces

    monkeypatch.setattr(faces, "faces_available", lambda: False)
    assert main(["analyze", str(images), "--detector", "mobilenetv2_100"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'deepfake-xai[faces]'" in err and "--no-face-check" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--detector", "no_such_detector"], "unknown detector"),
        (["--projection", "gradcam"], "not a projection"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_usage_errors_exit_with_2(images, tmp_path, capsys, extra, message):
    args = ["analyze", str(images), "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_input_and_bad_option_exit_with_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(tmp_path), "--batch-size", "many"])
    assert exit_info.value.code == 2
