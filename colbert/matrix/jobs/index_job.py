"""The matrix's indexing job: one script, colbert-ai's public API only, so that the very same file runs
under this fork and under colbert-ai 0.2.22.

    python index_job.py SPEC.json

SPEC.json: {"checkpoint", "collection" (pid<TAB>passage TSV), "limit" (0/null: all), "root" (the run
folder; the index goes to ROOT/index), "config" (ColBERTConfig fields), "result" (where to write
{"index_path", "seconds", "torch", "colbert"} when done)}. The tap, if any, comes from COLBERT_TAP*
in the environment (colbert-ai ignores it).
"""

import json
import os
import sys
import time


def main(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    import torch

    import colbert
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    limit = spec.get("limit") or 0
    passages = []
    with open(spec["collection"], encoding="utf-8") as f:
        for line in f:
            if limit and len(passages) == limit:
                break
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 2:
                passages.append(fields[1])
    root = spec["root"]
    t0 = time.perf_counter()
    # avoid_fork_if_possible: one process, so that a crash is an exit status and a traceback here (colbert-ai
    # otherwise spawns a worker and waits forever on it if it dies)
    with Run().context(RunConfig(nranks=1, experiment="matrix", root=root, index_root=root,
                                 avoid_fork_if_possible=True)):
        config = ColBERTConfig(checkpoint=spec["checkpoint"], **spec.get("config", {}))
        path = Indexer(checkpoint=spec["checkpoint"], config=config).index(name="index", collection=passages,
                                                                         overwrite=True)
    result = {"index_path": os.path.abspath(path), "seconds": time.perf_counter() - t0,
              "torch": torch.__version__, "colbert": os.path.dirname(os.path.abspath(colbert.__file__)),
              "passages": len(passages)}
    tmp = spec["result"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, spec["result"])
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
