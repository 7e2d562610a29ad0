"""The research workflow through the CLI: synthesize -> train -> evaluate, on a tiny set."""

import json

from deepfake_xai.cli import main
from deepfake_xai.detectors import Detector


def test_synthesize_train_evaluate(tmp_path, capsys):
    data, run, report = tmp_path / "synth", tmp_path / "run", tmp_path / "report"
    assert main(["synthesize", str(data), "--n-per-class", "12", "--size", "40"]) == 0
    assert "wrote 12 real and 12 fake images" in capsys.readouterr().out

    train_args = [
        "train",
        str(data),
        "--detector",
        "mobilenetv2_100",
        "--out",
        str(run),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--max-batches",
        "2",
        "--no-pretrained",
        "--no-progress",
        "--lr",
        "3e-3",
    ]
    assert main(train_args) == 0
    out = capsys.readouterr().out
    assert "split written to" in out and "| mobilenetv2_100 | 1 |" in out
    checkpoint = run / "mobilenetv2_100" / "best.safetensors"
    meta = Detector.load(checkpoint, device="cpu").metadata
    assert meta["training"]["lr"] == 3e-3 and meta["training"]["max_train_batches"] == 2
    assert Detector.load(checkpoint, device="cpu").reliability.method == "mahalanobis"

    copy = run / "knn.safetensors"
    calibrate_args = ["calibrate", str(checkpoint), str(run / "split.csv"), "--no-faces"]
    assert main([*calibrate_args, "--method", "knn", "--out", str(copy)]) == 0
    assert f"flags 5% of the validation faces; written to {copy}" in capsys.readouterr().out
    assert Detector.load(copy, device="cpu").reliability.method == "knn"
    assert Detector.load(checkpoint, device="cpu").reliability.method == "mahalanobis"

    eval_args = [
        "evaluate",
        str(run / "split.csv"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(report),
        "--no-latency",
    ]
    assert main(eval_args) == 0
    out = capsys.readouterr().out
    assert "2 images of split 'test'" in out
    assert "| detector | accuracy | precision |" in out and "| mobilenetv2_100 |" in out
    saved = json.loads((report / "comparison.json").read_text())
    assert saved["table"][0]["detector"] == "mobilenetv2_100"
    assert (report / "roc_curves.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["synthesize", str(tmp_path), "--n-per-class", "2", "--size", "32"]) == 0
    code = main(
        [
            "train",
            str(tmp_path),
            "--detector",
            "mobilenetv2_100",
            "--out",
            str(tmp_path / "r"),
            "--pretrained-file",
            "oops",
        ]
    )
    assert code == 2
    assert "--pretrained-file expects NAME=PATH, got 'oops'" in capsys.readouterr().err
    code = main(["evaluate", str(tmp_path), "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert code == 2
    assert "missing.safetensors: checkpoint not found" in capsys.readouterr().err
    code = main(["calibrate", str(tmp_path / "missing.safetensors"), str(tmp_path)])
    assert code == 2
    assert "missing.safetensors: checkpoint not found" in capsys.readouterr().err
    code = main(["train", str(tmp_path), "--detector", "nope", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown detector 'nope'" in capsys.readouterr().err
