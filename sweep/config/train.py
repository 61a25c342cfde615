"""``[train]``: one fit's recipe: optimiser settings, the penalty form, the device and the seed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sweep.config.common import DEVICE, Loss, Penalty, Seed, _Section


class TrainConfig(_Section):
    """``[train]``: one fit: SGD settings, the penalty form, the device and the seed."""

    lr: float = Field(default=0.01, gt=0)
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=5, ge=1)
    penalty: Penalty = "l2"
    l1_ratio: float = Field(default=0.5, ge=0, le=1)
    decay_bias: bool = True  # false: decay only tensors with p.dim() >= 2 (weight matrices, conv kernels)
    momentum: float = Field(default=0.0, ge=0, lt=1)  # SGD momentum; 0 is the seed's plain SGD
    device: str = "auto"
    seed: Seed = 0
    # The data loss (sweep.training.losses): cross-entropy on class labels, or mse on real-valued targets.
    loss: Loss = "cross-entropy"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)  # cross-entropy only, as F.cross_entropy's
    class_weights: Literal["balanced"] | list[float] | None = None  # cross-entropy only; "balanced": sklearn's

    @model_validator(mode="after")
    def _check_device(self) -> TrainConfig:
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.loss != "cross-entropy" and (self.label_smoothing or self.class_weights is not None):
            raise ValueError(f"label_smoothing and class_weights weigh cross-entropy; train.loss = {self.loss!r} "
                             "takes neither: remove them or set train.loss = 'cross-entropy'")
        if isinstance(self.class_weights, list) and (not self.class_weights or min(self.class_weights) < 0):
            raise ValueError(f"class_weights must be 'balanced' or one weight >= 0 per class, got {self.class_weights}")
        return self
