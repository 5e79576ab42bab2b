"""colbert-tap: an instrumented, drop-in re-implementation of ColBERT (colbert-ai 0.2.22)."""

__version__ = "0.1.0"

# the `colbert` logger's default handler: upstream's `[time] #>` lines on stdout (colbert/utils/logs.py)
from colbert.utils import logs as _logs  # noqa: E402,F401


def __getattr__(name):
    # Lazy, so that `import colbert` (e.g. for the CLI's --help) does not import torch/transformers.
    if name == "Indexer":
        from colbert.indexer import Indexer

        return Indexer
    if name == "Checkpoint":
        from colbert.modeling.checkpoint import Checkpoint

        return Checkpoint
    if name == "Searcher":
        from colbert.searcher import Searcher

        return Searcher
    raise AttributeError(f"module 'colbert' has no attribute {name!r}")


__all__ = ["Indexer", "Checkpoint", "Searcher", "__version__"]
