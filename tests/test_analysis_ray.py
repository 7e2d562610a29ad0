"""``analyze`` on a real local Ray: the same rows as the local backend, and no row lost or
duplicated when an engine actor or the driver is killed mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_data import (
    save_builtins,
    split_parts,
    write_bad_entries,
    write_faces,
    write_noise,
    write_two_faces,
)

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.analysis.ray_backend import close_engine_pool
from deepfake_xai.analysis.store import part_files
from deepfake_xai.reliability import fit_detector

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
psutil = pytest.importorskip("psutil")

SIZE = 48
ACTOR_TITLE = "ray::EngineActor"
CLI = "import sys; from deepfake_xai.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray on this machine's 2 cores for the whole module; its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> list[str]:
    """Both built-ins as checkpoints, so every process analyses with the same weights; the
    second carries reliability statistics fitted on noise, so the actors judge reliability."""
    paths = save_builtins(tmp_path_factory.mktemp("checkpoints"), SIZE)
    fitted = dx.load_detector(paths[1], device="cpu")
    noise = [torch.randint(0, 256, (16, 3, SIZE, SIZE), dtype=torch.uint8) for _ in range(3)]
    train = [(images, torch.tensor([0] * 8 + [1] * 8)) for images in noise[:2]]
    fit_detector(fitted, train, noise[2:], min_face_side=SIZE)
    fitted.save(paths[1])
    return paths


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """32 entries: faces found and not, noise, two faces, unusable files, a non-UTF-8 name."""
    root = tmp_path_factory.mktemp("mixed")
    write_faces(root / "real", "real", range(0, 10))
    write_faces(root / "fake", "fake", range(0, 10))
    write_noise(root / "real", 3, seed=3)
    write_two_faces(root / "real" / "two.png")
    write_bad_entries(root / "fake", root / "real" / "face_001.png")
    return root


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    """240 small noise images: enough work to kill something in the middle of it."""
    root = tmp_path_factory.mktemp("noise")
    write_noise(root / "real", 120, seed=1, size=SIZE)
    write_noise(root / "fake", 120, seed=2, size=SIZE)
    return root


def analyse_noise(noise: Path, detectors: list[str], out: Path, **options) -> AnalysisResult:
    """Whole images, final-layer Grad-CAM, no projection nor report."""
    return analyze(
        noise,
        detectors=detectors,
        projection=None,
        out=out,
        batch_size=4,
        progress=False,
        report=False,
        faces=False,
        **options,
    )


def run_both(data: Path, detectors: list[str], out: Path, **options) -> tuple:
    common = dict(
        detectors=detectors,
        layers=("final", "mid"),
        projection=None,
        batch_size=4,
        device="cpu",
        progress=False,
        report=False,
        **options,
    )
    local = analyze(data, out=out / "local", num_workers=1, **common)
    on_ray = analyze(data, out=out / "ray", backend="ray", threads=1, **common)
    return local, on_ray


def assert_same(local: AnalysisResult, on_ray: AnalysisResult) -> None:
    """Same rows, P(fake) within 1e-5 (and distance scores within 1e-4), same errors,
    embeddings and heatmaps."""
    a, b = local.predictions, on_ray.predictions
    assert len(a) == len(b) and not b.duplicated(["index", "detector"]).any()
    exact = [c for c in a.columns if c not in ("p_fake", "ood_score")]
    assert a[exact].equals(b[exact])
    np.testing.assert_allclose(a["p_fake"], b["p_fake"], atol=1e-5)
    np.testing.assert_allclose(a["ood_score"], b["ood_score"], rtol=1e-4)
    assert local.errors.equals(on_ray.errors)
    for name in local.detectors:
        np.testing.assert_allclose(local.embeddings(name), on_ray.embeddings(name), atol=1e-3)
        for i in a.loc[(a["detector"] == name) & (a["status"] == "ok"), "index"]:
            for layer in ("final", "mid"):
                np.testing.assert_allclose(
                    local.heatmap(i, name, layer), on_ray.heatmap(i, name, layer), atol=2e-3
                )


def test_ray_gives_the_rows_of_the_local_backend(cluster, mixed, detectors, tmp_path):
    local, on_ray = run_both(mixed, detectors, tmp_path)
    assert_same(local, on_ray)
    statuses = set(on_ray.predictions["status"])
    assert statuses == {"ok", "no_face", "unreadable"}
    fitted = on_ray.predictions[on_ray.predictions["detector"] == "mobilenetv2_100"]
    judged = fitted[fitted["status"] == "ok"]
    assert judged["reliable"].notna().all() and judged["ood_score"].notna().all()
    assert (judged["verdict"] == "uncertain").any()
    assert on_ray.info["parameters"]["backend"] == "ray"
    assert on_ray.info["ray"]["actors"] == 1 and on_ray.info["ray"]["gpus_per_actor"] == 0
    assert on_ray.summary["errors"] == local.summary["errors"] == 6
    # Either backend resumes the other's run: drop the local run's last parts, finish on Ray.
    shutil.copytree(local.out, tmp_path / "mixed_resume")
    for part in split_parts(tmp_path / "mixed_resume", len(local.paths), 8)[2:]:
        part.unlink()
    resumed = analyze(
        mixed,
        detectors=detectors,
        layers=("final", "mid"),
        projection=None,
        out=tmp_path / "mixed_resume",
        batch_size=4,
        progress=False,
        report=False,
        backend="ray",
        threads=1,
    )
    assert resumed.summary["resumed"] == 16 and resumed.summary["processed_now"] > 0
    assert_same(local, resumed)


def test_a_second_call_reuses_the_engine_actors(cluster, noise, detectors, tmp_path):
    few = tmp_path / "few"
    for label in ("real", "fake"):
        (few / label).mkdir(parents=True)
        for path in sorted((noise / label).iterdir())[:3]:
            shutil.copy(path, few / label / path.name)
    first = analyse_noise(few, detectors, tmp_path / "first", backend="ray", threads=1)
    pids = actor_pids()
    second = analyse_noise(few, detectors, tmp_path / "second", backend="ray", threads=1)
    assert second.info["ray"]["actors_reused"] and not first.info["ray"]["actors_reused"]
    assert actor_pids() == pids and len(pids) == 1
    assert first.predictions["p_fake"].equals(second.predictions["p_fake"])


def actor_pids() -> set[int]:
    found = set()
    for process in psutil.process_iter(["cmdline"]):
        if " ".join(process.info["cmdline"] or []).startswith(ACTOR_TITLE):
            found.add(process.pid)
    return found


def wait_for_parts(out: Path, alive, deadline: float = 240) -> None:
    """Until a part is committed in ``out``; fails if ``alive()`` turns False first."""
    end = time.monotonic() + deadline
    while not part_files(out):
        if not alive():
            pytest.fail("the run ended before anything could be killed")
        if time.monotonic() > end:
            pytest.fail(f"no part committed within {deadline} s")
        time.sleep(0.05)


def test_a_killed_engine_actor_loses_and_duplicates_nothing(cluster, noise, detectors, tmp_path):
    for attempt in range(3):  # a run that ended before the kill landed proves nothing: again
        out = tmp_path / f"killed-{attempt}"
        result, killed_at = analyse_killing_the_actor(noise, detectors, out)
        if max(p.stat().st_mtime for p in part_files(out)) > killed_at:
            break
    else:
        pytest.fail("in 3 runs the analysis ended before its engine actor was killed")
    assert result.status == "complete"
    rows = result.predictions
    assert len(rows) == 2 * 240 and not rows.duplicated(["index", "detector"]).any()
    local = analyse_noise(noise, detectors, tmp_path / "local", num_workers=1)
    np.testing.assert_allclose(rows["p_fake"], local.predictions["p_fake"], atol=1e-5)


def analyse_killing_the_actor(
    noise: Path, detectors: list[str], out: Path
) -> tuple[AnalysisResult, float]:
    """Analyse on Ray and SIGKILL the engine actor once the first part is committed; the
    result and the time of the kill."""
    outcome: dict = {}

    def analyse() -> None:
        try:
            outcome["result"] = analyse_noise(noise, detectors, out, backend="ray", threads=1)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=analyse)
    worker.start()
    wait_for_parts(out, worker.is_alive)
    victims = actor_pids()
    assert len(victims) == 1
    os.kill(victims.pop(), signal.SIGKILL)
    killed_at = time.time()
    worker.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"], killed_at


def test_a_killed_driver_resumes_without_loss_or_duplicates(cluster, noise, detectors, tmp_path):
    out = tmp_path / "driver"
    args = ["analyze", str(noise), "--out", str(out), "--ray", cluster, "--batch-size", "4"]
    args += ["--projection", "none", "--no-report", "--no-progress", "--no-face-check"]
    args += ["--threads", "1", *(a for d in detectors for a in ("--detector", d))]
    close_engine_pool()  # this process's actors would hold the CPUs the driver's actor needs
    driver = subprocess.Popen(
        [sys.executable, "-c", CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_parts(out, lambda: driver.poll() is None)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    committed = len(AnalysisResult(out).predictions)
    assert 0 < committed < 2 * 240
    resumed = analyse_noise(noise, detectors, out, backend="ray", threads=1)
    assert resumed.summary["resumed"] == committed // 2
    rows = resumed.predictions
    assert len(rows) == 2 * 240 and not rows.duplicated(["index", "detector"]).any()
    assert sorted(rows["index"].unique()) == list(range(240))
