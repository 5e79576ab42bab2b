"""SaveTap: write every tapped artifact to a folder, with a manifest.json describing the run."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import time
from typing import Any, Iterable

import torch

from colbert.tap.core import ArtifactTap
from colbert.tap.errors import TapConfigError, TapWriteError
from colbert.tap.manifest import MANIFEST, ManifestWriter
from colbert.tap.select import Selection
from colbert.tap.stages import LOCATION_KEYS, artifact_filename, get_stage
from colbert.tap.kinds import content_sha256, summarize, to_saveable
from colbert.utils.io import atomic_write_bytes
from colbert.utils.locks import TAP_LOCK, folder_lock
from colbert.utils.logs import progress_level

log = logging.getLogger(__name__)

# Rewriting the manifest after every artifact would make saving O(n^2) in the number of
# artifacts (layer capture produces hundreds); this bounds staleness after a crash instead.
_MANIFEST_EVERY_S = 1.0


def location(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: ctx[k] for k in LOCATION_KEYS if k in ctx and ctx[k] is not None}


def describe_failure(exc: BaseException) -> str:
    """What ended a run, for the manifest's `error` field."""
    from colbert.utils.signals import Terminated

    if isinstance(exc, Terminated):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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


def default_folder(info: dict[str, Any]) -> str:
    """Where a SaveTap given no folder writes: `<index_path>/tap/`, or `<index_path>/tap/search/` for a
    search session, so that a search never mixes into the index's run."""
    if not info.get("index_path"):
        raise TapConfigError("tap save: no folder given and no index_path known; use COLBERT_TAP=save:/dir "
                             "or set COLBERT_TAP_DIR")
    return os.path.join(info["index_path"], "tap", *(("search",) if info.get("phase") == "search" else ()))


def resolve_folder(folder: str | None, info: dict[str, Any]) -> str:
    return os.path.abspath(os.path.expanduser(folder if folder is not None else default_folder(info)))


def check_not_swap_folder(folder: str, swap_folders: Iterable[str]) -> None:
    """A save into the folder a swap reads would first clear the very files it is to inject."""
    if os.path.realpath(folder) in {os.path.realpath(f) for f in swap_folders}:
        raise TapConfigError(f"COLBERT_TAP: {folder} is both the swap folder and the save folder; saving there "
                             "would replace the artifacts being injected. Save to another folder")


def check_save_target(folder: str, index_path: str | None, swap_folders: Iterable[str] = ()) -> None:
    """Refuse a save folder whose files of the same name would overwrite an index's (the tap names
    some global stages' files as an index names its own), a swap's folder, or someone's hand-made tap.
    Raised before anything is written."""
    from colbert.indexing.index_files import AVG_RESIDUAL, CENTROIDS, index_markers

    clash = f"{CENTROIDS} and {AVG_RESIDUAL}"
    check_not_swap_folder(folder, swap_folders)
    if index_path and os.path.realpath(folder) == os.path.realpath(index_path):
        raise TapConfigError(f"tap save: {folder} is the index folder this run writes; the tap's {clash} "
                             "would overwrite the index's. Use a bare `save` (it writes to "
                             "<index_path>/tap/) or another folder")
    if os.path.isdir(folder):
        found = index_markers(folder)
        if found:
            raise TapConfigError(f"tap save: {folder} holds an index ({', '.join(found[:3])}); the tap's "
                                 f"{clash} would overwrite its files. Save to an empty "
                                 "folder or a bare `save` (<index_path>/tap/)")
        _refuse_handmade(folder)


def _refuse_handmade(folder: str) -> None:
    from colbert.tap.swap import stage_of_file

    names = sorted(os.listdir(folder))
    if any(_is_manifest(n) for n in names):
        return
    artifacts = [n for n in names if stage_of_file(n) is not None and os.path.isfile(os.path.join(folder, n))]
    if artifacts:
        more = f" (+{len(artifacts) - 3} more)" if len(artifacts) > 3 else ""
        raise TapWriteError(f"tap save: {folder} holds tap artifacts not written by a save (no manifest.json: "
                            f"{', '.join(artifacts[:3])}{more}); save to an empty folder or remove them")


def _is_manifest(name: str) -> bool:
    return name == MANIFEST or (name.startswith("manifest.rank") and name.endswith(".json"))


def clear_previous_save(folder: str) -> list[str]:
    """Remove what an earlier save left in `folder`, so the folder holds one run only.

    Removed: the files the old manifest lists, every registry-named artifact (a killed run may have
    written some after its last manifest update), the old manifest and its rank parts, and temp
    files of interrupted writes. Anything else (a user's notes, a search/ subfolder) is left alone.
    A folder holding registry-named artifacts but no manifest is someone's hand-made tap: refused,
    not cleared. Returns the names removed.
    """
    from colbert.tap.manifest import load_manifest
    from colbert.tap.swap import stage_of_file

    if not os.path.isdir(folder):
        return []
    _refuse_handmade(folder)
    names = sorted(os.listdir(folder))
    manifests = [n for n in names if _is_manifest(n)]
    if not manifests:
        return []
    artifacts = [n for n in names if stage_of_file(n) is not None and os.path.isfile(os.path.join(folder, n))]
    listed: set[str] = set()
    try:
        listed = set(load_manifest(folder).get("artifacts", {}))
    except (OSError, ValueError, AttributeError):  # a corrupt manifest: the registry names still find its files
        pass
    doomed = sorted({*(n for n in listed if n in names and "/" not in n), *artifacts,
                     *(n for n in names if n.startswith(".tmp-") or (n.startswith(".") and n.endswith(".tmp")))})
    # manifests last: a clear interrupted midway still leaves a folder that says it held a save
    doomed += manifests
    removed = []
    for n in doomed:
        p = os.path.join(folder, n)
        if not os.path.isfile(p):
            continue
        try:
            os.remove(p)
        except OSError as e:
            raise TapWriteError(f"tap save: cannot remove {p} left by the previous save: {e.strerror or e}") from None
        removed.append(n)
    return removed


def save_folders(t: Any) -> list["SaveTap"]:
    """The SaveTaps inside a tap (composites and filters opened up)."""
    if isinstance(t, SaveTap):
        return [t]
    out: list[SaveTap] = []
    for inner in (*getattr(t, "taps", ()), *((t.inner,) if hasattr(t, "inner") else ())):
        out += save_folders(inner)
    return out


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
        self._lock: contextlib.ExitStack | None = None

    def __repr__(self) -> str:
        return f"SaveTap({self.folder or self.folder_arg!r})"

    # -- lifecycle -------------------------------------------------------------------------
    def begin(self, info: dict[str, Any]) -> None:
        folder = resolve_folder(self.folder_arg, info)
        self._rank = int(info.get("rank", 0) or 0)
        self._nranks = int(info.get("nranks", 1) or 1)
        check_save_target(folder, info.get("index_path"))
        prepare_folder(folder)
        self._release_lock()
        removed: list[str] = []
        if self._nranks == 1:
            # With nranks > 1 the parent process (Indexer.index) took the lock and cleared the folder
            # before spawning the ranks: a rank doing it here would delete what a faster rank wrote.
            lock = contextlib.ExitStack()
            lock.enter_context(folder_lock(folder, TAP_LOCK, what="tap save"))
            self._lock = lock
            try:
                removed = clear_previous_save(folder)
            except BaseException:
                self._release_lock()
                raise
        self.folder = folder
        self.status = "complete"
        self._count = self._bytes = 0
        self.sel.gate.reset()
        self.manifest = ManifestWriter(folder, info, {"action": "save", **self.sel.describe(),
                                                      **info.get("tap_settings", {})})
        self.manifest.write()
        self._last_manifest = time.monotonic()
        level = progress_level(self.verbose)
        who = f" (rank {self._rank}/{self._nranks})" if self._nranks > 1 else ""
        log.log(level, "[colbert-tap] saving artifacts to %s%s", folder, who)
        if removed:
            log.log(level, "[colbert-tap] note: %s held a previous save; its %d file(s) were removed first, so the "
                    "folder holds this run only", folder, len(removed))

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def fail(self, exc: BaseException) -> None:
        self.status = "failed"
        if self.manifest is not None:
            self.manifest.data["error"] = describe_failure(exc)

    def end(self) -> None:
        if self.manifest is None:
            self._release_lock()
            return
        try:
            self.manifest.finish(self.status)
        finally:
            self._release_lock()
        log.log(progress_level(self.verbose), "[colbert-tap] saved %d artifacts (%.1f MiB) and %s to %s", self._count,
                self._bytes / 2**20, os.path.basename(self.manifest.path), self.folder)
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
