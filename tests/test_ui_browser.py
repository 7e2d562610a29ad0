"""The app in a real browser: headless Chromium driven by Playwright."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

import deepfake_xai as dx
from deepfake_xai.synthetic import generate_dataset
from deepfake_xai.ui import build_demo, serve

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
SCREENSHOT_COPY = Path("/tmp/ui_screenshot.png")
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    return api.sync_playwright


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    images = tmp_path_factory.mktemp("faces")
    generate_dataset(images, 2, size=96, seed=5)
    detectors = [
        dx.load_detector(name, image_size=48, device="cpu")
        for name in ("efficientnet_b0", "mobilenetv2_100")
    ]
    demo = build_demo(detectors=detectors)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", sorted((images / "fake").glob("*.png"))[0]
    finally:
        demo.close()


def test_upload_analyse_and_see_both_overlays(sync_playwright, app_url, tmp_path):
    url, image = app_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=TIMEOUT_MS)
            page.locator("#inspect-image input[type=file]").set_input_files(str(image))
            page.locator("#inspect-image img").first.wait_for(timeout=TIMEOUT_MS)
            page.locator("#inspect-button").click()
            page.locator(".overlay img").nth(1).wait_for(timeout=TIMEOUT_MS)
            page.get_by_text("MobileNetV2 says").first.wait_for(timeout=TIMEOUT_MS)
            shot = tmp_path / "ui.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, SCREENSHOT_COPY)

            slots = page.locator(".detector-slot")
            assert slots.count() == 2
            for i, name in enumerate(("EfficientNet-B0", "MobileNetV2")):
                slot = slots.nth(i)
                assert slot.locator(".overlay img").get_attribute("src")
                verdict = slot.locator(".verdict").first.inner_text()
                assert re.search(r"\d+(\.\d+)?\s?%", verdict), verdict
                reading = slot.locator(".reading").first.inner_text()
                assert f"{name} says " in reading and "confidence" in reading
        finally:
            browser.close()
