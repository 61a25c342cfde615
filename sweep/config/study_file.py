"""Study configuration: validated, frozen pydantic models read from TOML study files.

A study file has a top-level ``name`` and four sections::

    name = "quickstart"
    [data]    dataset, data_dir, holdout, split_seed, factory
    [model]   arch, hidden, factory
    [train]   lr, batch_size, epochs, penalty, l1_ratio, decay_bias, optimizer, momentum, nesterov,
              betas, eps, schedule, step_size, gamma, warmup_epochs, clip_grad_norm, device, seed
    [search]  sampler, n_trials, lambda_low, lambda_high, pruner, seed,
              validation, folds, repeats, rule, stop, batch

``--set section.key=value`` overrides go through the same validation.
"""

from __future__ import annotations

import json
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from sweep.config.common import LOSS_TARGETS, METRIC_TARGETS, NAME_MAX, _Section
from sweep.config.search import SearchConfig
from sweep.config.sections import DataConfig, ModelConfig
from sweep.config.train import TrainConfig
from sweep.errors import ConfigError, StudyConflictError


class StudyConfig(_Section):
    """A whole study file, validated and frozen; stored with the study as JSON (``to_json``)."""

    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty or only spaces")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in v):
            raise ValueError("must not contain control characters (newlines, tabs, ...)")
        return v

    @property
    def metric(self) -> str:
        """The metric a lambda is chosen by: ``search.metric``, or the default for ``train.loss``'s targets."""
        if self.search.metric is not None:
            return self.search.metric
        kind = LOSS_TARGETS[self.train.loss]
        return next(m for m, k in METRIC_TARGETS.items() if k == kind)

    @model_validator(mode="after")
    def _check_metric(self) -> StudyConfig:
        kind, needs = LOSS_TARGETS[self.train.loss], METRIC_TARGETS[self.metric]
        if kind != needs:
            fits = ", ".join(m for m, k in METRIC_TARGETS.items() if k == kind)
            words = {"classes": "class labels", "values": "real-valued targets"}
            raise ValueError(f"search.metric = {self.metric!r} scores {words[needs]} but "
                             f"train.loss = {self.train.loss!r} trains on {words[kind]}; "
                             f"choose one of {fits}")
        if kind == "values" and self.data.factory is None:
            raise ValueError(f"train.loss = {self.train.loss!r} needs real-valued targets, and data.dataset = "
                             f"{self.data.dataset!r} holds class labels; name a data.factory (examples/diabetes.py)")
        evidence = self.search.validation == "evidence" or self.search.sampler == "marglik"
        if evidence and (self.train.loss != "cross-entropy" or self.metric != "accuracy"):
            raise ValueError("the Laplace evidence (search.validation = 'evidence', sampler 'marglik') scores a "
                             f"cross-entropy fit by its evidence, got train.loss = {self.train.loss!r} and search.metric "
                             f"= {self.metric!r}; use search.validation = 'holdout' or 'cv'")
        return self

    @model_validator(mode="after")
    def _check_evidence(self) -> StudyConfig:
        # The evidence treats weight decay as a Gaussian prior: only the L2 penalty forms are one.
        evidence = self.search.validation == "evidence" or self.search.sampler == "marglik"
        if evidence and self.train.penalty not in ("l2", "l2-loss"):
            raise ValueError(f"search.validation = 'evidence' and search.sampler = 'marglik' need train.penalty "
                             f"'l2' or 'l2-loss' (a Gaussian prior), got {self.train.penalty!r}")
        if self.search.validation == "evidence" and self.search.batch != 1:
            # A population scores its members on a validation split; an evidence trial has none.
            raise ValueError(f"search.validation = 'evidence' trains its trials one at a time: set search.batch = 1, "
                             f"got {self.search.batch!r}")
        if self.search.sampler == "marglik":
            if self.search.n_trials != 1:
                raise ValueError(f"search.sampler = 'marglik' trains one network: set search.n_trials = 1, "
                                 f"got {self.search.n_trials}")
            if not self.train.decay_bias:
                raise ValueError("search.sampler = 'marglik' tunes one prior over all parameters: "
                                 "set train.decay_bias = true")
            if self.search.batch != 1:
                raise ValueError("search.sampler = 'marglik' trains one network: set search.batch = 1")
            t = self.train
            if (t.optimizer, t.momentum, t.schedule, t.clip_grad_norm) != ("sgd", 0, "constant", None):
                # laplace-torch's marglik_training owns the training loop: plain SGD at train.lr.
                raise ValueError(f"search.sampler = 'marglik' trains with plain SGD at a constant train.lr: set "
                                 f"train.optimizer = 'sgd' without momentum, schedule or clipping, got optimizer "
                                 f"{t.optimizer!r}, momentum {t.momentum}, schedule {t.schedule!r}, "
                                 f"clip_grad_norm {t.clip_grad_norm}")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "study"
    given = first.get("input")
    if first["type"] == "extra_forbidden":
        kind = "section" if isinstance(given, dict) else "key"
        return f"unknown {kind} '{where}'"
    msg = first["msg"].removeprefix("Value error, ")
    if isinstance(given, dict):
        return f"{where}: {msg}"
    return f"{where}: {msg} (given: {given!r})"


def validate(raw: dict[str, Any], *, source: str) -> StudyConfig:
    """Validate a raw mapping; every problem becomes one ConfigError line naming ``source``."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        more = err.error_count() - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {_one_line(err)}{tail}; see the README's study file reference") from None


def _parse_value(text: str) -> Any:
    # A TOML value where it parses (numbers, booleans, quoted strings), else the bare string.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw mapping (copy), before validation."""
    merged = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}; for example --set train.epochs=3")
        parts = key.strip().split(".")
        node = merged
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section; for example --set train.epochs=3")
            node = child
        node[parts[-1]] = _parse_value(value.strip())
    return merged


def read_raw(path: str | Path) -> dict[str, Any]:
    """The TOML mapping of a study file, before overrides and validation."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the TOML
    except FileNotFoundError:
        raise ConfigError(
            f"study file {str(p)!r} not found; give the path of a .toml file, e.g. studies/quickstart.toml"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read study file {str(p)!r}: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: malformed TOML: {err}; fix the file's syntax") from None


def load(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override and validate a study file."""
    raw = apply_overrides(read_raw(path), overrides or [])
    return validate(raw, source=str(path))


def from_json(text: str) -> StudyConfig:
    """A config from the JSON ``StudyConfig.to_json`` wrote (pydantic validates it again)."""
    return StudyConfig.model_validate_json(text)


def stored_config(study_attrs: Mapping[str, Any]) -> StudyConfig | None:
    """The config a study was created with (its ``config`` attribute), or None for a study lambda-sweep did not make.

    The one reader of the stored config: the run loop, workers, ``sweep best`` and reports all use it.
    A stored config this version cannot read raises ConfigError.
    """
    text = study_attrs.get("config")
    if not isinstance(text, str):
        return None
    try:
        return from_json(text)
    except ValidationError as err:
        raise ConfigError(f"the stored study config cannot be read by this version ({_one_line(err)}); "
                          "use the lambda-sweep version that made the study, or run it again under a new name") from None


def require_config(study_attrs: Mapping[str, Any], name: str, *, fix: str, where: str | None = None) -> StudyConfig:
    """The stored config of study ``name``, for a caller that cannot go on without one (refit, evidence, workers).

    The one check for "not a lambda-sweep study": a StudyConflictError saying so, ``where`` the study is
    (a masked store URL) when that helps, and ``fix``, what the caller's user can do instead.
    """
    cfg = stored_config(study_attrs)
    if cfg is None:
        place = f" in {where}" if where else ""
        raise StudyConflictError(f"study {name!r}{place} was not made by lambda-sweep; {fix}")
    return cfg


def diff(a: StudyConfig, b: StudyConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(a.model_dump()), flat(b.model_dump())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
