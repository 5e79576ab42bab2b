"""`Searcher`: upstream's public search API (colbert-ai 0.2.22).

    searcher = Searcher(index="my.index", checkpoint=None, collection=None, config=None, index_root=None)
    pids, ranks, scores = searcher.search("a query", k=10)
    ranking = searcher.search_all({1: "query one", 2: "query two"}, k=100)   # -> Ranking

Index path: `index` joined to `index_root` (argument, else the merged config's `index_root_`, i.e.
`<root>/<experiment>/indexes/` of the current `Run()` context); an absolute `index` is used as is.
Config precedence, lowest first: the checkpoint's artifact.metadata, the index's metadata.json, the
`config` argument, then the `Run()` context (for run settings).

PLAID settings (ncells, centroid_score_threshold, ndocs) left None are filled from the FIRST
search's k and then kept for the Searcher's life, as upstream does: k <= 10 -> (1, 0.5, 256),
k <= 100 -> (2, 0.45, 1024), else (4, 0.4, max(4k, 4096)). Build a fresh Searcher (or set them in
the config) to search with other values.

Documented behaviours: a query longer than `query_maxlen` tokens is truncated (as upstream); an
empty or blank query and k < 1 raise ValueError; asking for more results than the candidates PLAID
keeps (at most the collection size, and at most ndocs // 4) returns fewer, and then `ranks` is as
long as `pids` (upstream pads `ranks` to k; that is the one deliberate difference).

Tap: with COLBERT_TAP set (see docs/tap.md) every search stage of every query is saved or swapped;
a bare `save` writes to `<index_path>/tap/search/`. One `search_all` call is one tap session
(artifacts named by qid); one `search` call is a session of its own whose query is qid 0.
"""

from __future__ import annotations

import logging
import numbers
import os

import torch

from colbert.indexing.collection import Collection
from colbert.infra.config import ColBERTConfig
from colbert.infra.run import Run
from colbert.infra.validation import check_search_run, check_search_settings
from colbert.search.index_loader import load_index, read_index_metadata
from colbert.search.index_scorer import IndexScorer
from colbert.search.queries import Queries
from colbert.search.ranking import Ranking
from colbert.tap import tap
from colbert.utils.logs import progress_level

log = logging.getLogger(__name__)


def plaid_defaults(k: int) -> tuple[int, float, int]:
    """(ncells, centroid_score_threshold, ndocs) that upstream picks for a first search with this k."""
    if k <= 10:
        return 1, 0.5, 256
    if k <= 100:
        return 2, 0.45, 1024
    return 4, 0.4, max(k * 4, 4096)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a whole number >= 1 (results per query); got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (results per query); got {k}")
    return int(k)


def _check_queries(queries: list) -> None:
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(f"query {i}: expected str, got {type(q).__name__}")
        if not q.strip():
            raise ValueError(f"query {i} is empty; a query needs at least one word")


class Searcher:
    """Searches an index with PLAID, returning colbert-ai 0.2.22's rankings.

    Parameters
    ----------
    index
        The index name (joined to `index_root`) or its folder.
    checkpoint
        A checkpoint name or folder, or a `Checkpoint` already loaded; None: the one in the index's
        metadata.json.
    collection
        The passages (a .tsv path or a list), so that results can be mapped back to text.
    config
        A ColBERTConfig (ncells, centroid_score_threshold, ndocs, ...) over the index's settings.
    index_root
        Where `index` lives; default: the `Run()` context's `<root>/<experiment>/indexes/`.
    verbose
        Above 1 "#> Loading index ..." is logged at INFO, else at DEBUG.

    Examples
    --------
    >>> from colbert import Searcher
    >>> searcher = Searcher(index="/path/to/experiments/demo/indexes/demo.2bits")
    >>> pids, ranks, scores = searcher.search("what is a passage?", k=3)
    >>> ranking = searcher.search_all({1: "first query", 2: "second query"}, k=10)
    >>> ranking.todict()[1][:1]  # doctest: +SKIP
    [(0, 1, 21.5)]

    See the module docstring for the PLAID defaults and the documented differences from upstream.
    """

    def __init__(self, index, checkpoint=None, collection=None, config=None, index_root=None, verbose: int = 3):
        from colbert.modeling.checkpoint import Checkpoint

        self.verbose = verbose
        initial_config = ColBERTConfig.from_existing(config, Run().config)
        index_root = index_root or initial_config.index_root_
        self.index = os.path.join(os.fspath(index_root), os.fspath(index))
        self.index_config, _ = read_index_metadata(self.index)

        if isinstance(checkpoint, Checkpoint):  # an encoder already in memory: reuse it
            model, checkpoint = checkpoint, checkpoint.name
        else:
            model = None
        self.checkpoint = checkpoint or self.index_config.checkpoint
        if not self.checkpoint:
            from colbert.indexing.index_files import METADATA

            raise ValueError(f"index {self.index}: {METADATA} names no checkpoint; pass checkpoint=")
        self.checkpoint_config = ColBERTConfig.load_from_checkpoint(self.checkpoint)
        self.config = ColBERTConfig.from_existing(self.checkpoint_config, self.index_config, initial_config)
        # before the model loads: a checkpoint already in memory was checked when it loaded
        check_search_run(self.config, checkpoint=self.checkpoint if model is None else None)

        self.collection = self._cast_collection(collection if collection is not None else self.config.collection,
                                                explicit=collection is not None)
        self.configure(checkpoint=self.checkpoint, collection=self.collection)

        self.use_gpu = self.config.total_visible_gpus > 0
        self.checkpoint = model if model is not None else Checkpoint(self.checkpoint, colbert_config=self.config,
                                                                     verbose=self.verbose)
        if self.use_gpu:
            self.checkpoint = self.checkpoint.cuda()
        log.log(progress_level(self.verbose > 1), "#> Loading index %s", self.index)
        self.ranker = IndexScorer(load_index(self.index, use_gpu=self.use_gpu,
                                             mmap=bool(self.config.load_index_with_mmap)), use_gpu=self.use_gpu)

    @staticmethod
    def _cast_collection(value, explicit: bool):
        if explicit or isinstance(value, Collection):
            return Collection.cast(value)
        # From metadata.json: a .tsv path, a short list stored verbatim, or (for >100 passages) a
        # ["list with N elements starting with...", [...]] summary, which is not the collection.
        if isinstance(value, str) and value.endswith(".tsv") and os.path.isfile(value):
            return Collection.cast(value)
        if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
            return Collection.cast(value)
        return None

    def configure(self, **kw_args):
        self.config.configure(**kw_args)

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, text, full_length_search: bool = False) -> torch.Tensor:
        queries = text if isinstance(text, list) else [text]
        _check_queries(queries)
        bsize = 128 if len(queries) > 128 else None
        self.checkpoint.query_tokenizer.query_maxlen = self.config.query_maxlen
        return self.checkpoint.queryFromText(queries, bsize=bsize, to_cpu=True,
                                             full_length_search=full_length_search)

    # -- search -------------------------------------------------------------------------------
    def search(self, text: str, k: int = 10, filter_fn=None, full_length_search: bool = False, pids=None):
        """-> (pids, ranks, scores): three lists, best first, at most k long."""
        k = _check_k(k)
        if not isinstance(text, str):
            raise TypeError(f"search() takes one query string, got {type(text).__name__}; use search_all() "
                            "for several")
        with self._tap_session(k, "Searcher::search"):
            Q = self.encode(text, full_length_search=full_length_search)
            return self.dense_search(Q, k, filter_fn=filter_fn, pids=pids, qid=0)

    def search_all(self, queries, k: int = 10, filter_fn=None, full_length_search: bool = False,
                   qid_to_pids=None) -> Ranking:
        """queries: {qid: text}, a list (qids 0..n-1) or a qid<TAB>query TSV path -> Ranking."""
        k = _check_k(k)
        queries = Queries.cast(queries)
        qids, texts = list(queries.keys()), list(queries.values())
        _check_queries(texts)
        data = {}
        with self._tap_session(k, "Searcher::search_all"):
            Q = self.encode(texts, full_length_search=full_length_search) if texts else None
            for i, qid in enumerate(qids):
                pids = qid_to_pids[qid] if qid_to_pids is not None else None
                found, ranks, scores = self.dense_search(Q[i:i + 1], k, filter_fn=filter_fn, pids=pids, qid=qid)
                data[qid] = list(zip(found, ranks, scores))
        provenance = {"source": "Searcher::search_all", "queries": queries.provenance(), "k": k,
                      "index": self.index, "config": self.config.export()}
        return Ranking(data=data, provenance=provenance)

    def dense_search(self, Q: torch.Tensor, k: int = 10, filter_fn=None, pids=None, qid=0):
        k = _check_k(k)
        ncells, threshold, ndocs = plaid_defaults(k)
        # Only still-unset values: the first call's k fixes them for this Searcher (upstream).
        if self.config.ncells is None:
            self.configure(ncells=ncells)
        if self.config.centroid_score_threshold is None:
            self.configure(centroid_score_threshold=threshold)
        if self.config.ndocs is None:
            self.configure(ndocs=ndocs)
        # configure() may have set them since __init__; the kernels would fail on them mid-search
        check_search_settings(self.config.ncells, self.config.centroid_score_threshold, self.config.ndocs)
        ctx = {"qid": qid}
        Q = tap("Q", Q, **ctx)
        found, scores = self.ranker.rank(self.config, Q, filter_fn=filter_fn, pids=pids, tap_ctx=ctx)
        found, scores = found[:k], scores[:k]
        return found, list(range(1, len(found) + 1)), scores

    def _tap_session(self, k: int, source: str):
        from colbert.tap.session import tap_session

        def config():
            exported = self.config.export()
            exported["k"] = k
            return exported

        return tap_session(config_dict=config, index_path=self.index, phase="search", source=source)
