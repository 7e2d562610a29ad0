"""dfx-spectral: a compact CNN that reads both the pixels and their Fourier spectrum.

GAN generators upsample with transposed or nearest-neighbour convolutions, which leave periodic
traces: regular peaks in the image's Fourier spectrum that real camera photos do not have.
:class:`SpectralCNN` has two branches: a small spatial conv stack over the RGB image, and a
frequency branch over the centred log-magnitude spectrum of the grey image. The frequency
branch is pooled to one vector and tiled over the spatial grid, and a 1x1 fusion conv mixes
the two before the final pooling, so the ``final`` Grad-CAM map stays aligned with the image.

It is not a timm model, so it is written against the minimal detector contract: a
:class:`~deepfake_xai.detectors.Detector` subclass overriding ``features`` and ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfake_xai import Harmonization
from deepfake_xai.detectors import Detector, PretrainedWeightsUnavailable

__version__ = "0.1.0"
__all__ = ["SpectralCNN", "SpectralNet", "log_spectrum"]

LUMA = (0.299, 0.587, 0.114)
CAM_LAYERS = {"final": "fuse", "mid": "spatial.2", "spectrum": "spectral"}
"""``final``: the fused map features() returns (stride 16); ``mid``: the spatial branch at
stride 8; ``spectrum``: the frequency branch, a map over the (centred) frequency plane."""


def log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Centred log-magnitude spectrum of the grey image: ``(B, 1, H, W)``.

    The grey image is standardised before the FFT and the spectrum after it, so brightness and
    contrast do not change the result. The zero frequency sits at the centre; the highest
    frequencies, where upsampling traces show, at the borders and corners. Computed in float32
    outside autocast: half-precision FFTs only take power-of-2 sizes and lose the small peaks.
    """
    with torch.autocast(x.device.type, enabled=False):
        weights = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
        grey = _standardise((x.float() * weights).sum(dim=1))
        spectrum = torch.fft.fftshift(torch.fft.fft2(grey, norm="ortho"), dim=(-2, -1))
        return _standardise(torch.log1p(spectrum.abs()))[:, None]


def _standardise(images: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit standard deviation per ``(H, W)`` image."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return (images - mean) / (images.std(dim=(-2, -1), keepdim=True) + 1e-6)


def conv_block(c_in: int, c_out: int, stride: int, kernel: int = 3) -> nn.Sequential:
    """Conv, BatchNorm, ReLU (not in place, so Grad-CAM hooks can replace the output)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class SpectralNet(nn.Module):
    """The two-branch network: ``forward_features`` gives the fused map, ``forward_head`` the
    ``(logit, embedding)`` pair. About 0.1 M parameters; any input size divisible by 16."""

    def __init__(self, width: int = 64):
        super().__init__()
        half = width // 2
        self.spatial = nn.Sequential(
            conv_block(3, half // 2, 2),
            conv_block(half // 2, half, 2),
            conv_block(half, width, 2),
            conv_block(width, width, 2),
        )
        self.spectral = nn.Sequential(
            conv_block(1, half // 2, 2),
            conv_block(half // 2, half, 2),
            conv_block(half, width, 2),
        )
        self.fuse = conv_block(2 * width, 2 * width, 1, kernel=1)
        self.classifier = nn.Linear(2 * width, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(x)
        spectral = self.spectral(log_spectrum(x)).mean(dim=(2, 3), keepdim=True)
        context = spectral.expand(-1, -1, *spatial.shape[-2:])
        return self.fuse(torch.cat([spatial, context], dim=1))

    def forward_head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = fmap.mean(dim=(2, 3))
        return self.classifier(embedding).reshape(-1), embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))[0]


class SpectralCNN(Detector):
    """The ``spectral_cnn`` detector: :class:`SpectralNet` behind the Detector contract.

    It has no pretrained weights: train it (``deepfake-xai train DATA --detector spectral_cnn
    --out DIR --no-pretrained``) and load the checkpoint. The default input is 256 px because
    resizing smooths away the high-frequency traces this model looks for; keep images at their
    native size if you can.
    """

    def __init__(
        self,
        *,
        pretrained: bool = False,
        device: str | torch.device = "auto",
        image_size: int | None = None,
        harmonization: Harmonization | None = None,
    ):
        if pretrained:
            raise PretrainedWeightsUnavailable(
                "spectral_cnn has no pretrained weights; pass pretrained=False and train it, or "
                "load a trained checkpoint with dx.load_detector(PATH or 'hf-hub:org/repo')"
            )
        if harmonization is None:
            harmonization = Harmonization(image_size=image_size or 256)
        elif image_size is not None and image_size != harmonization.image_size:
            raise ValueError(
                f"image_size={image_size} contradicts harmonization.image_size="
                f"{harmonization.image_size}"
            )
        super().__init__(
            SpectralNet(),
            name="spectral_cnn",
            architecture="spectral_cnn",
            cam_layers=CAM_LAYERS,
            harmonization=harmonization,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            device=device,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_head(fmap)
