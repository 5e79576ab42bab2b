"""SaveTap: write every tapped artifact to a folder, with a manifest.json describing the run."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from typing import Any, Iterable

import torch

from colbert.tap.core import ArtifactTap
from colbert.tap.errors import TapConfigError, TapWriteError
from colbert.tap.manifest import MANIFEST, ManifestWriter, atomic_write_bytes
from colbert.tap.select import Selection
from colbert.tap.stages import LOCATION_KEYS, artifact_filename, get_stage
from colbert.tap.validate import summarize, to_saveable

# Rewriting the manifest after every artifact would make saving O(n^2) in the number of
# artifacts (layer capture produces hundreds); this bounds staleness after a crash instead.
_MANIFEST_EVERY_S = 1.0


def location(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: ctx[k] for k in LOCATION_KEYS if k in ctx and ctx[k] is not None}


def content_sha256(value: Any) -> str:
    """Hash of the value itself (dtype, shape, bytes), independent of the pickle/zip container,
    so two installs with different torch versions can still be compared by hash."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, v: Any) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy
    elif isinstance(v, (list, tuple)):
        h.update(f"{'L' if isinstance(v, list) else 'U'}{len(v)}:".encode())
        for x in v:
            _feed(h, x)
    elif isinstance(v, (set, frozenset)):
        h.update(f"S{len(v)}:".encode())
        for x in sorted(v, key=repr):
            _feed(h, x)
    elif isinstance(v, dict):
        h.update(f"D{len(v)}:".encode())
        for k in sorted(v, key=repr):
            _feed(h, k)
            _feed(h, v[k])
    else:
        h.update(f"{type(v).__name__}:{v!r};".encode())


def prepare_folder(folder: str, what: str = "save") -> None:
    """Create `folder` and prove it is writable now, rather than failing mid-run."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise TapWriteError(f"tap {what}: {folder} exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise TapWriteError(f"tap {what}: cannot create folder {folder}: {e.strerror or e}") from None
    probe = os.path.join(folder, f".write-probe.{os.getpid()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as e:
        raise TapWriteError(f"tap {what}: folder {folder} is not writable: {e.strerror or e}") from None


class SaveTap(ArtifactTap):
    """Saves each selected artifact as `<folder>/<artifact_filename(...)>` and never changes it.

    folder: where to write; None means `<index_path>/tap/` of the run (known at begin()), or
    `<index_path>/tap/search/` for a search session.
    stages: names/globs to save (None: all). layers: capture encoder layers for the first N encode
    batches of each call site (0: none).
    """

    def __init__(self, folder: str | None = None, *, stages: str | Iterable[str] | None = None, layers: int = 0,
                 verbose: bool = True):
        self.folder_arg = folder
        self.sel = Selection(stages, layers)
        self.verbose = verbose
        self.folder: str | None = None
        self.manifest: ManifestWriter | None = None
        self.status = "complete"
        self._last_manifest = 0.0
        self._count = 0
        self._bytes = 0
        self._rank = 0
        self._nranks = 1

    def __repr__(self) -> str:
        return f"SaveTap({self.folder or self.folder_arg!r})"

    # -- lifecycle -------------------------------------------------------------------------
    def begin(self, info: dict[str, Any]) -> None:
        folder = self.folder_arg
        if folder is None:
            if not info.get("index_path"):
                raise TapConfigError("tap save: no folder given and no index_path known; use COLBERT_TAP=save:/dir "
                                     "or set COLBERT_TAP_DIR")
            # search artifacts get their own folder so a search never mixes into the index's run
            folder = os.path.join(info["index_path"], "tap", *(("search",) if info.get("phase") == "search" else ()))
        folder = os.path.abspath(os.path.expanduser(folder))
        prepare_folder(folder)
        self.folder = folder
        self._rank = int(info.get("rank", 0) or 0)
        self._nranks = int(info.get("nranks", 1) or 1)
        self.status = "complete"
        self._count = self._bytes = 0
        self.sel.gate.reset()
        had_manifest = os.path.exists(os.path.join(folder, MANIFEST))
        self.manifest = ManifestWriter(folder, info, {"action": "save", **self.sel.describe(),
                                                      **info.get("tap_settings", {})})
        self.manifest.write()
        self._last_manifest = time.monotonic()
        if self.verbose:
            who = f" (rank {self._rank}/{self._nranks})" if self._nranks > 1 else ""
            print(f"[colbert-tap] saving artifacts to {folder}{who}", flush=True)
            if had_manifest and self._rank == 0:
                print(f"[colbert-tap] note: {folder} already held a saved run; files this run does not rewrite "
                      "are kept, and the new manifest.json lists only this run's artifacts", flush=True)

    def fail(self, exc: BaseException) -> None:
        self.status = "failed"

    def end(self) -> None:
        if self.manifest is None:
            return
        self.manifest.finish(self.status)
        if self.verbose:
            print(f"[colbert-tap] saved {self._count} artifacts ({self._bytes / 2**20:.1f} MiB) and "
                  f"{os.path.basename(self.manifest.path)} to {self.folder}", flush=True)
        self.manifest = None

    # -- tap points ------------------------------------------------------------------------
    def may_replace(self, stage: str) -> bool:
        return False  # saving records values, it never changes them

    def wants(self, stage: str) -> bool:
        return self.sel.selected(stage)

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        return self.sel.admits(stage, ctx)

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        if not self.sel.admits(stage, ctx):
            return value
        if self.manifest is None:
            # bound with use_tap and driven without a session: begin lazily so nothing is lost
            self.begin({"rank": ctx.get("rank", 0), "nranks": ctx.get("nranks", 1), "config": None,
                        "argv": sys.argv})
        rank, nranks = int(ctx.get("rank", self._rank) or 0), int(ctx.get("nranks", self._nranks) or 1)
        spec = get_stage(stage)
        # global artifacts are identical on every rank (that is what global means); rank 0 alone
        # writes them so ranks never race on one file name
        if nranks > 1 and spec.scope == "global" and rank != 0:
            return value
        loc = location(ctx)
        fname = artifact_filename(stage, **{k: v for k, v in loc.items()})
        snap = to_saveable(value, stage)
        buf = io.BytesIO()
        torch.save(snap, buf)
        data = buf.getvalue()
        path = os.path.join(self.folder, fname)
        self._write(path, data)
        entry = {"stage": stage, "file": fname, **summarize(value), "sha256": hashlib.sha256(data).hexdigest(),
                 "content_sha256": content_sha256(snap), "bytes": len(data), "location": loc,
                 "source": ctx.get("tap_source", "computed"), "order": self._count}
        self.manifest.add(fname, entry)
        self._count += 1
        self._bytes += len(data)
        now = time.monotonic()
        if now - self._last_manifest >= _MANIFEST_EVERY_S:
            self.manifest.write()
            self._last_manifest = now
        return value

    def _write(self, path: str, data: bytes) -> None:
        try:
            atomic_write_bytes(path, data)
        except FileNotFoundError:
            # the indexer may have cleared the index folder (overwrite=True) after begin()
            prepare_folder(os.path.dirname(path))
            try:
                atomic_write_bytes(path, data)
            except OSError as e:
                raise TapWriteError(f"tap save: cannot write {path}: {e.strerror or e}") from None
        except OSError as e:
            raise TapWriteError(f"tap save: cannot write {path}: {e.strerror or e}") from None
