"""`Queries`: qid -> query text, from a dict, a list (qids 0..n-1) or a `qid<TAB>query` TSV file.

A file is read by colbert.evaluation.files.load_queries, the one queries reader, with integer qids as
colbert-ai's Queries has them (see that module for the qid type)."""

from __future__ import annotations

import os
from collections import OrderedDict

from colbert.evaluation.files import load_queries


class Queries:
    def __init__(self, path: str | None = None, data: dict | None = None):
        self.path = path
        self.data: OrderedDict = OrderedDict(load_queries(path, integer_ids=True, allow_empty=True)
                                             if path is not None else data or {})
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
        if isinstance(obj, (list, tuple)):
            obj = OrderedDict(enumerate(obj))  # upstream numbers a list's queries 0..n-1
        if isinstance(obj, dict):
            return cls(data=obj)
        if isinstance(obj, (str, os.PathLike)):
            return cls(path=os.fspath(obj))
        raise TypeError(f"queries must be a dict {{qid: text}}, a list of str or a qid<TAB>query .tsv path; got "
                        f"{type(obj).__name__}")

