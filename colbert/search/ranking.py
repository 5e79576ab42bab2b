"""`Ranking`: the result of Searcher.search_all, {qid: [(pid, rank, score), ...]}, and its TSV file.

File format (as colbert-ai writes it): one line per result, `qid<TAB>pid<TAB>rank<TAB>score`, queries
in search order, results best first; plus `<file>.meta`, JSON with "metadata" (host, time, command)
and "provenance" (what produced the ranking). colbert.evaluation.files reads and writes the TSV (one
reader and writer for every ranking file); here qids and pids are ints, as in colbert-ai.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import OrderedDict

import ujson

from colbert.evaluation.files import load_ranking, write_ranking
from colbert.utils.io import atomic_write_text


class Ranking:
    def __init__(self, path: str | None = None, data: dict | None = None, metrics=None, provenance=None):
        if (path is None) == (data is None):
            raise ValueError("Ranking: give exactly one of path= (a ranking TSV) or data= ({qid: [(pid, rank, "
                             "score), ...]})")
        self.path = path
        self._provenance = provenance
        self.metrics = metrics
        self.data = self._load(path) if path is not None else self._prepare(data)

    def provenance(self):
        return self._provenance if self._provenance is not None else self.path

    def toDict(self):
        return {"provenance": self.provenance()}

    @staticmethod
    def _prepare(data) -> "OrderedDict":
        out = OrderedDict()
        for qid, items in data.items():
            out[qid] = [tuple(item) for item in items]
        return out

    @staticmethod
    def _load(path: str) -> "OrderedDict":
        # the one ranking reader; a file without scores gives (pid, rank) entries, as upstream's loader does
        data = load_ranking(path, integer_ids=True)
        return OrderedDict((qid, [e[:2] if e[2] is None else e for e in entries]) for qid, entries in data.items())

    def todict(self) -> dict:
        return dict(self.data)

    def tolist(self) -> list:
        """Every (qid, pid, rank, score) tuple, queries in order, results best first."""
        return [(qid, *item) for qid, items in self.data.items() for item in items]

    def flat(self) -> list:
        return self.tolist()

    @property
    def flat_ranking(self) -> list:
        return self.tolist()

    def items(self):
        return self.data.items()

    def __iter__(self):
        return iter(self.data.items())

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, qid):
        return self.data[qid]

    def save(self, path: str) -> str:
        """Writes the TSV and `<path>.meta`, each atomically; returns the TSV's path.

        A relative path is resolved under the current `Run().path_` (as upstream does), an absolute
        one is used as is."""
        if not os.path.isabs(path):
            from colbert.infra.run import Run

            path = os.path.join(Run().path_, path)
        write_ranking(self.data, path)
        meta = {"metadata": run_metadata(), "provenance": self.provenance()}
        atomic_write_text(path + ".meta", ujson.dumps(meta, indent=4) + "\n")
        return path

    @classmethod
    def cast(cls, obj) -> "Ranking":
        if isinstance(obj, Ranking):
            return obj
        if isinstance(obj, (str, os.PathLike)):
            return cls(path=os.fspath(obj))
        if isinstance(obj, (dict, OrderedDict)):
            return cls(data=obj)
        raise TypeError(f"Ranking.cast: expected a Ranking, a ranking TSV path or a dict; got {type(obj).__name__}")


def run_metadata() -> dict:
    return {"hostname": socket.gethostname(),
            "current_datetime": time.strftime("%b %d, %Y ; %l:%M%p %Z (%z)"),
            "cmd": " ".join(sys.argv)}
