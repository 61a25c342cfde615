"""The Laplace evidence of a lambda, and a one-run search of lambda by marginal likelihood (laplace-torch).

Training with ``weight_decay = lam`` on the *mean* loss over N examples is MAP
estimation under a Gaussian prior on the weights with precision ``delta = N * lam``
(the gradient of the mean loss plus ``(lam/2)*||w||^2`` is the gradient of the
negative log joint divided by N). The Laplace approximation of the marginal
likelihood (MacKay; Immer et al., ICML 2021) then scores a lambda on the whole
training set, with no validation split:

    log p(D | delta) ~= log p(D | w*) - 1/2 w*' P0 w* - 1/2 (log det(H + P0) - log det P0),   P0 = delta I

(the 2pi terms of prior and posterior cancel), where H is a Kronecker-factored generalised Gauss-Newton over all layers
(laplace-torch's ``hessian_structure="kron"``, ``subset_of_weights="all"``).

``decay_bias = false``: only tensors with ``p.dim() >= 2`` are decayed; the others
(biases, norm scales) carry no lambda-dependent prior and get a fixed vague precision
``BIAS_PRECISION`` instead, the same for
every lambda, so evidence differences between lambdas come from the decayed weights.

laplace-torch is an optional extra (``pip install -e '.[evidence]'``): ``require()``
turns its absence into one line. Nothing here imports Optuna.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sweep.errors import ConfigError, TrainingDivergedError
from sweep.training import stream
from sweep.training.fit import decayed

BIAS_PRECISION = 1e-2  # fixed prior precision of parameters that are not decayed (decay_bias = false)
HESSIAN = "kron"  # Kronecker-factored GGN over all layers: what laplace-torch recommends for its marglik
EVAL_BATCH = 1024


def require() -> None:
    """Raise one ConfigError line if the optional extra (laplace-torch) is not installed."""
    try:
        with warnings.catch_warnings():  # its dependencies call torch.jit.script, deprecated in recent PyTorch
            warnings.simplefilter("ignore", FutureWarning)
            import laplace  # noqa: F401
    except ImportError:
        raise ConfigError(
            "search.validation = 'evidence' and search.sampler = 'marglik' need the optional extra laplace-torch; "
            "install it with: pip install -e '.[evidence]'"
        ) from None


def prior_precision(model: nn.Module, *, lam: float, n: int, decay_bias: bool) -> torch.Tensor:
    """Per-parameter-tensor prior precision: ``n * lam`` for decayed tensors, ``BIAS_PRECISION`` otherwise."""
    # Decayed as the trainer groups parameters (``fit.decayed``), so the prior is the penalty trained with.
    values = [n * lam if decayed(p, decay_bias) else BIAS_PRECISION for p in model.parameters() if p.requires_grad]
    p = next(model.parameters())
    return torch.tensor(values, dtype=p.dtype, device=p.device)


def fit_laplace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, structure: str = HESSIAN):  # noqa: ANN201
    """laplace-torch's Laplace approximation of ``model`` at its current weights, fitted on (x, y)."""
    require()
    from laplace import Laplace

    with warnings.catch_warnings():  # backpack/asdl register backward hooks that PyTorch warns about
        warnings.simplefilter("ignore", FutureWarning)
        la = Laplace(model, "classification", subset_of_weights="all", hessian_structure=structure)
        la.fit(stream.loader(x, y, EVAL_BATCH))
    return la


def log_evidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lam: float, decay_bias: bool,
                 structure: str = HESSIAN) -> float:
    """Laplace log marginal likelihood (nats) of the trained ``model`` on (x, y) under the prior of ``lam``."""
    la = fit_laplace(model, x, y, structure=structure)
    delta = prior_precision(model, lam=lam, n=int(y.shape[0]), decay_bias=decay_bias)
    with torch.no_grad():
        return float(la.log_marginal_likelihood(prior_precision=delta))


@dataclass(frozen=True)
class MarglikEpoch:
    """One epoch of the one-run search: the lambda it ends with and the log evidence there."""

    epoch: int
    lam: float
    log_evidence: float
    train_loss: float


@dataclass
class MarglikResult:
    lam: float  # the final lambda, clamped into the study's range
    unclamped: float  # what the marginal likelihood asked for
    trajectory: list[MarglikEpoch] = field(default_factory=list)
    model: nn.Module | None = None


def marglik_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, batch_size: int, epochs: int,
                   lam_init: float, lam_range: tuple[float, float], seed: int,
                   on_epoch: Callable[[MarglikEpoch], None] | None = None) -> MarglikResult:
    """Train ``model`` once with SGD while tuning one prior precision online (laplace-torch's ``marglik_training``).

    ``marglik_training`` runs one epoch per call here, so each epoch's lambda is
    known (its list of log evidences is per hyper-step, not per epoch); the prior
    precision carries over from call to call and SGD (no momentum) has no state
    to lose. The hyper-optimiser's Adam moments restart each epoch, a small
    departure from one long call. The result is ``delta / N``, clamped into
    ``lam_range``.
    """
    require()
    from laplace import marglik_training

    n = int(y.shape[0])
    delta = n * lam_init
    trajectory: list[MarglikEpoch] = []
    loader = stream.loader(x, y, batch_size, seed=seed)
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():  # backpack/asdl register backward hooks that PyTorch warns about
            warnings.simplefilter("ignore", FutureWarning)
            la, model, margliks, losses = marglik_training(
                model, loader, likelihood="classification", hessian_structure=HESSIAN, optimizer_cls=torch.optim.SGD,
                optimizer_kwargs={"lr": lr}, n_epochs=1, prior_structure="scalar", prior_prec_init=delta,
            )
        delta = float(la.prior_precision.reshape(-1)[0])
        if not math.isfinite(delta) or delta <= 0:
            raise TrainingDivergedError(f"the marginal likelihood search diverged at epoch {epoch} (prior precision {delta}); "
                              "lower train.lr or use search.validation = 'holdout'")
        step = MarglikEpoch(epoch, delta / n, -float(margliks[-1]), float(losses[-1]))
        trajectory.append(step)
        if on_epoch is not None:
            on_epoch(step)
    low, high = lam_range
    return MarglikResult(min(max(delta / n, low), high), delta / n, trajectory, model)
