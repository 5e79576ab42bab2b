"""Indexes the first N Vaswani passages with one of the parity configs; runs unchanged under
colbert-ai 0.2.22 (oracle venv) or colbert-tap (PYTHONPATH=repo), as a user's script would.
Usage: index_script.py CHECKPOINT COLLECTION_TSV N ROOT CONFIG_NAME"""

import json
import sys
import time

CONFIGS = {  # name -> ColBERTConfig keywords (benchmarks/ reuse them)
    "A": dict(doc_maxlen=256, nbits=4, dim=96, kmeans_niters=20, index_bsize=32, bsize=64),
    "B": dict(nbits=2),
}


def main():
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    ckpt, tsv, n, root, which = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    with open(tsv, encoding="utf-8") as f:
        passages = [line.rstrip("\n").split("\t")[1] for _, line in zip(range(n), f)]
    t0 = time.perf_counter()
    with Run().context(RunConfig(nranks=1, experiment="parity", root=root)):
        config = ColBERTConfig(checkpoint=ckpt, **CONFIGS[which])
        path = Indexer(checkpoint=ckpt, config=config).index(name=f"parity.{which}", collection=passages,
                                                             overwrite=True)
    import colbert
    import torch

    print(json.dumps({"index_path": path, "seconds": time.perf_counter() - t0, "colbert": colbert.__file__,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
