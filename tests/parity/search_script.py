"""Searches an index with the 93 Vaswani queries; runs unchanged under colbert-ai 0.2.22 (oracle venv)
or colbert-tap (PYTHONPATH=repo), as a user's script would. A fresh Searcher per k, because the first
search's k fixes ncells/threshold/ndocs for the Searcher's life.
Usage: search_script.py INDEX_PATH CHECKPOINT QUERIES_TSV OUT_JSON K [K ...]
Writes {"<k>": {"<qid>": [[pid, rank, score], ...]}, "seconds": {...}} to OUT_JSON."""

import json
import sys
import time


def main():
    from colbert import Searcher

    index_path, ckpt, queries, out = sys.argv[1:5]
    ks = [int(k) for k in sys.argv[5:]]
    with open(queries, encoding="utf-8") as f:
        qs = {int(line.split("\t")[0]): line.rstrip("\n").split("\t")[1] for line in f if line.strip()}
    result, seconds = {}, {}
    for k in ks:
        t0 = time.perf_counter()
        searcher = Searcher(index=index_path, checkpoint=ckpt, verbose=0)
        ranking = searcher.search_all(qs, k=k)
        seconds[str(k)] = time.perf_counter() - t0
        result[str(k)] = {str(qid): [list(item) for item in items] for qid, items in ranking.data.items()}
    with open(out, "w") as f:
        json.dump({"rankings": result, "seconds": seconds}, f)
    print(json.dumps({"out": out, "seconds": seconds}))


if __name__ == "__main__":
    main()
