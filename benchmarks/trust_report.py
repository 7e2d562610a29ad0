"""The full robustness and explanation-trust report on shared faces, timed; deletion/insertion
against per-image NumPy and Quantus implementations at equal settings.

1. ``evaluate(..., robustness=True, explainers=...)`` on ``--images`` faces of the shared val
   split (half real, half fake) for two detectors and three explainers, with the time split
   between decoding, perturbing, predicting, explaining, faithfulness and sanity.
2. On ``--compare-images`` of them, the deletion and insertion curves of Grad-CAM maps (16
   steps, black baseline, target = predicted class) three ways, on the same maps and model:
   ``deepfake_xai.explainers.faithfulness.perturbation_curve`` (batched torch), a per-image
   NumPy loop (what most code does: mask in NumPy, one forward per step) and Quantus'
   ``PixelFlipping`` (deletion only; install with ``pip install --no-deps quantus cachetools``:
   its dependencies would replace opencv-python-headless). Curves are checked to agree.

Without ``--detector``, two stand-ins are built (the real default detector had not landed):
EfficientNet-Lite0 with its packaged ImageNet weights and a logistic-regression head fitted on
``--probe-images`` training faces, at 224 and 160 px. Pass checkpoints to measure real ones:

    python benchmarks/trust_report.py --detector deepfake_xai/detectors/shipped/\\
efficientnet_lite0_faces.safetensors --detector runs/faces/mobilenetv2_100/best.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    HERE,
    MALLOC_ENV,
    command_line,
    machine,
    update_readme_section,
    write_json,
)

import deepfake_xai as dx
from deepfake_xai.data import ImageDataset, discover, make_loader, subsample
from deepfake_xai.evaluation import evaluate
from deepfake_xai.explainers.faithfulness import curve_area, perturbation_curve, resize_maps
from deepfake_xai.registry import EXPLAINERS
from deepfake_xai.runtime import configure_threads

FACES = HERE.parent.parent / "shared" / "data" / "faces-140k-sample"
EXPLAINERS_CHECKED = ("gradcam", "layercam", "saliency")
STEPS = 16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES)
    parser.add_argument("--detector", action="append", help="checkpoint(s) to measure")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--explain-images", type=int, default=64)
    parser.add_argument("--compare-images", type=int, default=16)
    parser.add_argument("--probe-images", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("runs/trust-bench"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "trust_report.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):  # glibc reads it at start
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    threads = configure_threads()
    detectors = args.detector or stand_in_detectors(args.faces, args.work, args.probe_images)
    val = subsample([s for s in discover(args.faces / "val") if s.label], args.images // 2)

    start = time.perf_counter()
    comparison = evaluate(
        detectors,
        val,
        split=None,
        robustness=True,
        explainers=EXPLAINERS_CHECKED,
        explain_images=args.explain_images,
        out=args.work / "report",
        progress=False,
    )
    wall = time.perf_counter() - start
    trust = comparison.trust
    first = dx.load_detector(detectors[0], device="cpu")
    compared = compare_deletion(first, val[: args.compare_images])

    results = {
        "command": command_line("trust_report.py", argv),
        "machine": machine(),
        "threads": threads,
        "load": round(os.getloadavg()[0], 1),
        "date": time.strftime("%Y-%m-%d"),
        "images": len(val),
        "explained_images": trust.settings["explained_images"],
        "detectors": [str(d) for d in detectors],
        "explainers": list(EXPLAINERS_CHECKED),
        "levels": len(trust.settings["perturbations"]),
        "evaluate_seconds": round(wall, 1),
        "phase_seconds": trust.seconds,
        "table": comparison.table.reset_index().to_dict(orient="records"),
        "verdicts": trust.to_dict()["explanations"]["verdicts"],
        "robustness": trust.to_dict()["robustness"],
        "deletion_comparison": compared,
    }
    write_json(args.out, results)
    update_readme_section(args.readme, "trust_report", readme_lines(results), "Trust report")
    print(f"evaluate: {wall:.0f} s; phases {trust.seconds}")
    print(compared)


def stand_in_detectors(faces: Path, work: Path, n: int) -> list[Path]:
    """EfficientNet-Lite0 (ImageNet) with a logistic-regression head on training faces."""
    from sklearn.linear_model import LogisticRegression

    train = subsample([s for s in discover(faces / "train") if s.label], n // 2, seed=1)
    paths = []
    for size in (224, 160):
        path = work / f"lite0_probe_{size}_{len(train)}.safetensors"
        if not path.exists():
            detector = dx.load_detector(
                "efficientnet_lite0", pretrained=True, image_size=size, device="cpu"
            )
            loader = make_loader(ImageDataset(train, detector.harmonization), 32)
            embeddings, targets = [], []
            for images, batch_targets, _ in loader:
                embeddings.append(detector.embed(images))
                targets.append(batch_targets.numpy())
            probe = LogisticRegression(C=0.5, max_iter=2000)
            probe.fit(np.concatenate(embeddings), np.concatenate(targets))
            head = detector.model.get_classifier()
            head.weight.data = torch.tensor(probe.coef_, dtype=torch.float32)
            head.bias.data = torch.tensor(probe.intercept_, dtype=torch.float32)
            detector.save(path, training={"note": f"linear probe on {len(train)} train faces"})
        paths.append(path)
    return paths


def compare_deletion(detector, samples) -> dict:
    """Deletion/insertion on the same Grad-CAM maps: batched torch vs NumPy vs Quantus."""
    loader = make_loader(ImageDataset(samples, detector.harmonization), len(samples))
    images = next(iter(loader))[0]
    x = detector.normalize(images)
    with torch.no_grad():
        targets = (detector(x) > 0).long()
    maps = EXPLAINERS.get("gradcam")(detector).attribute(x, targets)["final"].maps
    pixel_maps = resize_maps(maps, tuple(x.shape[-2:])).numpy()
    out = {"images": len(samples), "steps": STEPS, "baseline": "black", "target": "predicted"}
    timings, curves = {}, {}
    for mode in ("deletion", "insertion"):
        start = time.perf_counter()
        curves[f"torch_{mode}"] = perturbation_curve(
            detector, x, maps, targets, mode=mode, steps=STEPS, baseline="black"
        )
        timings[f"torch_{mode}"] = time.perf_counter() - start
        start = time.perf_counter()
        curves[f"numpy_{mode}"] = numpy_curves(detector, images, pixel_maps, targets, mode)
        timings[f"numpy_{mode}"] = time.perf_counter() - start
        agree = np.abs(curves[f"torch_{mode}"] - curves[f"numpy_{mode}"]).max()
        out[f"{mode}_numpy_vs_torch_max_difference"] = float(agree)
        out[f"{mode}_speedup_vs_numpy"] = timings[f"numpy_{mode}"] / timings[f"torch_{mode}"]
    try:
        start = time.perf_counter()
        curves["quantus_deletion"] = quantus_deletion(detector, images, pixel_maps, targets)
        timings["quantus_deletion"] = time.perf_counter() - start
        out["deletion_speedup_vs_quantus"] = timings["quantus_deletion"] / timings["torch_deletion"]
        ours = curve_area(curves["torch_deletion"][:, 1:])
        theirs = curve_area(curves["quantus_deletion"])
        out["deletion_quantus_vs_torch_auc_difference"] = float(np.abs(ours - theirs).max())
    except ImportError as exc:
        out["quantus"] = f"not installed ({exc})"
    out["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    out["auc"] = {k: float(curve_area(v).mean()) for k, v in curves.items()}
    return out


def numpy_curves(detector, images, pixel_maps, targets, mode: str) -> np.ndarray:
    """The usual implementation: per image, order pixels in NumPy, one forward per step."""
    mean = np.asarray(detector.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(detector.std, np.float32).reshape(3, 1, 1)
    out = []
    for image, saliency, target in zip(images.numpy(), pixel_maps, targets.numpy(), strict=True):
        pixels = image.astype(np.float32) / 255.0
        order = np.argsort(-saliency.reshape(-1), kind="stable")
        start, end = (pixels, np.zeros_like(pixels))
        if mode == "insertion":
            start, end = end, start
        row = []
        for k in np.linspace(0, order.size, STEPS + 1).round().astype(int):
            changed = np.zeros(order.size, bool)
            changed[order[:k]] = True
            mixed = np.where(changed.reshape(saliency.shape), end, start)
            with torch.no_grad():
                logit = detector(torch.from_numpy((mixed - mean) / std)[None]).item()
            row.append(1 / (1 + np.exp(-logit if target else logit)))
        out.append(row)
    return np.asarray(out)


def quantus_deletion(detector, images, pixel_maps, targets) -> np.ndarray:
    """Quantus PixelFlipping on [0, 1] images, baseline 0 (black), softmax of [0, logit]."""
    import quantus

    class TwoClass(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.detector = detector
            self.register_buffer("mean", torch.tensor(detector.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(detector.std).view(1, 3, 1, 1))

        def forward(self, x):
            logit = self.detector((x - self.mean) / self.std)
            return torch.stack([torch.zeros_like(logit), logit], dim=1)

    pixels = images.numpy().astype(np.float32) / 255.0
    # Quantus flips (channel, pixel) entries but sizes its step in pixels: 3 * STEPS steps of
    # 1/STEPS of the pixels' entries each; every third point is 1/STEPS more pixels deleted.
    metric = quantus.PixelFlipping(
        features_in_step=pixel_maps[0].size // STEPS,
        perturb_baseline=0.0,
        normalise=False,
        disable_warnings=True,
    )
    curves = metric(
        model=TwoClass().eval(),
        x_batch=pixels,
        y_batch=targets.numpy(),
        a_batch=pixel_maps[:, None],
        device="cpu",
        softmax=True,
        batch_size=len(pixels),
    )
    return np.asarray(curves)[:, 2::3]


def readme_lines(r: dict) -> list[str]:
    phases = r["phase_seconds"]
    c = r["deletion_comparison"]
    lines = [
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']}, torch {torch.__version__}, {r['threads']} threads, glibc "
        f"malloc settings of `_common.MALLOC_ENV`, shared with other jobs (load average "
        f"{r['load']}). Measured {r['date']}.",
        "",
        f"`evaluate --robustness --explanations` on {r['images']} shared val faces (half real), "
        f"{len(r['detectors'])} detectors, explainers {', '.join(r['explainers'])}, "
        f"{r['levels']} perturbation levels; explanation checks on {r['explained_images']} "
        f"faces: **{r['evaluate_seconds']:.0f} s** in all.",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in phases.items()),
        "",
        f"Deletion / insertion on {c['images']} faces, Grad-CAM maps, {c['steps']} steps, black "
        "baseline, same model and maps, one run:",
        "",
        "| implementation | deletion s | insertion s | deletion AUC |",
        "|---|---:|---:|---:|",
        f"| deepfake-xai (batched torch) | {c['seconds']['torch_deletion']:.2f} | "
        f"{c['seconds']['torch_insertion']:.2f} | {c['auc']['torch_deletion']:.4f} |",
        f"| per-image NumPy loop | {c['seconds']['numpy_deletion']:.2f} | "
        f"{c['seconds']['numpy_insertion']:.2f} | {c['auc']['numpy_deletion']:.4f} |",
    ]
    if "quantus_deletion" in c["seconds"]:
        lines.append(
            f"| Quantus PixelFlipping | {c['seconds']['quantus_deletion']:.2f} | - | "
            f"{c['auc']['quantus_deletion']:.4f} (steps 1-16) |"
        )
    lines += [
        "",
        f"Speed-up over NumPy: deletion {c['deletion_speedup_vs_numpy']:.1f}x, insertion "
        f"{c['insertion_speedup_vs_numpy']:.1f}x (curves agree to "
        f"{c['deletion_numpy_vs_torch_max_difference']:.1e})"
        + (
            f"; over Quantus: {c['deletion_speedup_vs_quantus']:.1f}x."
            if "deletion_speedup_vs_quantus" in c
            else "."
        ),
    ]
    return lines


if __name__ == "__main__":
    main()
