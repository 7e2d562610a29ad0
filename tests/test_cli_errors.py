"""The CLI's conventions: options before or after the command, exit 2 for usage errors only,
exit 1 with one line naming the input for failures, --threads, and devices that do not exist."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from deepfake_xai.cli import build_parser, main

CLI = "import sys; from deepfake_xai.cli import main; sys.exit(main())"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("argv", "verbose", "threads"),
    [
        (["list"], False, None),
        (["-v", "list"], True, None),
        (["list", "-v"], True, None),
        (["--threads", "3", "list"], False, 3),
        (["list", "--threads", "2", "--verbose"], True, 2),
        (["-v", "--threads", "4", "list", "--threads", "2"], True, 2),
        (["plugins", "list", "-v"], True, None),
    ],
)
def test_common_options_before_and_after_the_command(argv, verbose, threads):
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.threads) == (verbose, threads)


def test_threads_option_sets_torch_threads(keep_threads, capsys):
    assert main(["list", "--threads", "3"]) == 0
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_threads_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "--threads", value])
    assert info.value.code == 2 and "--threads" in capsys.readouterr().err


def test_bad_threads_environment_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("DEEPFAKE_XAI_THREADS", "lots")
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip() == (
        "deepfake-xai list: error: DEEPFAKE_XAI_THREADS='lots' is not a whole number"
    )


@NO_CUDA
@pytest.mark.parametrize("command", [["analyze", "x.jpg"], ["plugins", "check", "nope"]])
def test_cuda_without_a_gpu_is_one_line_not_a_traceback(command):
    result = subprocess.run(
        [sys.executable, "-c", CLI, *command, "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"deepfake-xai {command[0]}: error: device 'cuda' requested, but")
    assert "use --device cpu or auto" in lines[0]


def test_usage_errors_and_failures_are_told_apart():
    from deepfake_xai.cli import is_usage_error
    from deepfake_xai.detectors import CheckpointError, DeviceUnavailableError
    from deepfake_xai.detectors.checkpoint import CheckpointNotFoundError
    from deepfake_xai.images import ImageLoadError
    from deepfake_xai.registry import RegistryError

    usage = [
        RegistryError("unknown detector 'x'"),
        DeviceUnavailableError("no GPU"),
        FileNotFoundError("no such folder"),
        CheckpointNotFoundError("x.safetensors: checkpoint not found"),
        ValueError("batch_size must be >= 1"),
    ]
    failures = [
        CheckpointError("a.safetensors: broken"),
        ImageLoadError("a.jpg", "damaged"),
        UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
        PermissionError("read-only"),
        RuntimeError("CUDA out of memory"),
        KeyError("rows"),
    ]
    assert all(is_usage_error(e) for e in usage)
    assert not any(is_usage_error(e) for e in failures)


def test_runtime_failure_exits_1_with_one_line_naming_the_input(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file where the data set should go")
    assert main(["synthesize", str(out), "--n-per-class", "2", "--size", "16"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"deepfake-xai synthesize {out}: failed: ")
    assert "(-v shows the traceback)" in err


def test_encoding_errors_are_failures_not_usage_errors(monkeypatch, capsys):
    from deepfake_xai.cli import list_cmd

    def explode(args):
        "bad_\udcff.jpg".encode()

    monkeypatch.setattr(list_cmd, "run", explode)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "failed: UnicodeEncodeError: 'utf-8' codec can't encode" in err


def test_verbose_failure_shows_the_traceback(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("x")
    assert main(["synthesize", str(out), "--n-per-class", "2", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "-v shows" not in err


def test_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    from deepfake_xai.cli import list_cmd

    monkeypatch.setattr(list_cmd, "run", lambda args: warnings.warn("careful now", stacklevel=1))
    assert main(["list"]) == 0
    assert capsys.readouterr().err == "deepfake-xai: warning: careful now\n"
