"""One child process of benchmarks/search_peers.py; each phase runs alone so its peak RSS is its own.

    encode WORKDIR CKPT            (ours) all Vaswani passages and the 93 queries -> WORKDIR/embs.pt
    build-ours WORKDIR CKPT        (ours) PLAID index from embs.pt (the Indexer, its encoder replaced)
    build-fp WORKDIR               (fast-plaid venv) fast-plaid index from embs.pt
    serve-ours WORKDIR CKPT / serve-fp WORKDIR   persistent search worker; stdin "round" answers the
                                   93 queries once and prints per-query timings; "quit" ends it.
One JSON object per stdout line.
"""

import json
import os
import resource
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani")
NBITS, DOC_MAXLEN, K = 2, 256, 100
# fast-plaid's counterparts of upstream's k=100 settings (ncells 2, ndocs 1024); it has no centroid
# score threshold. Its own defaults are timed as a second row.
FP_SETTINGS = {"matched": {"n_ivf_probe": 2, "n_full_scores": 1024},
               "defaults": {"n_ivf_probe": 8, "n_full_scores": 4096}}


def emit(obj):
    sys.__stdout__.write(json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]


def load_embs(workdir):
    import torch

    data = torch.load(os.path.join(workdir, "embs.pt"), weights_only=True)
    docs = list(torch.split(data["embs"], data["doclens"]))
    return data, docs


def encode(workdir, ckpt):
    import torch
    from colbert.indexing.collection_encoder import CollectionEncoder
    from colbert.infra.config import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint
    from colbert.utils.io import atomic_torch_save

    config = ColBERTConfig.from_existing(ColBERTConfig.load_from_checkpoint(ckpt),
                                         ColBERTConfig(nbits=NBITS, doc_maxlen=DOC_MAXLEN, encode_mode="exact"))
    model = Checkpoint(ckpt, colbert_config=config)
    passages = [t for _, t in read_tsv(os.path.join(VASWANI, "collection.tsv"))]
    queries = read_tsv(os.path.join(VASWANI, "queries.tsv"))
    t0 = time.perf_counter()
    # The chunk path of an index run: the float16 embeddings the codec compresses. Exact mode (each
    # passage at its own length) is ~5x faster here; both engines then index these same embeddings.
    embs, doclens = CollectionEncoder(config, model).encode_passages(passages, site="chunk0",
                                                                     pids=list(range(len(passages))))
    t1 = time.perf_counter()
    with torch.inference_mode():
        Q = model.queryFromText([q for _, q in queries], to_cpu=True)
    atomic_torch_save({"embs": embs, "doclens": doclens, "Q": Q, "qids": [q for q, _ in queries]},
                      os.path.join(workdir, "embs.pt"))
    emit({"encode_docs_s": t1 - t0, "docs": len(doclens), "embeddings": int(embs.size(0)), "Q": list(Q.shape)})


class PrecomputedEncoder:
    """CollectionEncoder's interface over embeddings encoded earlier (rows by pid)."""

    def __init__(self, embs, doclens):
        import torch

        self.embs, self.doclens = embs, doclens
        self.offsets = [0]
        for d in doclens:
            self.offsets.append(self.offsets[-1] + d)
        self.torch = torch
        self.reuse, self.sample, self.num_sample_embs = None, None, 0

    def enable_reuse(self):
        pass

    def keep_sample_for_reuse(self, pids, doclens, sample_fp16):
        pass

    def encode_passages(self, passages, site="chunk", pids=None, tap_active=False):
        if not passages:
            return None, None
        rows = [self.embs[self.offsets[p]:self.offsets[p + 1]] for p in pids]
        out = self.torch.cat(rows)
        # the sample path hands float32 to setup(), which rounds it to float16 as before
        return (out.float() if site == "sample" else out), [self.doclens[p] for p in pids]


def build_ours(workdir, ckpt, threads):
    import torch

    torch.set_num_threads(threads)
    data, _ = load_embs(workdir)
    import colbert.indexing.collection_indexer as ci
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    base = rss_mb()
    # The smallest seam: index_collection builds its encoder from these two names; everything after
    # the encoder (sampling, k-means, codec, compression, IVF, files) is the unchanged Indexer.
    ci.Checkpoint = lambda *a, **k: None
    ci.CollectionEncoder = lambda config, checkpoint, progress=None: PrecomputedEncoder(data["embs"], data["doclens"])
    t0 = time.perf_counter()
    with Run().context(RunConfig(nranks=1, root=workdir, experiment="peers")):
        path = Indexer(ckpt, ColBERTConfig(nbits=NBITS, doc_maxlen=DOC_MAXLEN), verbose=0).index(
            "vaswani.ours", os.path.join(VASWANI, "collection.tsv"), overwrite=True)
    t1 = time.perf_counter()
    with open(os.path.join(path, "metadata.json")) as f:
        meta = json.load(f)
    emit({"build_s": t1 - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base, "index": path,
          "partitions": meta["num_partitions"], "embeddings": meta["num_embeddings"]})


def build_fp(workdir, threads):
    import torch

    torch.set_num_threads(threads)
    _, docs = load_embs(workdir)
    from fast_plaid import search

    base = rss_mb()
    path = os.path.join(workdir, "fast-plaid-index")
    t0 = time.perf_counter()
    fp = search.FastPlaid(index=path, device="cpu")
    fp.create(documents_embeddings=docs, nbits=NBITS, kmeans_niters=4)
    t1 = time.perf_counter()
    with open(os.path.join(path, "metadata.json")) as f:
        meta = json.load(f)
    emit({"build_s": t1 - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base, "index": path,
          "partitions": meta.get("num_partitions"), "embeddings": meta.get("num_embeddings")})


def serve(side, workdir, ckpt, threads):
    import torch

    torch.set_num_threads(threads)
    data, _ = load_embs(workdir)
    Q, qids = data["Q"], data["qids"]
    texts = dict(read_tsv(os.path.join(VASWANI, "queries.tsv")))
    base = rss_mb()
    if side == "ours":
        from colbert import Searcher

        searcher = Searcher(index=os.path.join(workdir, "peers", "indexes", "vaswani.ours"), checkpoint=ckpt, verbose=0)
        configs = {"upstream k=100 (ncells 2, thr 0.45, ndocs 1024)": None}

        def rank(i, _):
            return searcher.dense_search(Q[i:i + 1], K)[0]

        def e2e(i):
            return searcher.dense_search(searcher.encode(texts[qids[i]]), K)[0]
    else:
        from fast_plaid import search

        fp = search.FastPlaid(index=os.path.join(workdir, "fast-plaid-index"), device="cpu")
        configs = FP_SETTINGS

        def rank(i, cfg):
            res = fp.search(Q[i:i + 1], top_k=K, show_progress=False, n_processes=1, **FP_SETTINGS[cfg])
            return [int(p) for p, _ in res[0]]
        e2e = None

    def one_round():
        out = {}
        for cfg in configs:
            lat, pids = [], []
            for i in range(len(qids)):
                t0 = time.perf_counter()
                found = rank(i, cfg)
                lat.append(time.perf_counter() - t0)
                pids.append(list(found))
            out[cfg] = {"rank_s": lat, "pids": pids}
        if e2e is not None:
            lat = []
            for i in range(len(qids)):
                t0 = time.perf_counter()
                e2e(i)
                lat.append(time.perf_counter() - t0)
            out["e2e"] = {"total_s": lat}
        return out

    one_round()  # warm-up
    emit({"ready": True, "rss_loaded_mb": rss_mb(), "rss_before_mb": base, "torch": torch.__version__,
          "threads": torch.get_num_threads(), "qids": qids})
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        emit({"round": one_round(), "peak_rss_mb": peak_rss_mb()})


def main():
    mode, workdir = sys.argv[1], sys.argv[2]
    sys.stdout = sys.stderr
    threads = int(os.environ.get("PEERS_THREADS", "1"))
    if mode == "encode":
        encode(workdir, sys.argv[3])
    elif mode == "build-ours":
        build_ours(workdir, sys.argv[3], threads)
    elif mode == "build-fp":
        build_fp(workdir, threads)
    elif mode == "serve-ours":
        serve("ours", workdir, sys.argv[3], threads)
    elif mode == "serve-fp":
        serve("fp", workdir, None, threads)
    else:
        raise SystemExit(f"search_peers_worker: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
