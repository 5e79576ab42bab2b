"""The matrix's search job: colbert-ai's public API only (runs under this fork and colbert-ai 0.2.22).

    python search_job.py SPEC.json

SPEC.json: {"index" (index folder), "checkpoint" (null: the index's own), "queries" (qid<TAB>text
TSV), "k", "out" (ranking TSV qid<TAB>pid<TAB>rank<TAB>score, written atomically)}.
"""

import json
import os
import sys
import time


def main(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    from colbert import Searcher

    queries = {}
    with open(spec["queries"], encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 2 and fields[0].strip():
                queries[fields[0].strip()] = " ".join(fields[1:]).strip()
    t0 = time.perf_counter()
    searcher = Searcher(index=spec["index"], checkpoint=spec.get("checkpoint"))
    ranking = searcher.search_all(queries, k=int(spec["k"]))
    lines = []
    for qid, rows in ranking.data.items():
        for row in rows:
            pid, rank, score = row[0], row[1], row[2]
            lines.append(f"{qid}\t{int(pid)}\t{int(rank)}\t{float(score)!r}\n")
    tmp = spec["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, spec["out"])
    print(json.dumps({"queries": len(queries), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
