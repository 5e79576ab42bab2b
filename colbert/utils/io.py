"""Atomic file writes. Every file an index holds goes through here, so a crash never leaves a
half-written file under its final name."""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
import ujson


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _silent_remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str) -> None:
    # torch.save names the archive root after the file's base name, which is part of the bytes we
    # must match; so the temp file keeps the final base name inside a private temp folder.
    directory = os.path.dirname(os.path.abspath(path))
    tmpdir = tempfile.mkdtemp(dir=directory, prefix=".tmp-save-")
    try:
        tmp = os.path.join(tmpdir, os.path.basename(path))
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_json_compact(path: str, obj) -> None:
    atomic_write_text(path, ujson.dumps(obj))


def write_json_pretty(path: str, obj) -> None:
    atomic_write_text(path, ujson.dumps(obj, indent=4) + "\n")


def _silent_remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
