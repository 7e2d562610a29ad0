"""Measure a trained detector on everything the shared data can say about the world outside
its lab: the ablation row of docs/results.md.

Every image is decoded, its face framed as ``analyze`` frames it (boxes from
``runs/faces.csv``), harmonised and scored. Columns:

- in-distribution: the 666 held-out FFHQ / StyleGAN test faces (accuracy, ROC AUC);
- each degradation of those faces (1 px blur, half size, JPEG 70, half size + JPEG 70);
- Stable Diffusion 2.1 faces of held-out prompt keys (caught at P(fake) >= 0.5, ROC AUC
  against the test photos): a family never trained on unless the recipe used the other keys;
- the 65 real web photos: how many are called fake (false alarms);
- pseudo-fake families made from the held-out real test photos: self-blended images and, when
  the autoencoder weights are present, autoencoder reconstructions;
- reliability: for each way of fitting it (Mahalanobis or kNN; the embedding alone or with a
  mid-level block; statistics from clean or degraded training faces), the share of
  in-distribution test faces flagged, how well the ood_score separates them from each other
  family (ROC AUC), and the three-way outcome (fake / real / uncertain) per family.

    python benchmarks/evaluate_recipe.py runs/recipes/degrade30/efficientnet_lite0/best.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine
from sources import FACES, shared_samples

from deepfake_xai import Detector
from deepfake_xai.data import Sample, subsample
from deepfake_xai.degradations import Degradations
from deepfake_xai.face_index import FaceIndex, frame
from deepfake_xai.images import load_image
from deepfake_xai.metrics import classification_metrics
from deepfake_xai.preprocessing import to_uint8_tensor
from deepfake_xai.pseudofakes.autoencoder import output_name
from deepfake_xai.pseudofakes.sbi import self_blend
from deepfake_xai.reliability import Reliability, assess, collect_features
from deepfake_xai.runtime import configure_threads
from deepfake_xai.trust.perturbations import Perturbation

FACES_CACHE = Path("runs/faces.csv")
DEGRADATIONS = {
    "blur 1 px": Perturbation("blur", "1"),
    "half size": Perturbation("resize", "0.5"),
    "JPEG 70": Perturbation("jpeg", "70"),
    "half size + JPEG 70": Perturbation("social", "0.5:70"),
}
FIT_PER_CLASS = 1000
OWN = "the checkpoint's own"  # the statistics stored in the checkpoint, as it ships
BATCH = 32


@dataclass(frozen=True)
class Family:
    """An evaluation set: its samples, and how each decoded image is changed before framing."""

    name: str
    samples: list[Sample]
    change: Callable[[torch.Tensor, Sample], torch.Tensor] | None = None
    blend: bool = False  # self-blend after framing (needs landmarks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default: beside the run)")
    parser.add_argument("--autoencoder-dir", type=Path, default=None, help="cached recons")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    start = time.perf_counter()
    detector = Detector.load(args.checkpoint, device="cpu").to("cpu")
    detector.model.float().to(memory_format=torch.channels_last)
    samples, faces = samples_and_faces()
    if args.autoencoder_dir:  # reconstructions share their source's geometry
        sources = [s.path for s in samples if s.split == "test" and s.group == "ffhq"]
        faces = faces.with_copies({args.autoencoder_dir / output_name(p): p for p in sources})
    scored = {f.name: _score(detector, f, faces) for f in _families(samples, args)}
    fits = _reliability_fits(detector, samples, faces)
    if detector.reliability is not None:
        fits = {OWN: detector.reliability, **fits}
    record = {
        "checkpoint": str(args.checkpoint),
        "training": _training(detector),
        "command": command_line("evaluate_recipe.py", argv),
        "machine": f"{machine()}, {threads} torch threads",
        "date": time.strftime("%Y-%m-%d"),
        "families": {name: _summary(name, s, scored) for name, s in scored.items()},
        "reliability": {label: _reliability(fit, scored) for label, fit in fits.items()},
    }
    record["seconds"] = round(time.perf_counter() - start, 1)
    out = args.out or args.checkpoint.parent.parent / "eval.json"
    out.write_text(json.dumps(record, indent=2, default=_plain))
    print(json.dumps({k: record[k] for k in ("families", "seconds")}, indent=1, default=_plain))


def samples_and_faces() -> tuple[list[Sample], FaceIndex]:
    """The shared samples and the face boxes of all of them (``runs/faces.csv``, built once)."""
    samples = shared_samples()
    faces = FaceIndex.build([s.path for s in samples], FACES_CACHE, workers=2, log=lambda _: None)
    return samples, faces


def _families(samples: list[Sample], args: argparse.Namespace) -> list[Family]:
    test = [s for s in samples if s.split == "test" and s.group in ("ffhq", "stylegan")]
    real_test = [s for s in test if s.label == "real"]
    families = [Family("test", test)]
    for name, perturbation in DEGRADATIONS.items():
        families.append(Family(name, test, _perturb(perturbation)))
    families.append(Family("sd21 held-out keys", _group(samples, "sd21", "test")))
    families.append(Family("web real", _group(samples, "web_real", "test")))
    families.append(
        Family(
            "self-blended", [Sample(s.path, "fake", "test", "sbi") for s in real_test], None, True
        )
    )
    if args.autoencoder_dir:
        recons = [args.autoencoder_dir / output_name(s.path) for s in real_test]
        ready = [Sample(p, "fake", "test", "ae") for p in recons if p.is_file()]
        families.append(Family("autoencoder", ready))
    return families


def _group(samples: list[Sample], group: str, split: str) -> list[Sample]:
    return [s for s in samples if s.group == group and s.split == split]


def _perturb(perturbation: Perturbation) -> Callable[[torch.Tensor, Sample], torch.Tensor]:
    def change(image: torch.Tensor, sample: Sample) -> torch.Tensor:
        key = torch.tensor([zlib.crc32(sample.path.name.encode())])
        return perturbation.apply(image[None], key)[0]

    return change


def _batches(detector: Detector, family: Family, faces: FaceIndex) -> Iterator[torch.Tensor]:
    """uint8 batches of the family's framed, harmonised faces (images without a face skipped)."""
    harm = detector.harmonization
    chunk: list[torch.Tensor] = []
    for index, sample in enumerate(family.samples):
        box = faces.box(sample.path) if sample.path in faces else None
        if box is None:
            continue
        image = load_image(sample.path)
        if family.change is not None:
            changed = family.change(to_uint8_tensor(image), sample)
            image = _pil(changed)
        framed, framing = frame(image, box)
        tensor = to_uint8_tensor(harm.apply(framed))
        if family.blend:
            points = framing.points(box.landmarks, image.size, harm)
            rng = np.random.default_rng(index)
            tensor = torch.from_numpy(self_blend(tensor.permute(1, 2, 0).numpy(), points, rng))
            tensor = tensor.permute(2, 0, 1).contiguous()
        chunk.append(tensor)
        if len(chunk) == BATCH:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def _pil(tensor: torch.Tensor):
    from PIL import Image

    return Image.fromarray(tensor.permute(1, 2, 0).numpy())


def _score(detector: Detector, family: Family, faces: FaceIndex) -> dict[str, np.ndarray]:
    """P(fake), labels and the features the reliability fits need, for one family."""
    labels = np.array(
        [s.target for s in family.samples if s.path in faces and faces.box(s.path) is not None]
    )
    features = collect_features(detector, _batches(detector, family, faces))
    head = detector.model.get_classifier()
    with torch.inference_mode():
        logits = head(torch.from_numpy(features["embedding"])).reshape(-1).float()
    return {"p_fake": torch.sigmoid(logits).numpy(), "labels": labels, "features": features}


def _reliability_fits(
    detector: Detector, samples: list[Sample], faces: FaceIndex
) -> dict[str, Reliability]:
    """Reliability fitted several ways on training faces, thresholded on validation faces."""
    train = subsample(
        [s for s in samples if s.split == "train" and s.group != "sd21"], FIT_PER_CLASS
    )
    val = [s for s in samples if s.split == "val"]
    degrade = Degradations(p=0.3)

    def degraded(image: torch.Tensor, sample: Sample) -> torch.Tensor:
        torch.manual_seed(zlib.crc32(sample.path.name.encode()))
        return degrade(image)

    clean = _score(detector, Family("fit", train), faces)
    rough = _score(detector, Family("fit degraded", train, degraded), faces)
    held = _score(detector, Family("val", val), faces)
    fits = {}
    for method in ("mahalanobis", "knn"):
        for layers in (("embedding",), ("embedding", "blocks.4")):
            for source, fit in (("clean", clean), ("degraded", rough)):
                label = f"{method}, {' + '.join(layers)}, fitted on {source} faces"
                fits[label] = Reliability.fit(
                    {n: fit["features"][n] for n in layers},
                    fit["labels"],
                    {n: held["features"][n] for n in layers},
                    method=method,
                )
    return fits


def _summary(name: str, scored: dict, everything: dict) -> dict:
    """Accuracy (and ROC AUC where both classes are present) of one family."""
    p, y = scored["p_fake"], scored["labels"]
    row = {"n": int(len(y)), "called_fake": int((p >= 0.5).sum())}
    if len(set(y.tolist())) == 2:
        metrics = classification_metrics(y, p)
        row.update(accuracy=metrics["accuracy"], roc_auc=metrics["roc_auc"])
    elif y.size:
        reals = everything["test"]["p_fake"][everything["test"]["labels"] == 0]
        both = np.concatenate([reals, p])
        truth = np.concatenate([np.zeros(len(reals)), y])
        row.update(
            accuracy=float(((p >= 0.5) == (y == 1)).mean()),
            roc_auc_vs_test_reals=classification_metrics(truth, both)["roc_auc"],
        )
    return row


def _reliability(fit: Reliability, scored: dict) -> dict:
    """Share flagged per family, ROC AUC against in-distribution test faces, outcomes."""
    scores = {
        name: fit.score({n: torch.from_numpy(s["features"][n]) for n in fit.layers}).numpy()
        for name, s in scored.items()
    }
    inside = scores["test"]
    out = {}
    for name, values in scores.items():
        pairs = zip(scored[name]["p_fake"], values, strict=True)
        outcomes = [assess(float(p), float(o)).verdict for p, o in pairs]
        row = {
            "flagged": float((values >= 1).mean()),
            "outcomes": {v: outcomes.count(v) for v in ("fake", "real", "uncertain")},
        }
        if name != "test":
            truth = np.concatenate([np.zeros(len(inside)), np.ones(len(values))])
            row["roc_auc_vs_test"] = classification_metrics(
                truth, _rank(np.concatenate([inside, values]))
            )["roc_auc"]
        out[name] = row
    return out


def _rank(values: np.ndarray) -> np.ndarray:
    """Scores as ranks in [0, 1] (ROC AUC depends on the order only)."""
    order = values.argsort().argsort()
    return order / max(len(values) - 1, 1)


def _training(detector: Detector) -> dict:
    training = detector.metadata.get("training", {})
    keys = (
        "epochs_run",
        "best_epoch",
        "degrade",
        "self_blend",
        "autoencoder",
        "balance",
        "seconds",
    )
    return {k: training.get(k) for k in keys}


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


if __name__ == "__main__":
    assert FACES.is_dir(), f"{FACES}: the shared face sample is needed"
    main()
