"""dfx-resnet: ResNet-18 as a deepfake-xai detector, in a few lines.

timm's ResNet follows the protocol :class:`~deepfake_xai.detectors.TimmDetector` builds on
(``forward_features``, ``forward_head(x, pre_logits=True)``, ``get_classifier()``), so naming the
architecture is enough: the one-logit head, ImageNet mean/std, the 224 px input size and the
CAM layers (``final`` = ``layer4``, ``mid`` = ``layer3``, stride 16) all come from timm.
"""

from deepfake_xai.detectors import TimmDetector

__version__ = "0.1.0"
__all__ = ["ResNet18"]


class ResNet18(TimmDetector):
    """ResNet-18 (11.2 M parameters); ``pretrained=True`` starts from timm's ImageNet weights."""

    architecture = "resnet18"
    detector_name = "resnet18"
