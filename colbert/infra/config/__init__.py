from colbert.infra.config.config import ColBERTConfig, RunConfig
from colbert.infra.config.settings import DefaultVal

__all__ = ["ColBERTConfig", "RunConfig", "DefaultVal"]
