from colbert.infra.config import ColBERTConfig, RunConfig
from colbert.infra.run import Run

__all__ = ["ColBERTConfig", "RunConfig", "Run"]
