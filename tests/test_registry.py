import importlib
import subprocess
import sys
import warnings

import pytest
from conftest import install_plugin

import deepfake_xai as dx
from deepfake_xai.registry import DETECTORS, PluginWarning, Registry, RegistryError


def test_register_get_create_and_aliases():
    reg = Registry("widget")

    @reg.register("square", aliases=("sq",))
    def square(x=2):
        return x * x

    assert reg.get("square") is square
    assert reg.get("SQ") is square
    assert reg.create("sq", x=3) == 9
    assert reg.names() == ["square"]
    assert "sq" in reg


def test_duplicate_name_needs_override():
    reg = Registry("widget")
    reg.add("a", lambda: 1, aliases=("alpha",))
    with pytest.raises(RegistryError, match="already registered.*override=True"):
        reg.add("a", lambda: 2)
    with pytest.raises(RegistryError, match="'alpha' is already registered"):
        reg.add("b", lambda: 2, aliases=("alpha",))
    reg.add("a", lambda: 3, override=True)
    assert reg.create("a") == 3
    assert "alpha" not in reg
    reg.remove("a")
    assert reg.names() == []


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(RegistryError) as err:
        DETECTORS.get("efficientnet_b1")
    message = str(err.value)
    assert "did you mean 'efficientnet_b0'" in message
    assert "mobilenetv2_100" in message


def test_builtin_detectors_listed():
    assert {"efficientnet_b0", "mobilenetv2_100"} <= set(dx.list_detectors())
    assert DETECTORS.get("mobilenetv2") is DETECTORS.get("mobilenetv2_100")


def test_list_detectors_in_fresh_interpreter():
    out = subprocess.run(
        [sys.executable, "-c", "import deepfake_xai as dx; print(dx.list_detectors())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "efficientnet_b0" in out and "mobilenetv2_100" in out


PLUGIN = """
from deepfake_xai.detectors import TimmDetector

class TinyResNet(TimmDetector):
    architecture = "resnet10t"
    detector_name = "tiny_resnet"

def make(**kwargs):
    return TinyResNet(**kwargs)
"""


def test_pip_installed_plugin_is_discovered(tmp_path, monkeypatch):
    site = install_plugin(
        tmp_path,
        "dfx-tiny-plugin",
        PLUGIN,
        {"deepfake_xai.detectors": {"tiny_resnet": "dfx_tiny_plugin:make"}},
    )
    code = (
        "import torch, deepfake_xai as dx; names = dx.list_detectors(); print(names);"
        "d = dx.load_detector('tiny_resnet', image_size=32, device='cpu');"
        "batch = torch.zeros(2, 3, 32, 32, dtype=torch.uint8);"
        "print(type(d).__name__, d.predict_proba(batch).shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**_env(), "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    assert "tiny_resnet" in result.stdout and "TinyResNet (2,)" in result.stdout

    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    DETECTORS.reload_plugins()
    entry = DETECTORS.entry("tiny_resnet")
    assert entry.source == "dfx-tiny-plugin" and entry.version == "0.0.1" and entry.is_plugin


def test_broken_plugin_warns_and_the_rest_work(tmp_path):
    site = install_plugin(
        tmp_path,
        "dfx-broken-plugin",
        "raise ImportError('this plugin is broken on purpose')\n",
        {"deepfake_xai.detectors": {"broken_one": "dfx_broken_plugin:make"}},
    )
    code = (
        "import warnings, deepfake_xai as dx\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    names = dx.list_detectors()\n"
        "print(names)\n"
        "print([str(x.message) for x in w])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**_env(), "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    assert (
        "efficientnet_b0" in result.stdout and "'broken_one'" not in result.stdout.splitlines()[0]
    )
    assert "broken_one" in result.stdout and "broken on purpose" in result.stdout


def test_plugin_name_clash_is_a_warning():
    reg = Registry("detector")
    reg.add("efficientnet_b0", lambda: None)

    class FakeEntryPoint:
        name = "efficientnet_b0"
        value = "other:make"
        dist = None

        def load(self):
            return lambda: None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg._load_plugin(FakeEntryPoint())
    assert any(
        issubclass(w.category, PluginWarning) and "the name is taken" in str(w.message)
        for w in caught
    )


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_import_is_light():
    code = (
        "import time, sys, torch; t = time.perf_counter(); import deepfake_xai as dx; "
        "dx.list_detectors(); dt = time.perf_counter() - t; "
        "print(dt, 'timm' in sys.modules, 'gradio' in sys.modules)"
    )
    seconds, timm_loaded, gradio_loaded = _printed(code)
    assert float(seconds) < 0.5
    assert timm_loaded == "False" and gradio_loaded == "False"


def test_analysis_imports_captum_only_when_a_captum_explainer_is_made():
    """Captum (and the matplotlib it pulls in) cost every analyze call its import time; only
    its three explainers need it."""
    code = (
        "import sys, deepfake_xai.analysis, deepfake_xai.explainers; "
        "print('captum' in sys.modules); "
        "from deepfake_xai.explainers.attribution import SaliencyExplainer; "
        "from deepfake_xai.detectors.timm import TimmDetector; "
        "SaliencyExplainer(TimmDetector(architecture='mobilenetv2_100', image_size=32)); "
        "print('captum' in sys.modules)"
    )
    assert _printed(code) == ["False", "True"]


def _printed(code: str) -> list[str]:
    """What a fresh interpreter running ``code`` prints, split into words."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
