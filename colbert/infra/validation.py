"""One validation pass over the inputs of an indexing or search run, made before anything is erased,
written or loaded.

Without it a bad value surfaces deep inside the run (`KeyError: 0` for nranks=0, `range() arg 3 must
not be zero` for index_bsize=0, a kernel traceback for ndocs=-5), and for an overwrite only after the
old index was erased. Each check raises one line naming the input, what was expected and what was
got. The checks only read: a valid run computes and writes exactly what it did without them.
"""

from __future__ import annotations

import importlib.util
import numbers
import os

from colbert.utils.env import env_flag


class ConfigError(ValueError):
    """A config field or argument outside the values a run can use."""


# [CLS], [D] and [SEP]: below this a tokenizer cannot truncate and passages go through whole.
MIN_DOC_MAXLEN = 3
# k-means backend -> (module it imports, what to install)
KMEANS_MODULES = {"faiss": ("faiss", "faiss-cpu"), "fastkmeans": ("fastkmeans", "fastkmeans")}


def check_whole(name: str, value, minimum: int, meaning: str) -> int:
    """`value` is an int (not a bool) >= minimum; returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={value!r}: expected a whole number >= {minimum} ({meaning}), "
                          f"got {type(value).__name__}")
    if value < minimum:
        raise ConfigError(f"{name}={value}: expected a whole number >= {minimum} ({meaning})")
    return int(value)


def check_index_name(name) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"index name {name!r}: expected a non-empty str (the index goes to "
                          "<root>/<experiment>/indexes/<name>)")


def check_bsize(bsize) -> None:
    """An encode call's batch size: None or 0 encode the call as one batch (upstream's `if bsize:`)."""
    if bsize is not None and bsize != 0:
        check_whole("bsize", bsize, 1, "texts per encoder batch; 0 or None = one batch")


def check_limit(limit) -> None:
    """The CLI's --limit: 0 (or unset) means every passage; a negative slice would drop passages silently."""
    if limit is not None:
        check_whole("--limit", limit, 0, "passages to index; 0 = all")


def check_projection_dim(dim) -> int:
    """A dim a checkpoint can be made with and indexed at every nbits' packing (dim * nbits bits per
    embedding, packed into bytes)."""
    dim = check_whole("dim", dim, 8, "ColBERT embedding size")
    if dim % 8:
        raise ConfigError(f"dim={dim}: expected a multiple of 8 (the residual codec packs dim * nbits bits "
                          "into bytes)")
    return dim


def check_nbits_dim(nbits, dim: int) -> None:
    if isinstance(nbits, bool) or nbits not in (1, 2, 4, 8) or dim % 8 != 0 or dim % (8 * nbits) != 0:
        raise ConfigError(f"nbits={nbits} with dim={dim}: nbits must be 1, 2, 4 or 8 and dim={dim} must be a "
                          f"multiple of 8 * nbits = {8 * nbits if isinstance(nbits, int) else '?'}")


def check_maxlen(name: str, value: int, hf_config, checkpoint: str) -> None:
    """A tokenised length the encoder has position embeddings for."""
    from colbert.modeling.checkpoint_files import max_positions

    limit = max_positions(hf_config)
    if limit is not None and value > limit:
        raise ConfigError(f"{name}={value} exceeds the encoder's max_position_embeddings={limit} (config.json "
                          f"of checkpoint {checkpoint}); expected {name} <= {limit}")


def check_search_settings(ncells=None, centroid_score_threshold=None, ndocs=None) -> None:
    """PLAID settings; None means "upstream's default for the first k" and is always fine."""
    if ncells is not None:
        check_whole("ncells", ncells, 1, "centroids probed per query token")
    if ndocs is not None:
        check_whole("ndocs", ndocs, 1, "candidate documents kept for exact scoring")
    if centroid_score_threshold is not None and (isinstance(centroid_score_threshold, bool) or
                                                 not isinstance(centroid_score_threshold, numbers.Real)):
        raise ConfigError(f"centroid_score_threshold={centroid_score_threshold!r}: expected a number")


def check_kmeans_backend(config) -> None:
    from colbert.indexing.kmeans import resolve_backend

    backend = resolve_backend(config)
    module, package = KMEANS_MODULES.get(backend, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(f"kmeans_backend={backend!r} needs the {package} package, which is not installed "
                          f"(pip install {package}); or choose another with kmeans_backend= / COLBERT_KMEANS "
                          "(faiss, fastkmeans, torch)")


def check_tap_settings() -> None:
    """COLBERT_TAP*, parsed and checked as the run would (a tap bound with use_tap replaces them)."""
    from colbert.tap.core import active_tap
    from colbert.tap.env import check_env

    if active_tap() is None:
        check_env()


def check_index_run(config, nranks) -> None:
    """Everything an indexing run reads from `config` and the environment, before the index folder is
    touched: numbers, the checkpoint's files (config.json, tokenizer, weight names), dim and nbits,
    the k-means backend and the tap settings."""
    from colbert.modeling.checkpoint_files import check_encoder, find_projection, model_dir
    from colbert.modeling.colbert import resolve_dim

    check_whole("nranks", nranks, 1, "processes to index with")
    check_whole("index_bsize", config.index_bsize, 1, "passages per encoder batch")
    check_whole("doc_maxlen", config.doc_maxlen, MIN_DOC_MAXLEN, "tokens per passage, [CLS] [D] [SEP] included")
    check_whole("kmeans_niters", config.kmeans_niters, 0, "k-means iterations")
    check_whole("pool_factor", config.pool_factor, 1, "1 = no token pooling")
    if config.pool_factor > 1 and importlib.util.find_spec("scipy") is None:
        raise ConfigError(f"pool_factor={config.pool_factor} needs scipy, which is not installed (pip install scipy)")
    check_kmeans_backend(config)
    from colbert.indexing.encode_mode import resolve_encode_mode

    resolve_encode_mode(config, error=ConfigError)
    check_tap_settings()
    # read (again) by collection_indexer.setup, after an overwrite has cleared the folder
    env_flag("COLBERT_ENCODE_ONCE", default=True, error=ConfigError)

    checkpoint = config.checkpoint
    hf_config = check_encoder(checkpoint)
    check_maxlen("doc_maxlen", config.doc_maxlen, hf_config, checkpoint)
    directory = model_dir(checkpoint)
    weight, origin = find_projection(directory)
    dim = resolve_dim(config, weight, directory, origin)  # raises on a dim the projection contradicts
    check_whole("dim", dim, 1, "ColBERT embedding size")
    check_nbits_dim(config.nbits, dim)


def check_search_run(config, checkpoint=None) -> None:
    """What a Searcher reads from its merged config before it loads the model; `checkpoint` (a name
    or path) also gets the checkpoint file checks."""
    from colbert.modeling.checkpoint_files import check_encoder

    check_search_settings(config.ncells, config.centroid_score_threshold, config.ndocs)
    check_whole("query_maxlen", config.query_maxlen, 1, "tokens per query")
    check_tap_settings()
    if checkpoint is not None:
        hf_config = check_encoder(checkpoint)
        check_maxlen("query_maxlen", config.query_maxlen, hf_config, os.fspath(checkpoint))
