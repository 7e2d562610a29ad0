"""The Gradio app: its parts, and the running app driven through ``gradio_client``."""

from __future__ import annotations

import csv
import importlib
import socket
import zipfile
from pathlib import Path

import gradio_client
import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import install_plugin
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.faces import faces_available
from deepfake_xai.registry import DETECTORS
from deepfake_xai.synthetic import generate_dataset
from deepfake_xai.ui import DemoConfig, build_demo, prepare_demo_models, serve
from deepfake_xai.ui.about_tab import detector_card, metrics_table
from deepfake_xai.ui.demo_models import resolve_models
from deepfake_xai.ui.inspect_tab import DISPLAY_SIZE
from deepfake_xai.ui.text import FOREHEAD, MOUTH, attention_regions, reading, region_map
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


def first(root: Path, label: str) -> str:
    return sorted(p.name for p in (root / label).glob("*.png"))[0]


def inspect(client, image, detectors=NAMES, method="gradcam", face_crop=False):
    handle = gradio_client.handle_file(str(image))
    return client.predict(
        handle, list(detectors), method, "final", "fake", 0.5, face_crop, api_name="/inspect"
    )


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
    first_reading = reading("EfficientNet-B0", 0.93, hot_top)
    assert first_reading.startswith("EfficientNet-B0 says fake with 93% confidence")
    assert FOREHEAD in first_reading
    assert MOUTH in reading("X", 0.93, hot_chin)
    assert "says real with 80% confidence" in reading("X", 0.2, hot_top, target="fake")
    assert "evidence for fake" in reading("X", 0.2, hot_top, target="fake")
    assert "no clear focus" in reading("X", 0.6, np.full((7, 7), 0.5, np.float32))


def test_face_box_moves_the_regions():
    """With a face box in the top-left quarter, the image centre is background."""
    centre = np.zeros((16, 16), np.float32)
    centre[7:9, 7:9] = 1
    assert attention_regions(centre).top()[0] != "background and edges"
    assert attention_regions(centre, face=(0.0, 0.0, 0.3, 0.3)).top() == ["background and edges"]
    labels = region_map(10, 10, face=(0.0, 0.0, 0.5, 1.0))
    assert labels.shape == (10, 10) and labels[:, 6:].min() == labels.max()


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
def test_about_shows_architecture_training_and_metrics(detectors):
    effnet, mobilenet = detectors
    effnet.metadata.update(
        training={"epochs_run": 4, "image_size": SIZE, "optimizer": "adam"},
        metrics={"accuracy": 0.974, "f1": 0.9741, "tp": 3},
        trained_on="data/faces",
    )
    try:
        card = detector_card(effnet)
        assert "EfficientNet-B0" in card and "efficientnet\\_b0" in card
        assert f"{effnet.num_parameters / 1e6:.2f} M" in card
        assert f"{SIZE} x {SIZE} px" in card and "center crop" in card
        assert "data/faces" in card and "**epochs\\_run**: 4" in card
        assert "**accuracy**: 0.974" in card and "**tp**" not in card
        assert "none stored" in detector_card(mobilenet)
        table = metrics_table(detectors)
        assert list(table["detector"]) == ["EfficientNet-B0"]
        assert list(table.columns) == ["detector", "accuracy", "f1"]
    finally:
        for key in ("training", "metrics", "trained_on"):
            effnet.metadata.pop(key, None)


# -- the running app -----------------------------------------------------------------------------
def test_every_event_is_a_named_endpoint_in_one_bounded_queue(demo, client):
    public = [fn for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert sorted(fn.api_name for fn in public) == ["analyze_batch", "inspect"]
    assert {fn.concurrency_id for fn in public} == {"detectors"}
    assert demo._queue.max_size == 32 and demo.max_file_size == 200 * 1024**2
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/inspect", "/analyze_batch"}
    params = [p["parameter_name"] for p in endpoints["/inspect"]["parameters"]]
    assert params == ["image", "detectors", "explainer", "layer", "target", "opacity", "face_crop"]


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_inspect_one_image_with_both_detectors(client, detectors, synth, method):
    image = synth / "fake" / first(synth, "fake")
    result = inspect(client, image, method=method)
    assert len(result) == 3 * len(NAMES) + 1
    for slot, detector in enumerate(detectors):
        label, overlay, text = result[3 * slot : 3 * slot + 3]
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        expected = float(detector.predict_proba([image])[0])
        assert confidences["fake"] == pytest.approx(expected, abs=1e-3)
        assert confidences["fake"] + confidences["real"] == pytest.approx(1.0)
        assert label["label"] == ("fake" if expected >= 0.5 else "real")
        with Image.open(overlay) as picture:
            assert picture.size == (DISPLAY_SIZE, DISPLAY_SIZE)
        verdict = label["label"]
        assert f" says {verdict} with " in text and " ms" in text and method in text
    assert result[-1] is None


def test_inspect_only_the_chosen_detector(client, synth):
    result = inspect(client, synth / "real" / first(synth, "real"), detectors=["mobilenetv2_100"])
    assert not result[0] and result[1] is None and "not selected" in result[2]
    assert result[3]["label"] in ("real", "fake") and Path(result[4]).exists()


def test_a_corrupt_upload_gets_a_clear_error(client, tmp_path):
    fake_png = tmp_path / "holiday.png"
    fake_png.write_text("this is a text file, not a picture")
    with pytest.raises(gradio_client.exceptions.AppError) as error:
        inspect(client, fake_png)
    message = str(error.value)
    assert message.startswith("holiday.png is not a readable image: ")
    assert "not a recognised image format" in message and "Traceback" not in message


@pytest.mark.skipif(not faces_available(), reason="face detection needs OpenCV ([faces] extra)")
def test_face_crop_marks_the_face_and_explains_the_crop(client, faces_sample, tmp_path):
    photo = sorted((faces_sample / "train" / "real").glob("*.jpg"))[0]
    result = inspect(client, photo, face_crop=True)
    with Image.open(result[-1]) as marked, Image.open(photo) as original:
        pixels = np.asarray(marked.convert("RGB")).reshape(-1, 3)
        assert marked.size == original.size
    assert ((pixels[:, 1] > 200) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)).any()
    assert " says " in result[2] and " says " in result[5]
    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    with pytest.raises(gradio_client.exceptions.AppError, match="no face found"):
        inspect(client, tmp_path / "noise.png", face_crop=True)


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
    with pytest.raises(gradio_client.exceptions.AppError, match="choose at least one detector"):
        inspect(client, synth / "real" / first(synth, "real"), detectors=[])
    with pytest.raises(gradio_client.exceptions.AppError, match="upload some images"):
        client.predict([], list(NAMES), "pca", api_name="/analyze_batch")


def test_batch_of_a_labelled_zip(client, synth, tmp_path):
    members = {
        f"faces/{label}/{p.name}": p.read_bytes()
        for label in ("real", "fake")
        for p in sorted((synth / label).glob("*.png"))[:3]
    }
    members["faces/broken/oops.png"] = b"not an image"
    archive = write_zip(tmp_path / "faces.zip", members)
    summary, table, csv_file, gallery, *scatters, report, outputs = client.predict(
        [gradio_client.handle_file(str(archive))], list(NAMES), "pca", api_name="/analyze_batch"
    )
    frame = pd.DataFrame(table["data"], columns=table["headers"])
    assert len(frame) == 7 * len(NAMES) and set(frame["detector"]) == set(NAMES)
    assert "7 images analysed" in summary and "1 unreadable" in summary
    broken = frame[frame["file"] == "faces/broken/oops.png"]
    assert (broken["error"] != "").all()
    labelled = frame[frame["error"] == ""]
    assert set(labelled["label"]) == {"real", "fake"}
    assert len(pd.read_csv(csv_file)) == len(frame)
    assert len(gallery) == 6 * len(NAMES)
    assert len(scatters) == len(NAMES)
    for scatter in scatters:
        points = pd.DataFrame(scatter["data"], columns=scatter["columns"])
        assert len(points) == 6 and {"x", "y", "colour", "file"} <= set(points.columns)
        assert points["colour"].str.match(r"^(real|fake), predicted (real|fake)$").all()
    assert "<html" in Path(report).read_text().lower()
    with zipfile.ZipFile(outputs) as zf:
        assert "predictions.csv" in zf.namelist()


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
    demo = build_demo(device="cpu", demo_config=config)
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
        label, overlay, text = inspect(client, synth / "fake" / first(synth, "fake"), ["ui_tiny"])[
            :3
        ]
        expected = float(plugin.predict_proba([synth / "fake" / first(synth, "fake")])[0])
        fake = {c["label"]: c["confidence"] for c in label["confidences"]}["fake"]
        assert fake == pytest.approx(expected, abs=1e-3)
        assert text.startswith("ui_tiny says ") and Path(overlay).exists()
    finally:
        demo.close()
