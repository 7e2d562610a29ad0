"""Plugins end to end: the example plugins installed with pip, broken plugins, the CLI.

Plugins are pip-installed into temporary ``--target`` folders (the project venv is untouched)
and used from subprocesses with that folder on ``PYTHONPATH``; each subprocess pays the torch
import (~3 s), so the checks are grouped into few of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import install_plugin, pip_install_target

from deepfake_xai.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
EXAMPLE_PLUGINS = ("dfx-resnet", "dfx-spectral")
CLI = [sys.executable, "-c", "import sys; from deepfake_xai.cli import main; sys.exit(main())"]
TIMEOUT = 300


def _run(args: list[str], *sites: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """Copies of both example plugins, pip-installed (one pip call) into ``<root>/site``."""
    root = tmp_path_factory.mktemp("examples")
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    sources = [
        shutil.copytree(EXAMPLES / name, root / name, ignore=ignore) for name in EXAMPLE_PLUGINS
    ]
    pip_install_target(root / "site", *sources, timeout=TIMEOUT)
    return root


# -- the example plugins ---------------------------------------------------------------------
def test_cli_checks_and_lists_an_installed_plugin(examples):
    checked = _run([*CLI, "plugins", "check", "resnet18", "--image-size", "32"], examples / "site")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("detector 'resnet18' from dfx-resnet 0.1.0")
    assert "FAIL" not in checked.stdout and "PASS  grad-cam" in checked.stdout

    listed = _run([*CLI, "list"], examples / "site")
    assert listed.returncode == 0, listed.stderr
    assert "dfx-resnet 0.1.0" in listed.stdout and "dfx-spectral 0.1.0" in listed.stdout


def test_example_plugins_own_test_suites_pass(examples):
    tests = [str(examples / name / "tests") for name in EXAMPLE_PLUGINS]
    result = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], examples / "site"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


BESIDE_BUILTINS = """
import json, sys
import numpy as np
from PIL import Image
import deepfake_xai as dx
from deepfake_xai.analysis import analyze
from deepfake_xai.ui import build_demo

folder = sys.argv[1]
rng = np.random.default_rng(0)
paths = []
for i in range(3):
    paths.append(f"{folder}/face{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
names = ("resnet18", "spectral_cnn", "mobilenetv2_100")
detectors = [dx.load_detector(n, image_size=32, device="cpu") for n in names]
result = analyze(paths, detectors=detectors, layers=("final", "mid"), projection="pca",
                 out=f"{folder}/run", batch_size=4, device="cpu", num_workers=0,
                 progress=False, report=False, faces=False)
predictions = result.predictions
demo = build_demo(detectors=detectors, device="cpu")
print(json.dumps({
    "listed": dx.list_detectors(),
    "analyzed": sorted(set(predictions["detector"])),
    "rows": len(predictions),
    "p_fake_ok": bool(predictions["p_fake"].between(0, 1).all()),
    "in_demo": [n for n in names if n in str(demo.config)],
}))
"""


def test_example_plugins_work_beside_a_builtin(examples, tmp_path):
    result = _run([sys.executable, "-c", BESIDE_BUILTINS, str(tmp_path)], examples / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"resnet18", "spectral_cnn", "efficientnet_b0"} <= set(out["listed"])
    assert out["analyzed"] == ["mobilenetv2_100", "resnet18", "spectral_cnn"]
    assert out["rows"] == 9 and out["p_fake_ok"]
    assert out["in_demo"] == ["resnet18", "spectral_cnn", "mobilenetv2_100"]


# -- broken plugins --------------------------------------------------------------------------
IMPORT_ERROR = "raise ImportError('this plugin is broken on purpose')\n"

WRONG_TYPE = """
import torch

def make(**kwargs):
    return torch.nn.Linear(2, 2)
"""

WRONG_SHAPE = """
import torch
from torch import nn
from deepfake_xai.detectors import Detector

class TwoLogits(Detector):
    def __init__(self, *, pretrained=False, device="auto", **kwargs):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 2))
        super().__init__(model, name="wrong_shape", architecture="two_logits",
                         cam_layers={"final": "0"}, device=device)

    def features(self, x):
        return self.model[0](x)

    def head(self, fmap):
        embedding = fmap.mean(dim=(2, 3))
        return self.model[1](embedding), embedding
"""

BROKEN = {
    "dfx-broken-import": (IMPORT_ERROR, "broken_import", "make"),
    "dfx-wrong-type": (WRONG_TYPE, "wrong_type", "make"),
    "dfx-wrong-shape": (WRONG_SHAPE, "wrong_shape", "TwoLogits"),
}


@pytest.fixture(scope="module")
def broken_sites(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("broken")
    return [
        install_plugin(
            root, dist, code, {"deepfake_xai.detectors": {name: f"{dist.replace('-', '_')}:{attr}"}}
        )
        for dist, (code, name, attr) in BROKEN.items()
    ]


def test_broken_plugins_fail_the_check_with_what_to_fix(broken_sites):
    names = ["broken_import", "wrong_type", "wrong_shape"]
    result = _run([*CLI, "plugins", "check", *names, "--image-size", "16"], *broken_sites)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "detector plugin 'broken_import' from 'dfx-broken-import' could not be loaded" in (
        result.stderr
    )
    assert "its plugin failed to load: ImportError: this plugin is broken on purpose" in out
    assert "returned a Linear, expected a deepfake_xai Detector" in out
    assert "head() returned logits as a Tensor of shape (3, 2)" in out
    assert "expected shape (3,): one logit per image" in out
    assert out.rstrip().endswith("0 of 3 passed")


def test_a_broken_plugin_does_not_break_the_toolkit(broken_sites):
    result = _run([*CLI, "list"], *broken_sites)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "efficientnet_b0" in rows and "gradcam" in rows
    assert "[failed]" in rows["broken_import"] and "broken on purpose" in rows["broken_import"]
    assert "dfx-wrong-shape 0.0.1" in rows["wrong_shape"]
    assert "could not be loaded" in result.stderr


# -- the command in-process ------------------------------------------------------------------
def test_plugins_check_an_explainer(capsys):
    assert main(["plugins", "check", "pca"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("explainer 'pca' from deepfake-xai")
    assert "PASS  deterministic with a seed" in out


def test_plugins_check_unknown_name(capsys):
    assert main(["plugins", "check", "no_such_plugin"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  registered" in out and "deepfake_xai.detectors" in out


def test_plugins_list_is_the_list_command(capsys):
    assert main(["plugins", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["efficientnet_b0"]["source"] == "deepfake-xai"
    assert rows["pca"]["kind"] == "projection"
