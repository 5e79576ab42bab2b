"""A colbert-ai user's indexing script, unchanged: it runs under colbert-ai 0.2.22 or colbert-tap.

    python examples/index.py                      # index the first 1,000 shipped Vaswani passages
    COLBERT_TAP=save python examples/index.py     # also save every intermediate artifact
    COLBERT_TAP=swap:/path/to/tap python examples/index.py

Environment: CKPT (default: make the MiniLM checkpoint under ./colbert-tap-demo), N (passages),
ROOT (experiments root, default ./experiments).
"""

import os

from colbert import Indexer
from colbert.infra import ColBERTConfig, Run, RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))
TSV = os.path.join(HERE, "..", "colbert", "data", "vaswani", "collection.tsv")


def checkpoint() -> str:
    ckpt = os.environ.get("CKPT")
    if ckpt:
        return ckpt
    from colbert.modeling.make_checkpoint import make_checkpoint

    ckpt = os.path.abspath(os.path.join("colbert-tap-demo", "checkpoint"))
    if not os.path.exists(os.path.join(ckpt, "artifact.metadata")):
        make_checkpoint("minilm", ckpt, dim=96, seed=12345, overwrite=True)
    return ckpt


if __name__ == "__main__":
    CKPT = checkpoint()
    n = int(os.environ.get("N", "1000"))
    with open(TSV, encoding="utf-8") as f:
        passages = [line.rstrip("\n").split("\t")[1] for _, line in zip(range(n), f)]
    with Run().context(RunConfig(nranks=1, experiment="demo", root=os.environ.get("ROOT", "experiments"))):
        config = ColBERTConfig(doc_maxlen=256, nbits=4, dim=96, kmeans_niters=20, index_bsize=32, bsize=64,
                               checkpoint=CKPT)
        path = Indexer(checkpoint=CKPT, config=config).index(name="demo.nbits=4", collection=passages,
                                                             overwrite=True)
    print(path)
