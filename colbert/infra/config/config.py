from __future__ import annotations

from dataclasses import dataclass

from colbert.infra.config.base_config import BaseConfig
from colbert.infra.config.settings import (DocSettings, IndexingSettings, QuerySettings, ResourceSettings,
                                           RunSettings, SearchSettings, TokenizerSettings, TrainingSettings)


@dataclass
class RunConfig(BaseConfig, RunSettings):
    pass


@dataclass
class ColBERTConfig(RunSettings, ResourceSettings, DocSettings, QuerySettings, TrainingSettings,
                    IndexingSettings, SearchSettings, BaseConfig, TokenizerSettings):
    pass
