"""Which factories a worker may import: the store is data, not code.

A study may name a model or data factory (``package.module:function``), and a worker imports and calls
it. Whoever can write to the store could otherwise make every worker run any importable function
(``data.factory = "os:abort"``). So a worker imports only factories under the prefixes it was told to
trust: ``sweep worker --trust PREFIX`` (repeatable; a module or package name, or a whole
``module:function`` path) and ``SWEEP_TRUSTED_FACTORIES`` (module or package names separated by commas or
colons). A module name trusts that module, its submodules and their functions. ``sweep run STUDY.toml``
trusts the factories of its own file. Studies with built-in networks and data name no factory and need no trust.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from sweep.config import StudyConfig
from sweep.errors import UntrustedFactoryError

__all__ = ["ENV", "check_trusted", "factories_of", "trusted_prefixes"]
ENV = "SWEEP_TRUSTED_FACTORIES"


def factories_of(cfg: StudyConfig) -> dict[str, str]:
    """``{key: path}`` for each factory the study names."""
    return {k: v for k, v in (("model.factory", cfg.model.factory), ("data.factory", cfg.data.factory)) if v}


def trusted_prefixes(given: Iterable[str] = ()) -> tuple[str, ...]:
    """The prefixes given (``--trust``) plus those of ``SWEEP_TRUSTED_FACTORIES``."""
    # Module names, PATH style: a colon separates entries here (``--trust`` alone takes a "module:function" path).
    from_env = [p for p in re.split(r"[,:\s]+", os.environ.get(ENV, "")) if p]
    return tuple(dict.fromkeys([*given, *from_env]))


def _covers(prefix: str, path: str) -> bool:
    prefix = prefix.rstrip(".")
    return path == prefix or path.startswith((prefix + ".", prefix + ":"))


def check_trusted(cfg: StudyConfig, trusted: Iterable[str]) -> None:
    """Refuse, in one line, a study naming a factory under none of ``trusted``."""
    prefixes = tuple(trusted)
    for key, path in factories_of(cfg).items():
        if not any(_covers(p, path) for p in prefixes):
            shown = ", ".join(prefixes) or "none"
            raise UntrustedFactoryError(
                f"study {cfg.name!r} names {key} {path!r}, which this worker does not trust (trusted: {shown}); "
                f"if you trust that code, start the worker with --trust {path.split(':')[0].split('.')[0]} "
                f"or set {ENV}")
