"""The data losses a fit trains on (``train.loss``): one registry entry each, with the targets it needs.

- ``cross-entropy`` (the default): class labels, logits (N, classes) out; ``train.label_smoothing`` and
  ``train.class_weights`` (a weight per class, or ``"balanced"``: scikit-learn's ``compute_class_weight``
  on the labels the fit trains on, n / (classes * count)) are passed to ``F.cross_entropy``.
- ``mse``: real-valued targets (N,) or (N, d), the network's output (N, d); ``F.mse_loss``, the mean over
  every element.

``fit``, the torch.func population and the member-by-member population all train on ``make_loss``'s
function, so a member's loss is the single fit's. Evaluation (``eval_loss``) is the loss without
smoothing or weights: the plain validation cross-entropy (the log-loss) or the mean squared error, so a
validation figure means the same whatever the training recipe. Only plain cross-entropy trains on the
hand-written SimpleNet/MLP steps (``plain_cross_entropy``), which write its gradient out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from sweep.config import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    """One ``train.loss``: the targets it needs and how a batch's mean loss and its hits are computed."""

    name: str
    target: Literal["classes", "values"]
    make: Callable[[TrainConfig, torch.Tensor], LossFn]  # (config, the fit's targets) -> mean loss of (out, y)
    plain: LossFn  # the evaluation loss, summed over the batch: no smoothing, no weights
    stacked: LossFn  # the same for K members' outputs (K, m, ...) against one batch's targets: shape (K,)

    @property
    def classifies(self) -> bool:
        return self.target == "classes"


def class_weight_tensor(cfg: TrainConfig, y: torch.Tensor) -> torch.Tensor | None:
    """The per-class weights of ``train.class_weights`` for a fit on labels ``y`` (None: unweighted)."""
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "balanced":
        labels = y.cpu().numpy()
        present = np.unique(labels)
        weights = np.ones(int(labels.max()) + 1)
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return torch.tensor(weights, dtype=torch.float32, device=y.device)
    return torch.tensor(cfg.class_weights, dtype=torch.float32, device=y.device)


def _cross_entropy(cfg: TrainConfig, y: torch.Tensor) -> LossFn:
    weight = class_weight_tensor(cfg, y)
    if weight is None and not cfg.label_smoothing:
        return F.cross_entropy  # the plain loss, exactly as before

    def loss(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # Classes above the fit's largest label (a few examples, as the population check trains on) weigh 1.
        w = None if weight is None else F.pad(weight, (0, out.shape[-1] - weight.shape[0]), value=1.0)
        return F.cross_entropy(out, yb, weight=w, label_smoothing=cfg.label_smoothing)

    return loss


def _mse(cfg: TrainConfig, y: torch.Tensor) -> LossFn:
    return lambda out, yb: F.mse_loss(out, yb.view_as(out))


def _stacked_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k = out.shape[0]
    return F.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1).sum(1)


def _stacked_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    sq = (out - y.view_as(out[0])).square()
    return sq.flatten(1).sum(1) / out[0, 0].numel()


REGISTRY: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("cross-entropy", "classes", _cross_entropy, lambda out, y: F.cross_entropy(out, y, reduction="sum"),
         _stacked_cross_entropy),
    # Summed over examples, averaged over a target's d outputs: the (N, d) mean of F.mse_loss times N.
    Loss("mse", "values", _mse, lambda out, y: F.mse_loss(out, y.view_as(out), reduction="sum") / out[0].numel(),
         _stacked_mse),
)}


def loss_of(cfg: TrainConfig) -> Loss:
    return REGISTRY[cfg.loss]


def make_loss(cfg: TrainConfig, y_fit: torch.Tensor) -> LossFn:
    """The mean training loss of a batch for a fit on targets ``y_fit`` (class weights are counted on them)."""
    return loss_of(cfg).make(cfg, y_fit)


def hits(cfg: TrainConfig, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct predictions in a batch (a long scalar); 0 for a regression, whose accuracy is reported as NaN."""
    if not loss_of(cfg).classifies:
        return torch.zeros((), dtype=torch.long, device=out.device)
    return (out.argmax(-1) == y).sum(-1)


def plain_cross_entropy(cfg: TrainConfig) -> bool:
    """Whether the loss is cross-entropy without smoothing or weights: the one the hand-written steps derive."""
    return cfg.loss == "cross-entropy" and not cfg.label_smoothing and cfg.class_weights is None
