"""B0 and MobileNetV2 made of a trained EfficientNet-Lite0: shapes, kept weights, padding."""

from __future__ import annotations

import pytest
import torch

import deepfake_xai as dx
from deepfake_xai.detectors.pruned_transplant import mobilenetv2_from_lite0

SIZE = 32


@pytest.fixture(scope="module")
def donor():
    detector = dx.load_detector(
        "efficientnet_lite0", pretrained=False, image_size=SIZE, device="cpu"
    )
    generator = torch.Generator().manual_seed(0)
    for (
        module
    ) in detector.model.modules():  # varied BatchNorm scales, so "strongest" means something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.1
    return detector


def test_the_cut_is_a_mobilenetv2_that_keeps_the_strongest_channels(donor):
    cut = mobilenetv2_from_lite0(donor)
    assert (
        cut.name == "mobilenetv2_100" and cut.model.default_cfg["architecture"] == "mobilenetv2_100"
    )
    assert cut.mean == (0.5, 0.5, 0.5) and cut.std == (0.5, 0.5, 0.5)
    assert cut.harmonization == donor.harmonization and "pruned out of" in cut.metadata["init"]
    # stage 4, block 1: 576 of the donor's 672 hidden channels, the largest BatchNorm scales
    scales = donor.model.blocks[4][1].bn2.weight
    kept = scales.abs().topk(576).indices.sort().values
    torch.testing.assert_close(cut.model.blocks[4][1].bn2.weight, scales[kept])
    # 5 x 5 depthwise kernels keep their centre
    torch.testing.assert_close(
        cut.model.blocks[4][1].conv_dw.weight,
        donor.model.blocks[4][1].conv_dw.weight[kept, :, 1:4, 1:4],
    )
    torch.testing.assert_close(cut.model.conv_head.weight, donor.model.conv_head.weight)
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    assert torch.isfinite(cut(cut.normalize(images))).all()


def test_extra_blocks_pass_their_input_through(donor):
    cut = mobilenetv2_from_lite0(donor)
    extra = cut.model.blocks[2][2]  # MobileNetV2 has 3 blocks where Lite0 has 2
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(extra(x), x)


def test_only_a_lite0_can_donate():
    other = dx.load_detector("mobilenetv2_100", pretrained=False, image_size=SIZE, device="cpu")
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        mobilenetv2_from_lite0(other)


def test_a_b0_made_of_a_trained_lite0_starts_where_the_lite0_is(donor, tmp_path):
    from deepfake_xai.detectors.transplanted_weights import GATE_BIAS, b0_from_lite0

    copy = b0_from_lite0(donor)
    assert copy.architecture == "efficientnet_b0" and "transplanted from" in copy.metadata["init"]
    assert copy.mean == (0.5, 0.5, 0.5) and copy.harmonization == donor.harmonization
    torch.testing.assert_close(copy.model.classifier.weight, donor.model.classifier.weight)
    gate = copy.model.blocks[1][0].se
    assert not gate.conv_expand.weight.any() and (gate.conv_expand.bias == GATE_BIAS).all()
    again = dx.load_detector(copy.save(tmp_path / "b0.safetensors"), device="cpu")
    assert isinstance(again.model.blocks[1][0].bn1.act, torch.nn.ReLU6)
    # Lite0 pads like TensorFlow, B0 symmetrically: the two agree where every strided
    # convolution sees an odd size, and there the copy answers as the donor does
    odd = 2**5 + 1
    images = torch.randint(0, 256, (4, 3, odd, odd), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = donor.model.eval().forward_features(donor.normalize(images.to(torch.uint8)))
        got = again.model.eval().forward_features(again.normalize(images.to(torch.uint8)))
    assert (got - want).norm() < 0.02 * want.norm()  # 70-97 % apart at an even size


def test_only_a_lite0_becomes_a_b0():
    from deepfake_xai.detectors.transplanted_weights import b0_from_lite0

    other = dx.load_detector("mobilenetv2_100", pretrained=False, image_size=SIZE, device="cpu")
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        b0_from_lite0(other)
