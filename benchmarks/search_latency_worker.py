"""One side of benchmarks/search_latency.py. Runs unchanged under colbert-ai 0.2.22 (oracle venv) or
colbert-tap (PYTHONPATH=repo): it only uses the public `from colbert import Searcher` API.

    search_latency_worker.py serve INDEX CHECKPOINT QUERIES_TSV K THREADS
        Builds a Searcher, answers every query once (warm-up: extensions built, caches touched), prints
        {"ready": ...}; then for each stdin line "query I" answers query I (0-based, file order) and
        prints {"encode_s", "rank_s", "total_s", "pids"}; "round" answers all queries in file order and
        prints {"answers": [...]} of those; "quit" ends it. A query is answered as
        Searcher.search() does it, encode(text) then dense_search(Q, k), timed apart: the encoder is
        the same transformers code on both sides, the ranking is where the implementations differ.
    search_latency_worker.py cold INDEX CHECKPOINT QUERIES_TSV K THREADS
        A fresh process's way to its first answer: prints the seconds spent importing, building the
        Searcher (model, index, extensions) and answering the first query.
One JSON object per stdout line; anything the libraries print goes to stderr.
"""

import json
import os
import sys
import time

T_START = time.perf_counter()


def emit(obj):
    sys.__stdout__.write(json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def load_queries(path):
    with open(path, encoding="utf-8") as f:
        return [(line.split("\t", 1)[0], line.rstrip("\n").split("\t", 1)[1]) for line in f if line.strip()]


def main():
    mode, index_path, ckpt, queries_path, k, threads = sys.argv[1:7]
    k, threads = int(k), int(threads)
    sys.stdout = sys.stderr  # library chatter must not break the JSON protocol
    import torch

    torch.set_num_threads(threads)
    from colbert import Searcher  # noqa: E402  (timed: part of a cold start)

    t_import = time.perf_counter()
    queries = load_queries(queries_path)
    searcher = Searcher(index=index_path, checkpoint=ckpt, verbose=0)
    t_searcher = time.perf_counter()

    if mode == "cold":
        searcher.search(queries[0][1], k=k)
        t_first = time.perf_counter()
        try:  # colbert-tap only: where its compiled kernels came from
            from colbert.search.extensions import extension_status

            backend = extension_status()["cpu"]["backend"]
        except ImportError:
            backend = None
        emit({"extensions": backend, "import_s": t_import - T_START, "searcher_s": t_searcher - t_import, "first_query_s": t_first - t_searcher,
              "in_process_s": t_first - T_START, "torch": torch.__version__, "threads": torch.get_num_threads()})
        return

    for _, text in queries:  # warm-up
        searcher.search(text, k=k)
    emit({"ready": True, "queries": len(queries), "searcher_s": t_searcher - t_import, "torch": torch.__version__,
          "threads": torch.get_num_threads()})
    def answer(text):
        t0 = time.perf_counter()
        Q = searcher.encode(text)
        t1 = time.perf_counter()
        pids, _, _ = searcher.dense_search(Q, k)
        t2 = time.perf_counter()
        return {"encode_s": t1 - t0, "rank_s": t2 - t1, "total_s": t2 - t0, "pids": list(pids)}

    for line in sys.stdin:
        command = line.split()
        if command == ["quit"]:
            return
        if command == ["round"]:
            emit({"answers": [answer(text) for _, text in queries]})
        elif len(command) == 2 and command[0] == "query" and command[1].isdigit() and int(command[1]) < len(queries):
            emit(answer(queries[int(command[1])][1]))
        else:
            emit({"error": f"unknown command {line.strip()!r}"})

if __name__ == "__main__":
    main()
