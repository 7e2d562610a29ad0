"""Which detectors the app serves, and the synthetic demo detectors it trains on request.

In order: detectors or checkpoints given by the caller, else ``$DEEPFAKE_XAI_CHECKPOINTS``, else
the detectors shipped inside the package (trained on real faces, see
:mod:`deepfake_xai.detectors.shipped`), else the synthetic demo detectors. Those (also chosen with
``synthetic=True``, for the pointing-game demonstration) come from :func:`prepare_demo_models`:
it generates the synthetic face set, trains both built-in detectors on it briefly with
:func:`deepfake_xai.training.train`, and caches the result under ``$DEEPFAKE_XAI_CACHE/demo``
(default ``~/.cache/deepfake-xai/demo``), keyed by its settings, so later starts take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..detectors import Detector, resolve_device

CHECKPOINTS_ENV = "DEEPFAKE_XAI_CHECKPOINTS"
READY = "ready.json"


@dataclass(frozen=True)
class DemoConfig:
    """The demo set and its training: about 40 s with these defaults on 2 shared CPU cores."""

    n_per_class: int = 160
    image_size: int = 64
    epochs: int = 6
    batch_size: int = 32
    detectors: tuple[str, ...] = ("efficientnet_b0", "mobilenetv2_100")
    pretrained: bool = True
    augment: bool = False  # a random resized crop can cut a local artifact out of the image
    max_train_batches: int | None = None
    examples_per_class: int = 3
    seed: int = 0

    def key(self) -> str:
        """A short hash of the settings and the package version: the cache folder's name."""
        from .. import __version__

        text = json.dumps({**asdict(self), "version": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class DemoModels:
    """The detectors the app serves, example images, and whether they are the demo ones."""

    detectors: list[Detector]
    examples: list[Path] = field(default_factory=list)
    demo: bool = False


def cache_dir() -> Path:
    """Where demo detectors are cached: ``$DEEPFAKE_XAI_CACHE/demo`` or the user cache dir."""
    from ..detectors.weights import user_cache_dir

    return user_cache_dir("demo")


def resolve_models(
    detectors: Sequence[Detector | str] | None = None,
    checkpoints: Sequence[str | os.PathLike] | None = None,
    *,
    device: str = "auto",
    config: DemoConfig | None = None,
    synthetic: bool = False,
) -> DemoModels:
    """Detectors given as objects or names, else checkpoints, else the env var, else the shipped
    detectors, else (or with ``synthetic``) the synthetic demo ones.

    Loaded as :func:`deepfake_xai.analyze` loads them: checkpoints of the same detector are told
    apart as ``name@<file stem>``.
    """
    from ..analysis.analyzer import load_detectors
    from ..detectors.shipped import shipped_checkpoints

    sources: Sequence[Any] = detectors or checkpoints or _env_checkpoints()
    if not sources and not synthetic:
        sources = shipped_checkpoints()
    if not sources:
        return prepare_demo_models(config, device=device)
    return DemoModels(load_detectors(list(sources), resolve_device(device)))


def _env_checkpoints() -> list[str]:
    return [part.strip() for part in os.environ.get(CHECKPOINTS_ENV, "").split(",") if part.strip()]


def prepare_demo_models(
    config: DemoConfig | None = None,
    *,
    device: str = "auto",
    root: str | os.PathLike | None = None,
    log: Callable[[str], Any] = print,
) -> DemoModels:
    """The cached demo detectors, training them first when the cache has none for ``config``."""
    config = config or DemoConfig()
    folder = Path(root or cache_dir()) / config.key()
    ready = folder / READY
    if not ready.exists():
        _build(config, folder, log)
    record = json.loads(ready.read_text())
    detectors = [Detector.load(folder / path, device=device) for path in record["checkpoints"]]
    return DemoModels(detectors, [folder / p for p in record["examples"]], demo=True)


def _build(config: DemoConfig, folder: Path, log: Callable[[str], Any]) -> None:
    """Generate the synthetic set, train every demo detector, then write ``ready.json`` last."""
    from ..synthetic import generate_dataset
    from ..training import TrainConfig, train

    log(
        f"Preparing demo detectors (first start only, cached in {folder}): "
        f"{2 * config.n_per_class} synthetic faces, then {', '.join(config.detectors)} for "
        f"{config.epochs} epochs at {config.image_size} px."
    )
    data = folder / "data"
    generate_dataset(
        data,
        config.n_per_class,
        size=config.image_size,
        seed=config.seed,
        split=True,
        workers=min(4, os.cpu_count() or 1),
        progress=True,
    )
    training = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        image_size=config.image_size,
        pretrained=config.pretrained,
        augment=config.augment,
        seed=config.seed,
        max_train_batches=config.max_train_batches,
    )
    results = train(data, list(config.detectors), folder / "train", training, log=log)
    record = {
        "checkpoints": [str(r.checkpoint.relative_to(folder)) for r in results.values()],
        "examples": [str(p.relative_to(folder)) for p in _examples(data, config)],
        "config": asdict(config),
    }
    tmp = folder / f".{READY}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, folder / READY)
    log(f"Demo detectors ready in {folder}.")


def _examples(data: Path, config: DemoConfig) -> list[Path]:
    """A few held-out images of each class (the test split is never trained on)."""
    picked: list[Path] = []
    for label in ("real", "fake"):
        files = sorted((data / "test" / label).glob("*.png"))
        picked.extend(files[: config.examples_per_class])
    return picked
