"""Which collection an unfinished index was started on, so that `overwrite="resume"` never finishes
one collection's index with another's passages.

The fingerprint lives in a sidecar, FINGERPRINT_FILE, not in the plan: plan.json must stay
field-for-field colbert-ai's (tests/parity/index_diff.py compares its keys), and so must the
finished folder's file list (tests/parity/test_parity.py compares os.listdir). So the sidecar is
written with the plan and removed once the metadata marks the index complete. Its name starts
with a dot and has no .json/.pt suffix, so `colbert-tap compare` skips it (colbert/compare/layout.py),
and Indexer.erase removes it with the rest of a run's files.

A finished index (or one started by colbert-ai) has no sidecar; resume then checks what the chunk
files record: each chunk's passage range must lie within the collection, and a finished index's
passages must number exactly len(collection).
"""

from __future__ import annotations

import hashlib
import os
import struct

import ujson

from colbert.indexing import index_files as files
from colbert.utils.io import atomic_write_text

FINGERPRINT_FILE = files.FINGERPRINT
_VERSION = 1


class ResumeMismatchError(ValueError):
    """overwrite="resume" was given another collection than the one the index was started on."""


def collection_fingerprint(collection) -> dict:
    """sha256 over every passage (length-prefixed UTF-8, in order) and the passage count."""
    h = hashlib.sha256()
    n = 0
    for passage in collection:
        data = passage.encode("utf-8")
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
        n += 1
    return {"version": _VERSION, "num_passages": n, "sha256": h.hexdigest()}


def write_fingerprint(index_path: str, fingerprint: dict) -> None:
    atomic_write_text(os.path.join(index_path, FINGERPRINT_FILE), ujson.dumps(fingerprint) + "\n")


def remove_fingerprint(index_path: str) -> None:
    try:
        os.remove(os.path.join(index_path, FINGERPRINT_FILE))
    except FileNotFoundError:
        pass


def check_resume(index_path: str, collection, fingerprint: dict | None = None) -> None:
    """Raise ResumeMismatchError when the index at `index_path` was started on another collection.
    Reads only; call it before a resumed run writes anything."""
    path = os.path.join(index_path, FINGERPRINT_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                stored = ujson.load(f)
        except ValueError as e:
            raise ResumeMismatchError(f"resume: {path} is not the fingerprint this package writes ({e}); "
                                      "cannot tell which collection the index was started on. Index with "
                                      "overwrite=True to start over") from None
        fingerprint = fingerprint or collection_fingerprint(collection)
        if not isinstance(stored, dict) or stored.get("sha256") != fingerprint["sha256"]:
            old = stored if isinstance(stored, dict) else {}
            raise ResumeMismatchError(
                f"resume: index {index_path} was started on another collection: expected the collection "
                f"recorded in {FINGERPRINT_FILE} ({old.get('num_passages')} passages, sha256 "
                f"{str(old.get('sha256'))[:12]}...), got {fingerprint['num_passages']} passages, sha256 "
                f"{fingerprint['sha256'][:12]}...; nothing was changed. Resume with the same collection, or "
                "index with overwrite=True to start over")
        return
    _check_chunk_ranges(index_path, len(collection))


def _check_chunk_ranges(index_path: str, num_passages: int) -> None:
    total = 0
    for name in sorted(os.listdir(index_path)):
        if (files.parse(name) or ("", None))[0] != files.CHUNK_METADATA:
            continue
        try:
            with open(os.path.join(index_path, name), encoding="utf-8") as f:
                meta = ujson.load(f)
            end = int(meta["passage_offset"]) + int(meta["num_passages"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable chunk is redone or reported by finalize, not guessed at here
        total += int(meta["num_passages"])
        if end > num_passages:
            raise ResumeMismatchError(
                f"resume: index {index_path}: {name} holds passages up to {end - 1}, but the collection "
                f"has {num_passages}: expected the collection the index was started on; nothing was "
                "changed. Resume with the same collection, or index with overwrite=True to start over")
    if os.path.isfile(os.path.join(index_path, files.METADATA)) and total and total != num_passages:
        raise ResumeMismatchError(
            f"resume: index {index_path} is complete with {total} passages (its "
            f"{files.chunk_glob(files.CHUNK_METADATA)}), but the "
            f"collection has {num_passages}: expected the collection it was built from; nothing was "
            "changed. Index with overwrite=True to rebuild it")
