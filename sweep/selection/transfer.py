"""Carrying a tuned lambda to another run: the published scaling rules as one registry (docs/transfer.md).

A study answers "which lambda is best for this run" (its training-set size, batch size, learning rate,
epochs). The run a user pulls the lambda into is often bigger or different; each rule here says how
lambda should move when the run changes:

- ``reuse``: the tuned lambda unchanged (what most people do);
- ``tau-epoch``: keep ``tau_epoch = batch_size / (lr * lambda * n_train)`` fixed, the averaging timescale of
  decay in epochs (Wang & Aitchison, ICML 2025), so lambda scales as ``batch_size / (lr * n_train)``;
- ``normalized``: Loshchilov & Hutter's normalized weight decay, lambda scales as
  ``sqrt(batch_size / (n_train * epochs))``.

Plain numbers in and out: no torch, no Optuna. ``DEFAULT_RULE`` is chosen from the measurement
(``benchmarks/transfer.py``, table in docs/transfer.md), not from the papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sweep.errors import ConfigError

# Chosen from the measured tables in docs/transfer.md (benchmarks/transfer.py), not from the papers: carried from
# 10% to all of Fashion-MNIST, tau-epoch landed 0.01 points from the reference optimum where the network underfits
# (reuse 0.21) and 0.05 where lambda matters (reuse 0.22); for a 4x batch size or half the lr at one size, reuse
# did as well or better in both.
DEFAULT_RULE = "tau-epoch"


@dataclass(frozen=True)
class Run:
    """What a transfer rule reads of a training run."""

    n_train: int  # examples the model is trained on
    epochs: int
    batch_size: int
    lr: float


KEYS = tuple(f.name for f in fields(Run))


def tau_epoch(lam: float, run: Run) -> float:
    """The decay's averaging timescale in epochs, ``batch_size / (lr * lambda * n_train)`` (inf for lambda 0)."""
    if lam <= 0:
        return math.inf
    return run.batch_size / (run.lr * lam * run.n_train)


@dataclass(frozen=True)
class TransferRule:
    """One registry entry: the factor lambda is multiplied by to go from run ``src`` to run ``dst``."""

    name: str
    factor: Callable[[Run, Run], float]
    summary: str


def _tau_epoch_factor(src: Run, dst: Run) -> float:
    return (dst.batch_size / (dst.lr * dst.n_train)) / (src.batch_size / (src.lr * src.n_train))


def _normalized_factor(src: Run, dst: Run) -> float:
    return math.sqrt((dst.batch_size / (dst.n_train * dst.epochs)) / (src.batch_size / (src.n_train * src.epochs)))


REGISTRY: dict[str, TransferRule] = {r.name: r for r in (
    TransferRule("reuse", lambda src, dst: 1.0, "the tuned lambda unchanged"),
    TransferRule("tau-epoch", _tau_epoch_factor, "keep tau_epoch = batch_size / (lr * lambda * n_train) fixed"),
    TransferRule("normalized", _normalized_factor, "lambda scales as sqrt(batch_size / (n_train * epochs))"),
)}


def parse_for(text: str) -> dict[str, float]:
    """``"n_train=60000,epochs=20"`` as a dict; an unknown key, a repeated key or a bad value is one ConfigError line."""
    out: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in KEYS:
            raise ConfigError(f"--for takes KEY=VALUE pairs with keys {', '.join(KEYS)}, got {part!r}; "
                              "e.g. --for n_train=60000,epochs=20")
        if key in out:
            raise ConfigError(f"--for gives {key} twice ({text!r}); give each key once")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"--for {key} must be a number, got {value!r}; e.g. {key}=100") from None
    if not out:
        raise ConfigError(f"--for needs at least one KEY=VALUE pair with keys {', '.join(KEYS)}, got {text!r}")
    return out


def target_run(src: Run, changes: Mapping[str, float]) -> Run:
    """``src`` with ``changes`` applied (keys of ``Run``); counts must be whole and every value positive."""
    unknown = sorted(set(changes) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown run key(s) {', '.join(unknown)}; the keys are {', '.join(KEYS)}")
    values: dict[str, float | int] = {}
    for key, value in changes.items():
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{key} must be a positive number, got {value!r}; e.g. {key}=100")
        if key != "lr":
            if value != int(value):
                raise ConfigError(f"{key} must be a whole number, got {value!r}; e.g. {key}={max(1, round(value))}")
            value = int(value)
        values[key] = value
    return replace(src, **values)  # type: ignore[arg-type]  # checked above: lr a float, the rest whole numbers


def transfer(lam: float, src: Run, dst: Run) -> dict[str, float]:
    """The lambda for run ``dst`` under every rule, given ``lam`` tuned for run ``src``."""
    return {name: lam * rule.factor(src, dst) for name, rule in REGISTRY.items()}


@dataclass(frozen=True)
class Transferred:
    """A tuned lambda (and its plausible range) carried from run ``src`` to run ``dst`` by every rule."""

    src: Run
    dst: Run
    lam: float  # the tuned lambda, for src
    lambdas: dict[str, float]  # rule name -> the lambda for dst
    ranges: dict[str, tuple[float | None, float | None]]  # rule name -> the plausible range, moved by the same factor
    default: str = DEFAULT_RULE

    @classmethod
    def of(cls, lam: float, plausible: tuple[float | None, float | None], src: Run, dst: Run) -> Transferred:
        factors = {name: rule.factor(src, dst) for name, rule in REGISTRY.items()}
        ranges = {name: tuple(None if v is None else v * f for v in plausible) for name, f in factors.items()}
        return cls(src, dst, lam, {name: lam * f for name, f in factors.items()}, ranges)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        """The ``for`` part of ``sweep best --for --format json``: the runs, each rule's lambda and range, the default."""
        return {"for": asdict(self.dst), "from": asdict(self.src), "default_transfer": self.default,
                "lambda_for": self.lambdas[self.default],
                "transfer": {name: {"lambda": self.lambdas[name], "plausible_low": self.ranges[name][0],
                                    "plausible_high": self.ranges[name][1],
                                    "tau_epoch": tau_epoch(self.lambdas[name], self.dst)} for name in REGISTRY}}
