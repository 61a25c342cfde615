"""Study configuration: validated, frozen pydantic models read from TOML study files.

One module per section a user writes (``sections``: ``[data]`` and ``[model]``; ``train``;
``search``), the whole file and its readers in ``study_file``, shared pieces in ``common``.
Callers import from ``sweep.config``.
"""

from sweep.config.common import DEVICE, FACTORY_PATH, GRID_MAX, NAME_MAX, PARAM, SEED_MAX
from sweep.config.search import SearchConfig
from sweep.config.sections import DataConfig, ModelConfig
from sweep.config.study_file import (
    StudyConfig,
    apply_overrides,
    diff,
    from_json,
    load,
    read_raw,
    require_config,
    stored_config,
    validate,
)
from sweep.config.train import TrainConfig

__all__ = [
    "DEVICE", "FACTORY_PATH", "GRID_MAX", "NAME_MAX", "PARAM", "SEED_MAX", "DataConfig", "ModelConfig", "SearchConfig",
    "StudyConfig", "TrainConfig", "apply_overrides", "diff", "from_json", "load", "read_raw", "require_config",
    "stored_config", "validate",
]
