"""`Queries`: qid -> query text, from a dict, a list (qids 0..n-1) or a `qid<TAB>query` TSV file."""

from __future__ import annotations

import os
from collections import OrderedDict


class Queries:
    def __init__(self, path: str | None = None, data: dict | None = None):
        self.path = path
        self.data: OrderedDict = load_queries(path) if path is not None else OrderedDict(data or {})
        for qid, text in self.data.items():
            if not isinstance(text, str):
                raise TypeError(f"query {qid!r}: expected str, got {type(text).__name__}")

    def provenance(self):
        return self.path

    def toDict(self):
        return {"provenance": self.provenance()}

    def keys(self):
        return self.data.keys()

    def values(self):
        return self.data.values()

    def items(self):
        return self.data.items()

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data.items())

    @classmethod
    def cast(cls, obj) -> "Queries":
        if isinstance(obj, Queries):
            return obj
        if isinstance(obj, os.PathLike):
            obj = os.fspath(obj)
        if isinstance(obj, str):
            return cls(path=obj)
        if isinstance(obj, dict):
            return cls(data=obj)
        if isinstance(obj, (list, tuple)):
            return cls(data=OrderedDict(enumerate(obj)))
        raise TypeError(f"queries must be a dict {{qid: text}}, a list of str or a qid<TAB>query .tsv path; got "
                        f"{type(obj).__name__}")


def load_queries(path: str) -> OrderedDict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"queries {path}: no such file (expected qid<TAB>query lines)")
    out: OrderedDict = OrderedDict()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            qid, sep, text = line.rstrip("\n").partition("\t")
            text = text.split("\t")[0]
            try:
                qid = int(qid)
            except ValueError:
                raise ValueError(f"queries {path}, line {lineno}: expected an integer qid<TAB>query; found "
                                 f"{line.rstrip()[:80]!r}") from None
            if not sep:
                raise ValueError(f"queries {path}, line {lineno}: no TAB between qid and query")
            if qid in out:
                raise ValueError(f"queries {path}, line {lineno}: qid {qid} appears twice")
            out[qid] = text
    return out
