"""Pseudo-fakes from a generator's autoencoder: a real photo encoded and decoded by TAEF2.

TAEF2 (madebyollin/taesd, MIT) is a tiny distilled stand-in for the VAE of the FLUX.2 image
generator: RGB in [0, 1] -> 32-channel latent at 1/8 size -> RGB in [0, 1]. A real face passed
through it keeps its content and gains the decoder's traces, so it can be labelled fake and
differs from its real twin in those traces only (an "aligned" pair). The network below follows
the published TAESD layout (conv, residual blocks of three 3x3 convs, stride-2 convs between
stages; the decoder mirrors it with nearest upsampling), plus FLUX.2's variant: the blocks
nearest the latent add a 1x1 bottleneck branch with a GroupNorm before their convs. No weights
ship with the package and nothing is downloaded: pass the folder that holds
``taef2_encoder.pth`` and ``taef2_decoder.pth``, or set ``DEEPFAKE_XAI_TAEF2``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..images import ImageLoadError, load_image

__all__ = [
    "WEIGHTS_ENV",
    "TinyAutoencoder",
    "load_tiny_autoencoder",
    "output_name",
    "reconstruct",
    "reconstruct_folder",
]

log = logging.getLogger(__name__)

WEIGHTS_ENV = "DEEPFAKE_XAI_TAEF2"
"""Environment variable naming the weights folder when none is passed."""

ENCODER_FILE, DECODER_FILE = "taef2_encoder.pth", "taef2_decoder.pth"
SCALE = 8  # image side / latent side
_WIDTH = 64
_GROUPS = 4  # GroupNorm groups of the bottleneck branch


def _conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class _Block(nn.Module):
    """Residual block: three 3x3 convs with ReLUs, an identity skip, a final ReLU.

    With ``bottleneck``, a 1x1 conv to 4x channels, GroupNorm, ReLU and a 1x1 conv back are
    first added to the input (FLUX.2's variant, in the blocks next to the latent).
    """

    def __init__(self, bottleneck: bool = False):
        super().__init__()
        c = _WIDTH
        self.conv = nn.Sequential(_conv(c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))
        self.pool = (
            nn.Sequential(
                nn.Conv2d(c, 4 * c, 1, bias=False),
                nn.GroupNorm(_GROUPS, 4 * c),
                nn.ReLU(),
                nn.Conv2d(4 * c, c, 1, bias=False),
            )
            if bottleneck
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class _Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def _encoder(latent_channels: int) -> nn.Sequential:
    c = _WIDTH
    layers: list[nn.Module] = [_conv(3, c), _Block()]
    for stage in range(3):
        last = stage == 2
        layers += [_conv(c, c, stride=2, bias=False), *(_Block(bottleneck=last) for _ in range(3))]
    return nn.Sequential(*layers, _conv(c, latent_channels))


def _decoder(latent_channels: int) -> nn.Sequential:
    c = _WIDTH
    layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, c), nn.ReLU()]
    for stage, blocks in enumerate((3, 3, 3, 1)):
        if stage:
            layers += [nn.Upsample(scale_factor=2), _conv(c, c, bias=False)]
        layers += [_Block(bottleneck=stage == 0) for _ in range(blocks)]
    return nn.Sequential(*layers, _conv(c, 3))


class TinyAutoencoder(nn.Module):
    """TAEF2: RGB (B, 3, H, W) in [0, 1] <-> latent (B, 32, H/8, W/8); sides multiples of 8."""

    def __init__(self, latent_channels: int = 32):
        super().__init__()
        self.encoder = _encoder(latent_channels)
        self.decoder = _decoder(latent_channels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents of float RGB images in [0, 1]."""
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Float RGB images in [0, 1] from latents."""
        return self.decoder(latents).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction of float RGB images in [0, 1]."""
        return self.decode(self.encode(images))


def load_tiny_autoencoder(folder: str | os.PathLike | None = None) -> TinyAutoencoder:
    """TAEF2 from ``folder`` (default: ``$DEEPFAKE_XAI_TAEF2``), frozen, in eval mode, on CPU.

    Raises:
        FileNotFoundError: no folder given or set, or a weights file is missing.
        ValueError: a file is not a state dict of this network (names the file and the keys).
    """
    if folder is None:
        folder = os.environ.get(WEIGHTS_ENV, "").strip()
        if not folder:
            raise FileNotFoundError(
                f"no TAEF2 weights folder: pass one or set {WEIGHTS_ENV} to the folder holding "
                f"{ENCODER_FILE} and {DECODER_FILE}"
            )
    folder = Path(folder)
    model = TinyAutoencoder()
    for part, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TAEF2 weights file not found")
        part.load_state_dict(_state_dict(path, part), strict=True)
    model.requires_grad_(False)
    return model.eval()


def _state_dict(path: Path, part: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors in ``path``, checked against ``part``'s keys and shapes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    expected = part.state_dict()
    problems = []
    if missing := sorted(expected.keys() - state.keys()):
        problems.append(f"missing keys {_few(missing)}")
    if unexpected := sorted(state.keys() - expected.keys()):
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong := [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]:
        problems.append(f"wrong shapes {_few(wrong)}")
    if problems:
        raise ValueError(f"{path}: not TAEF2 weights: {'; '.join(problems)}")
    return state


def _few(items: list[str], n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def reconstruct(model: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
    """Encode and decode uint8 RGB images (B, 3, H, W); uint8 of the same shape and device.

    Sides that are not multiples of 8 are reflect-padded for the network and cropped back.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images of shape (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    height, width = images.shape[-2:]
    weight = next(model.parameters())
    with torch.inference_mode():
        x = images.to(weight.device, weight.dtype) / 255
        x = _pad(x, -height % SCALE, -width % SCALE)
        y = model(x)[..., :height, :width]
        return (y * 255).round_().to(images.device, torch.uint8)


def _pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad the bottom and right edges; reflection where the image is large enough."""
    if not (bottom or right):
        return x
    fits = bottom < x.shape[-2] and right < x.shape[-1]
    return F.pad(x, (0, right, 0, bottom), mode="reflect" if fits else "replicate")


def reconstruct_folder(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: TinyAutoencoder,
    *,
    batch_size: int = 8,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write a lossless PNG reconstruction of each source into ``out``; resumable.

    Outputs already in ``out`` are kept, not redone. Unreadable sources are logged and skipped.

    Returns:
        The output path of every usable source, in source order, and ``(source, reason)`` for
        each one that could not be read.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / output_name(s) for s in sources]
    todo = [(s, t) for s, t in zip(sources, targets, strict=True) if not t.is_file()]
    failures: list[tuple[str, str]] = []
    failed: set[Path] = set()
    for start in range(0, len(todo), batch_size):
        loaded = []
        for source, target in todo[start : start + batch_size]:
            try:
                loaded.append((np.asarray(load_image(source)), target))
            except ImageLoadError as e:
                log.warning("skipped %s: %s", e.source, e.reason)
                failures.append((e.source, e.reason))
                failed.add(target)
        for size in dict.fromkeys(a.shape for a, _ in loaded):
            group = [(a, t) for a, t in loaded if a.shape == size]
            batch = torch.from_numpy(np.stack([a for a, _ in group])).permute(0, 3, 1, 2)
            for image, target in zip(reconstruct(model, batch), [t for _, t in group], strict=True):
                _save_png(image.permute(1, 2, 0).numpy(), target)
    return [t for t in targets if t not in failed], failures


def output_name(source: str | os.PathLike) -> str:
    """``<stem>-<8 hex digits of the absolute source path>.png``: distinct sources never clash."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(source))).hexdigest()[:8]
    return f"{Path(source).stem}-{digest}.png"


def _save_png(pixels: np.ndarray, target: Path) -> None:
    """Save atomically: a temporary file, then a rename, so a stopped run leaves no half PNG."""
    tmp = target.with_name(f".{target.name}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, target)
