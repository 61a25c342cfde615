"""``[train]``: one fit's recipe: the optimiser and its schedule, the penalty form, the device and the seed.

``train.penalty`` is the one place that says how lambda enters, for every optimiser
(``docs/recipes.md``). A key that the chosen optimiser or schedule does not read is refused,
so a study never carries a setting that silently does nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sweep.config.common import DEVICE, Loss, Penalty, Seed, _Section
from sweep.config.recipes import OPTIMIZER_KEYS, OPTIMIZERS, SCHEDULE_KEYS, SCHEDULES, Optimizer, Schedule


class TrainConfig(_Section):
    """``[train]``: one fit: optimiser, schedule and clipping, the penalty form, the device and the seed."""

    lr: float = Field(default=0.01, gt=0)
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=5, ge=1)
    penalty: Penalty = "l2"
    l1_ratio: float = Field(default=0.5, ge=0, le=1)
    decay_bias: bool = True  # false: decay only tensors with p.dim() >= 2 (weight matrices, conv kernels)
    optimizer: Optimizer = "sgd"  # without the key: sgd, or adamw where penalty = "l2-decoupled" (_legacy_optimizer)
    momentum: float = Field(default=0.0, ge=0, lt=1)  # sgd and rmsprop; 0 is the seed's plain SGD
    nesterov: bool = False  # sgd, with momentum > 0
    betas: tuple[float, float] | None = None  # Adam's family; None: the torch.optim class's default
    eps: float | None = Field(default=None, gt=0)  # None: the torch.optim class's default
    schedule: Schedule = "constant"
    step_size: int | None = Field(default=None, ge=1)  # schedule "step": epochs between two cuts
    gamma: float | None = Field(default=None, gt=0, le=1)  # schedule "step": the factor of each cut (None: 0.1)
    warmup_epochs: float | None = Field(default=None, gt=0)  # schedule "warmup-cosine" (None: 1)
    clip_grad_norm: float | None = Field(default=None, gt=0)  # None: no clipping
    device: str = "auto"
    seed: Seed = 0
    # The data loss (sweep.training.losses): cross-entropy on class labels, or mse on real-valued targets.
    loss: Loss = "cross-entropy"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)  # cross-entropy only, as F.cross_entropy's
    class_weights: Literal["balanced"] | list[float] | None = None  # cross-entropy only; "balanced": sklearn's

    @model_validator(mode="before")
    @classmethod
    def _legacy_optimizer(cls, data: Any) -> Any:
        """A config without ``optimizer`` (every study made before the key existed) trains as it did:
        penalty ``l2-decoupled`` was AdamW, every other penalty SGD. AdamW never read ``momentum``,
        so an old ``l2-decoupled`` config's momentum is dropped rather than refused."""
        if isinstance(data, dict) and "optimizer" not in data and data.get("penalty") == "l2-decoupled":
            data = {k: v for k, v in data.items() if k != "momentum"} | {"optimizer": "adamw"}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.loss != "cross-entropy" and (self.label_smoothing or self.class_weights is not None):
            raise ValueError(f"label_smoothing and class_weights weigh cross-entropy; train.loss = {self.loss!r} "
                             "takes neither: remove them or set train.loss = 'cross-entropy'")
        if isinstance(self.class_weights, list) and (not self.class_weights or min(self.class_weights) < 0):
            raise ValueError(f"class_weights must be 'balanced' or one weight >= 0 per class, got {self.class_weights}")
        if self.optimizer == "adamw" and self.penalty == "l2":
            raise ValueError("optimizer 'adamw' decays weights by lr*lambda outside the gradient (decoupled), penalty "
                             "'l2' adds lambda*w to the gradient (coupled, Adam's weight_decay): set penalty = "
                             "'l2-decoupled' for AdamW, or optimizer = 'adam' for Adam + L2")
        self._check_applies(OPTIMIZER_KEYS - OPTIMIZERS[self.optimizer].keys, f"optimizer {self.optimizer!r}")
        self._check_applies(SCHEDULE_KEYS - SCHEDULES[self.schedule], f"schedule {self.schedule!r}")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov = true needs momentum > 0, got momentum = 0; set momentum (e.g. 0.9)")
        if self.schedule == "step" and self.step_size is None:
            raise ValueError("schedule 'step' needs step_size (epochs between two cuts of the learning rate), got none")
        if self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        return self

    def _check_applies(self, unread: frozenset[str], owner: str) -> None:
        """Refuse a key set away from its default that ``owner`` does not read."""
        for key in sorted(unread):
            value, default = getattr(self, key), type(self).model_fields[key].default
            if value != default:
                readers = sorted(n for n, s in {**{o: s.keys for o, s in OPTIMIZERS.items()}, **SCHEDULES}.items()
                                 if key in s)
                raise ValueError(f"{key} = {value!r} does nothing with {owner}; it applies to {', '.join(readers)}: "
                                 f"remove it or choose one of those")

    @property
    def seed_recipe(self) -> bool:
        """Plain SGD, penalty ``l2``, a constant learning rate, no clipping: the seed document's recipe, which
        SimpleNet and the mlp train with hand-derived gradients (``fit._fast_l2_step``, ``population.py``)."""
        return (self.optimizer == "sgd" and self.penalty == "l2" and self.momentum == 0 and self.schedule == "constant"
                and self.clip_grad_norm is None)
