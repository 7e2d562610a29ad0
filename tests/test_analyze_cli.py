"""``deepfake-xai analyze``: exit statuses, and resuming after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.cli import main

N_PER_CLASS = 150
SIZE = 32
BATCH = 4
CLI = "import sys; from deepfake_xai.cli import main; sys.exit(main())"


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
    """Both built-ins saved once, so every process analyses with the same weights."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    return [
        str(dx.load_detector(name, image_size=SIZE, device="cpu").save(folder / name))
        for name in ("efficientnet_b0", "mobilenetv2_100")
    ]


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
    ]


def rows_written(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


def kill_when_rows_appear(process: subprocess.Popen, predictions: Path, rows: int) -> None:
    """SIGKILL ``process`` once ``predictions`` holds at least ``rows`` rows."""
    deadline = time.monotonic() + 240
    while rows_written(predictions) < rows:
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
        [sys.executable, "-c", CLI, *cli_args(images, checkpoints, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_when_rows_appear(process, out / "predictions.csv", rows=1)
    assert process.returncode == -signal.SIGKILL
    total = 2 * (2 * N_PER_CLASS + 1)
    assert rows_written(out / "predictions.csv") < total

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
    assert not list((tmp_path / "out" / "cams").glob("*.npy"))


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
