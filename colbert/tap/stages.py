"""The one registry of tap stages (indexing and search): names, order, producer, consumers, types.

The ArtifactTap, `colbert-tap compare` and docs/tap.md all read this table; a stage that is not
listed here cannot be tapped. Order is pipeline order (the order in which a single-rank run first
produces each artifact), which is what "first divergence" is measured against.

Scopes decide how an artifact is named on disk (see `artifact_filename`):
  global  one value per run                        -> {stage}.pt
  rank    one value per rank                       -> {stage}.pt, or {stage}.rank{r}.pt if nranks > 1
  chunk   one value per chunk of the collection    -> {stage}_{chunk}.pt
  group   one value per encode group of one call   -> {stage}_{site}_{group}.pt (site: sample | chunk{c})
  layer   one value per encoder layer and batch    -> {stage}_{site}_{group}_b{batch}_l{layer}.pt
  query   one value per query of a search           -> {stage}_q{qid}.pt
Rank-scoped and finer names get a `.rank{r}` suffix when nranks > 1 so ranks never clobber each other.

Each stage belongs to a phase: "index" (written by Indexer runs, into <index>/tap/) or "search"
(written by Searcher calls, into <index>/tap/search/); `stages_of_phase` lists one phase.

Each stage also states what its values must be (bounds, finiteness, power of two, sum, order: the
"value facts" of `Stage`); a swap checks an injected value against them (colbert/tap/validate.py),
and docs/tap.md's value table is generated from them.

Each stage also says how `colbert-tap compare` judges it (`compare`, one of COMPARISONS, with the
`companion` stage it reads beside it) and which index file holds it (`index_file`, a name from
colbert/indexing/index_files.py); compare reads both from here instead of knowing stage names.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from colbert.indexing import index_files as files

# How compare judges a stage's values (colbert/compare/engine.py dispatches on these).
COMPARISONS = {
    "exact": "bit for bit: integers, bools, lists of ints, tuples of int tensors",
    "float": "within each tolerance profile (floats); ints beside them bit for bit",
    "set": "as a set of ids: order and container type do not matter",
    "ivf": "per centroid, the set of ids in its list (order inside a list and padding do not matter); "
           "the companion stage holds the list lengths",
    "codes": "bit for bit, and which passages hold a moved code (companion: the chunk's doclens)",
    "residuals": "bit for bit, and unpacked to nbits buckets per dimension to say how many moved",
    "json": "field by field (index and manifest JSON; no stage is JSON)",
}


@dataclass(frozen=True)
class Stage:
    name: str
    scope: str  # global | rank | chunk | group | layer | query
    kind: str  # tensor | tuple | int | float | list | set
    dtype: str | None  # expected dtype on the CPU path ("float32", "int64", ...); None for non-tensors
    shape: str  # human-readable shape, for docs and error messages
    producer: str  # module.function that produces it (search the code for the stage name)
    consumers: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    elements: tuple[str, ...] = ()  # for tuples: dtype of each tensor element, in order
    # True for values that are observed but never fed back (the pipeline ignores the returned
    # value), so swap leaves them alone: injecting them could not change the run.
    capture_only: bool = False
    phase: str = "index"  # index | search
    # A 1-D result whose length depends on the numerics upstream of it (candidate pid lists): swap
    # accepts another run's value of a different length.
    variable_length: bool = False
    # -- value facts: what a swapped-in value must also satisfy once kind, dtype and shape fit
    # (colbert/tap/validate.py check_values). Bounds are inclusive and apply to every number in the
    # value (tensor elements, list/set/tuple members; bool tensors are exempt). A str names a fact
    # the tap point passes in its ctx, e.g. tap("codes", c, num_partitions=K); "name-1" is one less.
    # A fact the tap point does not pass leaves that bound unchecked.
    low: float | str | None = None
    high: float | str | None = None
    finite: bool = True  # floating-point numbers must be finite (no NaN, no inf)
    power_of_two: bool = False  # an int that is a power of two (1, 2, 4, ...)
    total: str | None = None  # the numbers sum to this fact (e.g. doclens to the embeddings' count)
    order: str | None = None  # "ascending" | "descending" (non-strict) for a 1-D value
    # -- how compare judges it: a key of COMPARISONS; the stage compare reads beside it (ivf list
    # lengths, a chunk's doclens) and what its counts of differing entries count
    compare: str = "exact"
    companion: str | None = None
    unit: str = "elements"
    # -- the index file that holds it (index_files name or per-chunk template; None: tap only), and
    # which element of a tuple file it is (None: the whole file)
    index_file: str | None = None
    index_element: int | None = None
    # -- how `colbert-tap explain` recomputes it from its input stages in another install (the op level
    # for stages the encoder does not produce): "module:function" called with the artifacts named in
    # `recompute_from` (a first parameter named `config` gets the run's ColBERTConfig), and which element
    # of a tuple result is this stage (None: the whole result). None: not recomputable alone.
    recompute: str | None = None
    recompute_from: tuple[str, ...] = ()
    recompute_element: int | None = None


def _search(name, kind, dtype, shape, producer, consumers, description, **kw) -> Stage:
    return Stage(name, "query", kind, dtype, shape, producer, consumers, description, phase="search", **kw)


_SCORER = "colbert.search.index_scorer.IndexScorer"

STAGES: tuple[Stage, ...] = (
    Stage("num_passages", "global", "int", None, "N", "colbert.indexing.collection_indexer.setup",
          ("sample_pids", "num_embeddings_est"), "number of passages in the collection", low=1, high="collection_size"),
    Stage("sample_pids", "global", "set", None, "k = min(1 + int(16*sqrt(120*N)), N)",
          "colbert.indexing.sampling.sample_pids", ("local_sample_embs",),
          "pids drawn with random.sample(range(N), k) after seed 12345", low=0, high="num_passages-1",
          compare="set"),
    Stage("tensorize_output", "group", "tuple", None, "(list[(ids, mask) int64 (<=bsize, W)], reverse_indices int64 (G,))",
          "colbert.modeling.tokenization.doc_tokenization.DocTokenizer.tensorize", ("encoder_layers", "batches"),
          "tokenized, length-sorted encode group", low=0, high="vocab_size-1"),
    Stage("encoder_layers", "layer", "tensor", "float32", "(b, W, hidden) or (b, W, dim) for the projection",
          "colbert.modeling.checkpoint.Checkpoint.docFromText", ("batches",),
          "hidden state of each transformer layer (l0 = embeddings) and the projection (last l)",
          capture_only=True, compare="float"),
    Stage("batches", "group", "list", None, "list[(D_b float32 (b, W, dim), mask_b bool (b, W, 1))]",
          "colbert.modeling.checkpoint.Checkpoint.docFromText", ("D",),
          "per-batch encoder outputs of one encode group", compare="float"),
    Stage("D", "group", "tensor", "float32", "(sum(doclens), dim)",
          "colbert.modeling.checkpoint.Checkpoint.docFromText", ("local_sample_embs", "embs"),
          "flattened embeddings of one encode group, in collection order", compare="float"),
    Stage("local_sample_embs", "rank", "tensor", "float32", "(n_s, dim)",
          "colbert.indexing.sampling.encode_sample", ("avg_doclen_est", "sample", "sample_heldout"),
          "embeddings of this rank's sampled passages", compare="float"),
    Stage("local_sample_doclens", "rank", "list", None, "list[int] (len(local sample))",
          "colbert.indexing.sampling.encode_sample", ("avg_doclen_est",),
          "token counts of this rank's sampled passages", low=0, total="num_embeddings", unit="passages"),
    Stage("avg_doclen_est", "global", "float", None, "float (float32-rounded)",
          "colbert.indexing.plan.estimate_plan", ("num_embeddings_est",), "mean sample doclen", low=1,
          compare="float"),
    Stage("num_embeddings_est", "global", "float", None, "float", "colbert.indexing.plan.estimate_plan",
          ("num_partitions",), "N * avg_doclen_est", low=1, compare="float"),
    Stage("num_partitions", "global", "int", None, "K, a power of two", "colbert.indexing.plan.estimate_plan",
          ("prenorm_centroids",), "number of centroids", low=1, power_of_two=True),
    Stage("sample", "global", "tensor", "float16", "(n_s - h, dim)",
          "colbert.indexing.sampling.split_sample", ("prenorm_centroids",), "k-means training points",
          compare="float"),
    Stage("sample_heldout", "global", "tensor", "float16", "(h, dim), h = int(min(0.05*n_s, 50000))",
          "colbert.indexing.sampling.split_sample", ("bucket_cutoffs", "bucket_weights", "avg_residual"),
          "held-out points for residual statistics", compare="float"),
    Stage("prenorm_centroids", "global", "tensor", "float32", "(K, dim)",
          "colbert.indexing.kmeans.train_kmeans", ("postnorm_centroids",), "raw k-means centroids",
          compare="float"),
    Stage("postnorm_centroids", "global", "tensor", "float32", "(K, dim)",
          "colbert.indexing.kmeans.train_kmeans", ("centroids", "bucket_cutoffs", "bucket_weights", "avg_residual"),
          "L2-normalised centroids (CPU path keeps float32 for the held-out statistics)", compare="float",
          recompute="colbert.indexing.kmeans:normalize_centroids", recompute_from=("prenorm_centroids",)),
    Stage("bucket_cutoffs", "global", "tensor", "float32", "(2**nbits - 1,)",
          "colbert.indexing.codecs.residual_stats.compute_residual_stats", ("residuals",),
          "quantile cut points of held-out residuals", order="ascending", compare="float",
          index_file=files.BUCKETS, index_element=0, recompute="colbert.indexing.codecs.residual_stats:compute_residual_stats", recompute_from=("postnorm_centroids", "sample_heldout"), recompute_element=0),
    Stage("bucket_weights", "global", "tensor", "float32", "(2**nbits,)",
          "colbert.indexing.codecs.residual_stats.compute_residual_stats", (),
          "quantile reconstruction values of held-out residuals", compare="float", index_file=files.BUCKETS,
          index_element=1, recompute="colbert.indexing.codecs.residual_stats:compute_residual_stats", recompute_from=("postnorm_centroids", "sample_heldout"), recompute_element=1),
    Stage("avg_residual", "global", "tensor", "float32", "() 0-dim",
          "colbert.indexing.codecs.residual_stats.compute_residual_stats", (), "mean |residual|", low=0,
          compare="float", index_file=files.AVG_RESIDUAL, recompute="colbert.indexing.codecs.residual_stats:compute_residual_stats", recompute_from=("postnorm_centroids", "sample_heldout"), recompute_element=2),
    Stage("centroids", "global", "tensor", "float16", "(K, dim)",
          "colbert.indexing.codecs.residual_codec.ResidualCodec.save", ("codes", "residuals"),
          f"centroids as saved in {files.CENTROIDS} and used to compress chunks", compare="float",
          index_file=files.CENTROIDS),
    Stage("embs", "chunk", "tensor", "float16", "(E_c, dim)",
          "colbert.indexing.collection_indexer.index_chunks", ("codes", "residuals"),
          "chunk embeddings (CPU path: float32 encoder output rounded to float16)", compare="float"),
    Stage("doclens", "chunk", "list", None, "list[int] (N_c)",
          "colbert.indexing.collection_indexer.index_chunks", ("pid_ivf", "pid_ivf_lengths"),
          "tokens kept per passage", low=0, total="num_embeddings", unit="passages", index_file=files.DOCLENS),
    Stage("codes", "chunk", "tensor", "int32", "(E_c,)",
          "colbert.indexing.collection_indexer.index_chunks", ("presort_codes",),
          "nearest centroid of each embedding", low=0, high="num_partitions-1", compare="codes", companion="doclens",
          index_file=files.CODES),
    Stage("residuals", "chunk", "tensor", "uint8", "(E_c, dim*nbits/8)",
          "colbert.indexing.collection_indexer.index_chunks", (),
          "bucketised residuals, nbits per dimension, packed", compare="residuals", index_file=files.RESIDUALS),
    Stage("presort_codes", "global", "tensor", "int64", "(E,)", "colbert.indexing.ivf.build_ivf",
          ("values", "ivf"), "all codes in embedding order", low=0, high="num_partitions-1", compare="codes"),
    Stage("values", "global", "tensor", "int64", "(E,)", "colbert.indexing.ivf.build_ivf",
          ("ivf_lengths",), "codes sorted ascending", low=0, high="num_partitions-1", order="ascending",
          recompute="colbert.indexing.ivf:sort_codes", recompute_from=("presort_codes",), recompute_element=0),
    Stage("ivf", "global", "tensor", "int64", "(E,)", "colbert.indexing.ivf.build_ivf", ("pid_ivf", "pid_ivf_lengths"),
          "embedding ids grouped by centroid (sort permutation)", low=0, high="num_embeddings-1", compare="ivf",
          companion="ivf_lengths", unit="embedding id", recompute="colbert.indexing.ivf:sort_codes", recompute_from=("presort_codes",), recompute_element=1),
    Stage("ivf_lengths", "global", "tensor", "int64", "(K,)", "colbert.indexing.ivf.build_ivf",
          ("pid_ivf", "pid_ivf_lengths"), "embeddings per centroid", low=0, total="num_embeddings"),
    Stage("pid_ivf", "global", "tensor", "int32", "(sum unique pids per centroid + padding,)",
          "colbert.indexing.ivf.optimize_ivf", (), f"passage ids per centroid, as saved in {files.IVF}",
          low=0, high="num_passages-1", compare="ivf", companion="pid_ivf_lengths", unit="pid", index_file=files.IVF,
          index_element=0),
    Stage("pid_ivf_lengths", "global", "tensor", "int64", "(K,)", "colbert.indexing.ivf.optimize_ivf", (),
          f"passages per centroid, as saved in {files.IVF}", low=0, high="num_passages", index_file=files.IVF,
          index_element=1),
    # -- search (one Searcher query; CPU path dtypes; the GPU path has float16 where noted) --
    _search("Q", "tensor", "float32", "(1, query_maxlen, dim)", "colbert.searcher.Searcher.dense_search",
            ("centroid_scores", "exact_scores"), "query embeddings (the encoder's output for this query)",
            compare="float"),
    _search("centroid_scores", "tensor", "float32", "(K, query_maxlen) (GPU: float16)", f"{_SCORER}.retrieve",
            ("probed_cells", "filtered_pids"), "similarity of every centroid to every query token", compare="float"),
    _search("probed_cells", "tensor", "int64", "(<= ncells * query_maxlen,) sorted unique",
            f"{_SCORER}.retrieve", ("candidate_pids",), "centroids probed: the ncells best per query token",
            variable_length=True, low=0, high="num_partitions-1", order="ascending"),
    _search("candidate_pids", "tensor", "int32", "(P,) sorted unique",
            f"{_SCORER}.rank", ("filtered_pids",),
            "passages in the probed cells' lists (or the pids= given), after filter_fn", variable_length=True,
            low=0, high="num_passages-1"),
    _search("filtered_pids", "tensor", "int32", "(<= ndocs // 4,) best approximate score first",
            f"{_SCORER}.rank", ("decompressed_embs", "exact_scores"),
            "survivors of the two centroid-only pruning passes (filter_pids); absent when pids= is given",
            variable_length=True, low=0, high="num_passages-1"),
    _search("decompressed_embs", "tensor", "float32", "(sum of the survivors' doclens, dim) (GPU: float16)",
            f"{_SCORER}.exact_scores", ("exact_scores",),
            "the survivors' embeddings rebuilt from codes and residuals, L2-normalised", compare="float"),
    _search("exact_scores", "tensor", "float32", "(n,) in filtered_pids order",
            f"{_SCORER}.rank", ("ranked_pids", "ranked_scores"), "MaxSim of Q against each survivor",
            compare="float"),
    _search("ranked_pids", "tensor", "int32", "(n,) best first", f"{_SCORER}.rank", (),
            "the ranking: survivors sorted by exact score (before truncation to k)", low=0,
            high="num_passages-1"),
    _search("ranked_scores", "tensor", "float32", "(n,) descending", f"{_SCORER}.rank", (),
            "exact scores in ranking order (before truncation to k)", order="descending", compare="float"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}
SCOPES = ("global", "rank", "chunk", "group", "layer", "query")
PHASES = ("index", "search")
# The ctx keys that locate an artifact (everything `artifact_filename` takes).
LOCATION_KEYS = ("rank", "nranks", "chunk", "site", "group", "batch", "layer", "qid")
# qids become part of file names: keep them to characters that are safe everywhere
_QID = re.compile(r"[A-Za-z0-9-]+")


def stages_of_phase(phase: str) -> tuple[Stage, ...]:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    return tuple(s for s in STAGES if s.phase == phase)


def get_stage(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown tap stage {name!r}; valid stages: {', '.join(STAGE_NAMES)}") from None


def index_stages() -> tuple[str, ...]:
    """The stages an index folder holds (those with an `index_file`), in pipeline order."""
    return tuple(s.name for s in STAGES if s.index_file is not None)


def stage_index(name: str) -> int:
    return STAGE_NAMES.index(name)


def downstream(name: str) -> set[str]:
    """Every stage reachable from `name` through the consumers graph (not including itself)."""
    seen: set[str] = set()
    todo = list(get_stage(name).consumers)
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(get_stage(s).consumers)
    return seen


def match_stages(patterns: str | list[str]) -> set[str]:
    """Expand comma-separated names or globs (`embs*`); an unmatched pattern is an error."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen: set[str] = set()
    for pat in patterns:
        hits = fnmatch.filter(STAGE_NAMES, pat)
        if not hits:
            raise ValueError(f"unknown tap stage {pat!r}; valid stages: {', '.join(STAGE_NAMES)}")
        chosen.update(hits)
    return chosen


def artifact_filename(stage: str, *, rank: int = 0, nranks: int = 1, chunk: int | None = None,
                      site: str | None = None, group: int | None = None, batch: int | None = None,
                      layer: int | None = None, qid: int | str | None = None) -> str:
    s = get_stage(stage)
    if s.scope == "query":
        if qid is None or not _QID.fullmatch(str(qid)):
            raise ValueError(f"tap stage {stage!r}: qid {qid!r} cannot name a file; qids must be integers or "
                             "strings of letters, digits and '-'")
        return f"{stage}_q{qid}.pt"
    if s.scope == "global":
        base = stage
    elif s.scope == "rank":
        base = stage
    elif s.scope == "chunk":
        base = f"{stage}_{chunk}"
    elif s.scope == "group":
        base = f"{stage}_{site}_{group}"
    else:
        base = f"{stage}_{site}_{group}_b{batch}_l{layer}"
    if nranks > 1 and s.scope != "global" and s.scope != "chunk":
        base += f".rank{rank}"
    return base + ".pt"


def filename_pattern(stage: str, *, multi_rank: bool = False) -> str:
    """The file name of `stage` with its location left as placeholders, for docs and messages."""
    s = get_stage(stage)
    base = {"global": stage, "rank": stage, "chunk": f"{stage}_{{chunk}}",
            "group": f"{stage}_{{site}}_{{group}}",
            "layer": f"{stage}_{{site}}_{{group}}_b{{batch}}_l{{layer}}", "query": f"{stage}_q{{qid}}"}[s.scope]
    if multi_rank and s.scope not in ("global", "chunk", "query"):
        base += ".rank{rank}"
    return base + ".pt"
