"""Several detectors in the app: the default one alone until the comparison switch asks for all
of them, and the About tab's side-by-side tables read from each checkpoint's ``comparison``.

Three tiny stand-ins are saved as the package's shipped checkpoints (the default first), so the
app chooses them itself, as it will the real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import gradio_client
import pytest
import torch
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.detectors import shipped
from deepfake_xai.ui import build_demo, serve
from deepfake_xai.ui.comparison_table import comparison_tables

SIZE = 48
# The shipped files, the default first, and what each stand-in's checkpoint says it measured.
SHIPPED = {
    "efficientnet_lite0": {
        "dataset": "faces-140k-sample + sdfd-sd21 (test split)", "n": 576, "date": "2026-12-07",
        "machine": "x86_64, 2 CPU cores", "threads": 2, "accuracy": 0.9531, "f1": 0.95,
        "roc_auc": 0.991, "ms_per_image": 79.14, "half_mass_area": 0.23,
        "regions": {"eyes": 0.15, "nose and nose bridge": 0.14, "mouth": 0.08,
                    "cheeks and skin": 0.37, "forehead and hair": 0.15, "outside the face": 0.11},
        "separation": {"embedding": {"silhouette": 0.30, "knn_accuracy": 0.95},
                       "tsne": {"silhouette": 0.60, "knn_accuracy": 0.948},
                       "umap": {"silhouette": 0.7, "knn_accuracy": 0.9}},
    },
    "efficientnet_b0": {  # some fields missing, some not numbers
        "dataset": "faces-140k-sample + sdfd-sd21 (test split)", "n": 576, "date": "2026-12-07",
        "machine": "x86_64, 2 CPU cores", "accuracy": 0.962, "f1": "n/a", "ms_per_image": 120.5,
        "regions": {"eyes": 0.31}, "separation": {"embedding": {"silhouette": 0.41}},
    },
    "mobilenetv2_100": {"accuracy": 0.94, "dataset": "other | set <b>x</b>"},
}  # fmt: skip
TITLES = {"efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_b0": "EfficientNet-B0",
          "mobilenetv2_100": "MobileNetV2"}  # fmt: skip
NAMES = sorted(SHIPPED, key=lambda name: f"{name}_faces.safetensors" != shipped.DEFAULT_FILE)


def save_stand_ins(folder: Path) -> list[Path]:
    """Tiny untrained detectors saved as ``<name>_faces.safetensors``, each with its block."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NAMES:
        torch.manual_seed(len(paths))
        detector = dx.load_detector(name, image_size=SIZE, device="cpu")
        paths.append(detector.save(folder / f"{name}_faces.safetensors", comparison=SHIPPED[name]))
    return paths


@contextlib.contextmanager
def shipped_stand_ins(folder: Path) -> Iterator[list[Path]]:
    """The stand-ins as the package's shipped detectors, with no checkpoints named elsewhere."""
    paths = save_stand_ins(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shipped, "SHIPPED_DIR", folder)
        patch.delenv("DEEPFAKE_XAI_CHECKPOINTS", raising=False)
        yield paths


def launch(demo: gr.Blocks) -> gradio_client.Client:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Iterator[list[Path]]:
    with shipped_stand_ins(tmp_path_factory.mktemp("shipped")) as paths:
        yield paths


@pytest.fixture(scope="module")
def app(stand_ins) -> Iterator[gr.Blocks]:
    """The app with no detectors named: it serves the three shipped stand-ins."""
    demo = build_demo(examples=[], device="cpu")
    yield demo
    demo.close()


def block(demo: gr.Blocks, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def handler(demo: gr.Blocks, component, event: str):
    """The Python function wired to ``component``'s ``event``."""
    return next(
        fn.fn for fn in demo.fns.values() if (component._id, event) in map(tuple, fn.targets)
    )


def slot_columns(demo: gr.Blocks) -> list:
    return [b for b in demo.blocks.values() if "detector-slot" in (b.elem_classes or [])]


def test_the_default_detector_alone_runs_until_the_switch_asks_for_all(app):
    switch, chosen = block(app, "compare-detectors"), block(app, "inspect-detectors")
    assert chosen.value == [NAMES[0]] and switch.value is False and switch.visible
    assert switch.label == f"Compare side by side with {TITLES[NAMES[1]]} and {TITLES[NAMES[2]]}"
    assert [column.visible for column in slot_columns(app)] == [True, False, False]
    batch = block(app, "batch-detectors")
    assert batch.value == [NAMES[0]]  # a batch too: one detector, one feature map shown
    maps = handler(app, batch, "change")(NAMES[1:])
    assert [shown.visible for shown in maps] == [False, True, True]
    assert handler(app, switch, "input")(True) == NAMES
    assert handler(app, switch, "input")(False) == NAMES[:1]
    follow = handler(app, chosen, "change")
    on, *shown = follow(NAMES)
    assert on is True and [column.visible for column in shown] == [True, True, True]
    on, *shown = follow(NAMES[1:])  # ticked by hand: the switch says "not all"
    assert on is False and [column.visible for column in shown] == [False, True, True]


def test_the_comparison_gives_each_detector_its_own_outcome(app, tmp_path):
    client = launch(app)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert api["/inspect"]["parameters"][1]["parameter_default"] == NAMES[:1]
    image = tmp_path / "face.png"
    Image.effect_noise((SIZE, SIZE), 60).convert("RGB").save(image)

    def inspect(chosen):
        return client.predict(
            gradio_client.handle_file(str(image)), chosen, "gradcam", "final", "predicted", 0.5,
            False, api_name="/inspect",
        )  # fmt: skip

    alone = inspect(NAMES[:1])
    assert list(alone[0]["detectors"]) == NAMES[:1]
    assert all("Not selected when this photo was analysed" in alone[5 + 4 * n + 3] for n in (1, 2))
    result = inspect(NAMES)
    record = result[0]
    assert list(record["detectors"]) == NAMES
    assert [entry["model"] for entry in record["detectors"].values()] == NAMES
    for number, name in enumerate(NAMES):
        outcome, overlay, _, reading = result[5 + 4 * number : 9 + 4 * number]
        verdict = record["detectors"][name]["verdict"]
        assert f'data-verdict="{verdict}"' in outcome and Path(overlay).exists()
        assert record["detectors"][name]["seconds"] > 0
        assert reading.startswith(f"{TITLES[name]} ")
    assert record["detectors"][NAMES[0]]["p_fake"] == alone[0]["detectors"][NAMES[0]]["p_fake"]


def test_the_switch_is_hidden_with_one_detector_and_named_detectors_all_run(stand_ins):
    one = build_demo(checkpoints=stand_ins[:1], examples=[], device="cpu")
    named = build_demo(checkpoints=stand_ins, examples=[], device="cpu")
    try:
        assert not block(one, "compare-detectors").visible
        assert [column.visible for column in slot_columns(one)] == [True]
        assert block(named, "inspect-detectors").value == NAMES
        assert block(named, "compare-detectors").value is True
        assert block(named, "batch-detectors").value == NAMES
        assert [column.visible for column in slot_columns(named)] == [True, True, True]
    finally:
        one.close()
        named.close()


def test_the_about_tab_compares_the_detectors_from_their_checkpoints(app):
    tables = block(app, "about-comparison").value
    assert tables.startswith("## Side by side")
    lines = tables.splitlines()
    # Two detectors measured alike, the third elsewhere: a caption line per detector.
    assert (
        "- _EfficientNet-Lite0: measured on faces-140k-sample + sdfd-sd21 (test split), "
        "n = 576; machine: x86\\_64, 2 CPU cores; date: 2026-12-07._" in lines
    )
    assert "- _MobileNetV2: measured on other \\| set &lt;b&gt;x&lt;/b&gt;._" in lines
    assert "| EfficientNet-Lite0 | 0.953 | 0.950 | 0.991 | 79.1 (2 threads) |" in lines
    assert "| EfficientNet-B0 | 0.962 | — | — | 120.5 |" in lines
    assert "| MobileNetV2 | 0.940 | — | — | — |" in lines
    assert "| EfficientNet-B0, reported by the study | 0.974 | — | — | — |" in lines
    assert "| MobileNetV2, reported by the study | 0.961 | — | — | — |" in lines
    assert "| EfficientNet-Lite0 | 15% | 14% | 8% | 37% | 15% | 11% | 23% of the face |" in lines
    assert "| EfficientNet-B0 | 31% | — | — | — | — | — | — |" in lines
    assert "| EfficientNet-Lite0 | 0.30 | 0.950 | 0.60 | 0.948 |" in lines
    assert "| EfficientNet-B0 | 0.41 | — | — | — |" in lines
    assert "| MobileNetV2 | — | — | — | — |" in lines
    assert "umap" not in tables.lower() and "<b>" not in tables
    page = str(app.config)
    assert page.index("## Side by side") < page.index("Decision threshold")  # above the cards


def test_the_side_by_side_tables_need_two_measured_detectors(stand_ins):
    path = dict(zip(NAMES, stand_ins, strict=True))
    effnet = dx.load_detector(path["efficientnet_b0"], device="cpu")
    lite = dx.load_detector(path["efficientnet_lite0"], device="cpu")
    assert comparison_tables([effnet]) == ""
    lite.metadata.pop("comparison")
    assert comparison_tables([lite, effnet]) == ""
    twin = dx.load_detector(path["efficientnet_b0"], device="cpu")
    twin.name = "efficientnet_b0@retrained"
    twin.metadata["comparison"] = {"accuracy": 0.5, "dataset": "a|b\nc"}
    tables = comparison_tables([lite, effnet, twin])
    assert "_No comparison is recorded with EfficientNet-Lite0._" in tables
    assert "| EfficientNet-B0 (efficientnet\\_b0) | 0.962 |" in tables
    assert "| EfficientNet-B0 (efficientnet\\_b0@retrained) | 0.500 |" in tables
    assert "MobileNetV2, reported" not in tables  # the study's rows: only networks loaded
