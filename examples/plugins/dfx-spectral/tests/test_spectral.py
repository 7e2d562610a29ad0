"""dfx-spectral honours deepfake-xai's detector contract, and its spectrum sees periodic traces.

Run after installing the package (``pip install -e '.[test]'``).
"""

import pytest
import torch
from dfx_spectral import SpectralCNN, log_spectrum

import deepfake_xai as dx
from deepfake_xai.detectors import PretrainedWeightsUnavailable
from deepfake_xai.testing import check_detector

SIZE = 64


def test_conformance():
    check_detector("spectral_cnn", image_size=SIZE).raise_if_failed()


def test_registered_through_its_entry_point():
    assert dx.DETECTORS.entry("spectral_cnn").source == "dfx-spectral"
    assert type(dx.load_detector("spectral_cnn", image_size=SIZE, device="cpu")) is SpectralCNN


def _smooth_images(n: int) -> torch.Tensor:
    """Normalised low-frequency images: bilinearly upsampled 8x8 noise."""
    coarse = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")


def test_checkerboard_shows_as_a_peak_at_the_highest_frequency():
    smooth = _smooth_images(2)
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checkerboard = ((rows + cols) % 2).float() * 0.2  # the trace of a stride-2 upsampling
    spectra = log_spectrum(torch.cat([smooth, smooth + checkerboard]))
    assert spectra.shape == (4, 1, SIZE, SIZE) and torch.isfinite(spectra).all()
    # After fftshift the (Nyquist, Nyquist) frequency sits at index (0, 0).
    clean, traced = spectra[:2, 0, 0, 0], spectra[2:, 0, 0, 0]
    assert (traced > clean + 3).all() and (traced > spectra[2:, 0].mean() + 3).all()


def test_spectrum_ignores_brightness_and_contrast():
    x = _smooth_images(1)
    torch.testing.assert_close(log_spectrum(x), log_spectrum(2 * x + 0.5), atol=0.1, rtol=0)


def test_layers_and_resolutions():
    detector = SpectralCNN(image_size=SIZE, device="cpu")
    x = detector.normalize(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
    fmap = detector.features(x)
    assert fmap.shape == (2, 128, SIZE // 16, SIZE // 16)
    assert set(detector.cam_layers) == {"final", "mid", "spectrum"}
    assert detector.module("final") is detector.model.fuse


def test_pretrained_weights_do_not_exist():
    with pytest.raises(PretrainedWeightsUnavailable, match="no pretrained weights"):
        SpectralCNN(pretrained=True)
    with pytest.raises(ValueError, match="contradicts"):
        SpectralCNN(image_size=64, harmonization=dx.Harmonization(image_size=32))
