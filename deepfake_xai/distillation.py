"""Knowledge distillation: a student detector learns from a trained teacher's answers as well as
from the labels.

The teacher sees each training batch exactly as the student does (same augmentation, same
pseudo-fakes), resized to its own input size and normalised its own way. Two signals:

- its soft P(fake) (Hinton et al. 2015, with a temperature), which carries how sure it is where
  a label carries one bit;
- optionally its penultimate embedding, matched by cosine distance (FitNets-style hints): a
  dense target that lets a network without ImageNet weights learn useful features from a few
  thousand faces. Both embeddings must have the same width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .detectors import Detector


@dataclass
class Distillation:
    """How much of the loss comes from ``teacher``: ``soft`` is the weight of the soft-target
    loss (the labels keep ``1 - soft``), ``features`` the weight of the embedding hint."""

    teacher: Detector
    soft: float = 0.5
    features: float = 0.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.soft <= 1.0:
            raise ValueError(f"soft is a weight in [0, 1], got {self.soft}")
        if self.features < 0:
            raise ValueError(f"features must be >= 0, got {self.features}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        self.teacher.model.eval().requires_grad_(False)

    def check_student(self, student: Detector) -> None:
        """Fail before training when the embedding hint cannot apply to ``student``."""
        if not self.features:
            return
        widths = [_embedding_width(d) for d in (student, self.teacher)]
        if widths[0] != widths[1]:
            raise ValueError(
                f"the embedding hint needs equal widths: {student.name} has {widths[0]}, "
                f"the teacher {self.teacher.name} has {widths[1]}"
            )

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's ``(logit (B,), embedding (B, D))`` on a uint8 batch."""
        teacher = self.teacher
        x = teacher.normalize(images)
        if x.shape[-1] != teacher.input_size:
            size = (teacher.input_size, teacher.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return teacher.head(teacher.features(x))

    def loss(
        self,
        logit: torch.Tensor,
        embedding: torch.Tensor,
        labels: torch.Tensor,
        images: torch.Tensor,
    ) -> torch.Tensor:
        """The student's loss on one batch: labels, soft targets and the embedding hint."""
        teacher_logit, teacher_embedding = self.targets(images)
        hard = F.binary_cross_entropy_with_logits(logit, labels)
        t = self.temperature
        soft_targets = torch.sigmoid(teacher_logit.float() / t)
        soft = F.binary_cross_entropy_with_logits(logit / t, soft_targets) * t * t
        loss = (1.0 - self.soft) * hard + self.soft * soft
        if self.features:
            similarity = F.cosine_similarity(embedding.float(), teacher_embedding.float(), dim=1)
            loss = loss + self.features * (1.0 - similarity).mean()
        return loss

    def describe(self) -> dict[str, object]:
        """What a checkpoint records of its teacher."""
        return {
            "teacher": self.teacher.name,
            "teacher_checkpoint": self.teacher.checkpoint,
            "teacher_fingerprint": self.teacher.fingerprint,
            "soft": self.soft,
            "features": self.features,
            "temperature": self.temperature,
        }


def _embedding_width(detector: Detector) -> int:
    size = detector.input_size
    probe = torch.zeros(1, 3, size, size, device=detector.device)
    with torch.no_grad():
        return int(detector.head(detector.features(probe))[1].shape[1])
