"""``[data]`` and ``[model]``: where the examples come from and which network trains on them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweep.config.common import Arch, Dataset, Seed, _check_factory, _Section


class DataConfig(_Section):
    """``[data]``: which dataset, where it lives, and the holdout split."""

    dataset: Dataset = "mnist-sample"
    data_dir: str | None = None
    # Below 1: a fraction of the training set; 1 or more: a count (10,000 of 60,000 by default).
    holdout: float = Field(default=1 / 6, gt=0)
    # Tune on part of the training set (docs/transfer.md): below 1 a fraction, 1 or more a count; stratified and
    # drawn with split_seed. None (the default) keeps the whole set, as studies made before it read.
    subset: float | None = Field(default=None, gt=0)
    split_seed: Seed = 0
    # A callable returning (x_train, y_train, x_test, y_test) instead of a named dataset (docs/models.md).
    factory: str | None = None
    # A factory's torch Datasets: "auto" loads them into memory unless they are over the memory budget or
    # augment (a random transform), which are read batch by batch; "always" / "never" force it (docs/models.md).
    stream: Literal["auto", "always", "never"] = "auto"

    _factory = field_validator("factory")(_check_factory)

    @field_validator("subset")
    @classmethod
    def _check_subset(cls, v: float | None) -> float | None:
        if v is not None and v >= 1 and v != int(v):
            raise ValueError(f"must be a fraction in (0, 1) or a whole count of examples, got {v:g}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        # Compared with the defaults, not with the keys given: a stored config (JSON) gives every key.
        if self.factory is not None and (self.dataset != "mnist-sample" or self.data_dir is not None):
            raise ValueError("set either data.factory or data.dataset/data_dir, not both")
        if self.factory is None and self.stream != "auto":
            raise ValueError(f"data.stream = {self.stream!r} applies to a data.factory's torch Datasets; the named "
                             "datasets are always loaded: remove data.stream, or set data.factory")
        return self


class ModelConfig(_Section):
    """``[model]``: a built-in network (``arch``; ``hidden`` sizes) or a user's factory (docs/models.md)."""

    arch: Arch = "simplenet"
    # simplenet: the hidden width (784-hidden-10); mlp: a list of widths, one per hidden layer.
    hidden: int | list[int] = 128
    factory: str | None = None  # "package.module:function" returning a fresh torch.nn.Module

    _factory = field_validator("factory")(_check_factory)

    @field_validator("hidden", mode="before")
    @classmethod
    def _check_hidden(cls, v: Any) -> Any:
        widths = v if isinstance(v, list) else [v]
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError("must be a whole number >= 1 or a list of them")
        return v

    @model_validator(mode="after")
    def _check_arch(self) -> ModelConfig:
        # Compared with the defaults, not with the keys given: a stored config (JSON) gives every key.
        if self.factory is not None and (self.arch != "simplenet" or self.hidden != 128):
            raise ValueError("set either model.factory or model.arch/hidden, not both")
        if self.arch == "simplenet" and isinstance(self.hidden, list):
            raise ValueError(f"hidden must be one width for arch 'simplenet', got {self.hidden}; "
                             "for several hidden layers set arch = 'mlp'")
        if self.arch == "cnn" and self.hidden != 128:
            raise ValueError("hidden does not apply to arch 'cnn' (LeNet-5's sizes are fixed); remove it")
        return self
