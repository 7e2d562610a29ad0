"""Known-answer test models shared by several test files (imported as ``models``: pytest puts
this folder on ``sys.path``, as for ``conftest``)."""

from __future__ import annotations

import torch
from torch import nn

from deepfake_xai.detectors import Detector
from deepfake_xai.preprocessing import Harmonization

SIZE = 64


class QuadrantDetector(Detector):
    """Fixed weights; the logit is the high-frequency energy of the top-left quadrant only.

    Random-noise images score about +4.5 (fake) and their blurred copies about -4.6 (real).
    """

    def __init__(self, size: int = SIZE):
        conv = nn.Conv2d(3, 4, 3, bias=False)
        weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
        conv.weight.data = (weight - weight.mean(dim=(1, 2, 3), keepdim=True)) / 9
        super().__init__(
            nn.Sequential(conv),
            name="quadrant",
            architecture="test",
            cam_layers={"final": "0"},
            harmonization=Harmonization(image_size=size),
            device="cpu",
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        half_h, half_w = x.shape[-2] // 2, x.shape[-1] // 2
        return self.model(x[..., :half_h, :half_w]).pow(2)

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = fmap.mean(dim=(2, 3))
        return 4 * (embedding.sum(dim=1) - 1.2), embedding


def noise_batch(detector: Detector, n: int, seed: int = 1, size: int = SIZE) -> torch.Tensor:
    """``n`` normalised random-noise images."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    return detector.normalize(pixels)


def quadrant_share(maps: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its total in the top-left quadrant."""
    half = maps.shape[-1] // 2
    return maps[:, :half, :half].sum(dim=(1, 2)) / maps.sum(dim=(1, 2))


class SpatialMask(nn.Module):
    """Multiplies a feature map by a learnable ``(1, 1, H, W)`` spatial weight."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(mask)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap * self.weight


class AlignedQuadrantDetector(QuadrantDetector):
    """The QuadrantDetector's decision with a feature map that covers the whole image.

    The convolution keeps the image size and a :class:`SpatialMask` (1 in the top-left
    quadrant, 0 elsewhere) and a linear head hold the "knowledge" as parameters, so Grad-CAM at
    ``final`` lines up with the pixels, and randomising the weights moves the evidence.
    """

    def __init__(self, size: int = SIZE):
        super().__init__(size)
        half = size // 2
        mask = torch.zeros(1, 1, size, size)
        mask[..., :half, :half] = 1
        head = nn.Linear(4, 1)
        head.weight.data.fill_(4.0)
        head.bias.data.fill_(-4.8)
        self.model[0].padding = (1, 1)
        self.model.append(SpatialMask(mask))
        self.model.append(head)
        self.model.requires_grad_(False)
        self.cam_layers = {"final": "1"}
        self.quadrant_area = half * half

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model[1](self.model[0](x).pow(2))

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = fmap.sum(dim=(2, 3)) / self.quadrant_area
        return self.model[2](embedding).reshape(-1), embedding
