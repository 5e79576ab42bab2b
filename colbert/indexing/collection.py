"""A collection of passages: a list of str, a `pid<TAB>text[<TAB>title]` TSV, or any sequence of str
(e.g. a Hugging Face dataset column). Chunking follows upstream: chunk c is owned by rank c % nranks."""

from __future__ import annotations

import os
from collections.abc import Sequence


class CollectionError(ValueError):
    pass


class Collection:
    def __init__(self, path: str | None = None, data: list[str] | None = None):
        self.path = path
        self.data = data if data is not None else load_tsv(path)

    def __iter__(self):
        return iter(self.data)

    def __getitem__(self, item):
        return self.data[item]

    def __len__(self):
        return len(self.data)

    def provenance(self):
        return self.path

    def toDict(self):
        return {"provenance": self.provenance()}

    def get_chunksize(self, nranks: int) -> int:
        return min(25_000, 1 + len(self) // nranks)

    def enumerate(self, rank: int, nranks: int):
        for _, offset, passages in self.enumerate_batches(rank, nranks):
            for idx, passage in enumerate(passages):
                yield offset + idx, passage

    def enumerate_batches(self, rank: int, nranks: int, chunksize: int | None = None):
        chunksize = chunksize or self.get_chunksize(nranks)
        offset = 0
        chunk_idx = 0
        while True:
            passages = self.data[offset:offset + chunksize]
            if chunk_idx % nranks == rank and passages:
                yield chunk_idx, offset, passages
            if len(passages) < chunksize:
                return
            offset += chunksize
            chunk_idx += 1

    @classmethod
    def cast(cls, obj) -> "Collection":
        if isinstance(obj, Collection):
            return obj
        if isinstance(obj, os.PathLike):
            obj = os.fspath(obj)
        if isinstance(obj, str):
            if not obj.endswith(".tsv"):
                raise CollectionError(f"collection {obj}: only .tsv files (pid<TAB>passage) are supported")
            return cls(path=obj)
        if isinstance(obj, (bytes, dict)) or not _is_sequence(obj):
            raise CollectionError(f"collection must be a list of str, a .tsv path or a sequence of str "
                                  f"(e.g. dataset['text']); got {type(obj).__name__}")
        data = list(obj)
        validate_passages(data)
        return cls(data=data)


def _is_sequence(obj) -> bool:
    if isinstance(obj, Sequence):
        return True
    # Hugging Face `Column` objects and numpy arrays support len() and iteration but are no Sequence.
    return hasattr(obj, "__len__") and hasattr(obj, "__iter__")


def validate_passages(data: list, source: str = "collection") -> None:
    if len(data) == 0:
        raise CollectionError(f"{source} is empty: there is nothing to index")
    for i, p in enumerate(data):
        if not isinstance(p, str):
            raise CollectionError(f"{source}: passage {i} is a {type(p).__name__}, expected str (value: {p!r:.80})")


def load_tsv(path: str) -> list[str]:
    """Upstream's reading: each line stripped of '\\n\\r ', split on tabs into pid, passage[, title];
    pid must equal the line number (or be the header word 'id'); a title column gives 'title | passage'."""
    if not os.path.isfile(path):
        raise CollectionError(f"collection {path}: no such file")
    passages = []
    seen = {}
    with open(path, encoding="utf-8") as f:
        for line_idx, line in enumerate(f):
            fields = line.strip("\n\r ").split("\t")
            if len(fields) < 2:
                raise CollectionError(f"collection {path}, line {line_idx + 1}: expected 'pid<TAB>passage', "
                                      f"found {len(fields)} field(s): {line[:80]!r}")
            pid, passage, *rest = fields
            if pid != "id":
                try:
                    ipid = int(pid)
                except ValueError:
                    raise CollectionError(f"collection {path}, line {line_idx + 1}: pid {pid!r} is not an "
                                          "integer") from None
                if ipid != line_idx:
                    if ipid in seen:
                        raise CollectionError(f"collection {path}, line {line_idx + 1}: duplicate pid {ipid} "
                                              f"(first seen on line {seen[ipid] + 1}); pids must be 0, 1, 2, ... "
                                              "in file order")
                    raise CollectionError(f"collection {path}, line {line_idx + 1}: pid {ipid} is not contiguous; "
                                          f"expected pid {line_idx} (pids must be 0, 1, 2, ... in file order)")
                seen[ipid] = line_idx
            if rest:
                passage = rest[0] + " | " + passage
            passages.append(passage)
    if not passages:
        raise CollectionError(f"collection {path} is empty: there is nothing to index")
    return passages
