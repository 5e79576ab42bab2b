"""SwapTap: inject stored artifacts in place of the live ones ("load it right before it would be saved")."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from colbert.tap.core import ArtifactTap
from colbert.tap.errors import TapError, TapLoadError
from colbert.tap.select import Selection
from colbert.tap.stages import LOCATION_KEYS, STAGE_NAMES, artifact_filename, get_stage
from colbert.tap.validate import fit_artifact, load_artifact
from colbert.utils.logs import progress_level

log = logging.getLogger(__name__)


def check_swap_folder(folder: str) -> str:
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.exists(folder):
        raise TapLoadError(f"tap swap: folder {folder} does not exist (COLBERT_TAP=swap:/dir must name a folder "
                           "written by COLBERT_TAP=save, or one holding <stage>.pt files)")
    if not os.path.isdir(folder):
        raise TapLoadError(f"tap swap: {folder} is not a folder")
    return folder


def stage_of_file(fname: str) -> str | None:
    """The stage a file name belongs to (longest stage name that prefixes it at a `_`/`.` boundary,
    so `sample_pids.pt` is sample_pids, not sample)."""
    best = None
    for name in STAGE_NAMES:
        if fname.startswith(name) and fname[len(name):len(name) + 1] in ("_", ".") and fname.endswith(".pt"):
            if best is None or len(name) > len(best):
                best = name
    return best


def stages_present(files: Iterable[str]) -> set[str]:
    return {s for s in map(stage_of_file, files) if s is not None}


class SwapTap(ArtifactTap):
    """At each selected tap point whose artifact file exists in `folder`, return the stored value
    (loaded with weights_only=True and checked against the stage) instead of the live one.

    allow_cast: convert a stored tensor of another dtype to the live dtype instead of refusing it.
    After a run, `injected` and `not_found` map each stage to the files used / looked for in vain, and
    `refused` maps each file found but refused to the reason.
    """

    def __init__(self, folder: str, *, stages: str | Iterable[str] | None = None, allow_cast: bool = False,
                 verbose: bool = True):
        self.folder = check_swap_folder(folder)
        self.sel = Selection(stages)
        self.allow_cast = allow_cast
        self.verbose = verbose
        self._files: set[str] | None = None
        self._present: set[str] | None = None
        self.injected: dict[str, list[str]] = {}
        self.not_found: dict[str, list[str]] = {}
        self.refused: dict[str, str] = {}  # file -> why it was refused (load, safety or fit error)
        self._nranks = 1

    def __repr__(self) -> str:
        return f"SwapTap({self.folder!r})"

    def begin(self, info: dict[str, Any]) -> None:
        check_swap_folder(self.folder)
        self._files = set(os.listdir(self.folder))
        self._present = stages_present(self._files)
        self._nranks = int(info.get("nranks", 1) or 1)
        self.injected, self.not_found, self.refused = {}, {}, {}
        log.log(progress_level(self.verbose), "[colbert-tap] injecting artifacts from %s", self.folder)

    def end(self) -> None:
        level = progress_level(self.verbose)
        if not log.isEnabledFor(level):
            return
        if self.injected:
            used = ", ".join(f"{s} ({len(f)})" if len(f) > 1 else s for s, f in self.injected.items())
            log.log(level, "[colbert-tap] injected from %s: %s", self.folder, used)
        else:
            log.log(level, "[colbert-tap] injected nothing from %s", self.folder)
        if self.not_found:
            ran = ", ".join(f"{s} ({len(f)})" if len(f) > 1 else s for s, f in self.not_found.items())
            log.log(level, "[colbert-tap] not in %s, ran normally: %s", self.folder, ran)
        for fname, why in self.refused.items():
            log.log(level, "[colbert-tap] refused %s from %s: %s", fname, self.folder, why)
        unused = self.unused_files()
        if unused:
            more = f" (+{len(unused) - 10} more)" if len(unused) > 10 else ""
            why = "the run stopped (at the refused file) before asking for" if self.refused else \
                "this run never asked for"
            log.log(level, "[colbert-tap] files in %s %s: %s%s", self.folder, why, ", ".join(unused[:10]), more)

    def unused_files(self) -> list[str]:
        """Stored artifacts that no tap point asked for (e.g. chunks this run does not have).
        Only meaningful with one rank: other ranks' files are expected to go unused here."""
        if self._files is None or self._nranks > 1:
            return []
        asked = {f for files in (*self.injected.values(), *self.not_found.values()) for f in files} | set(self.refused)
        return sorted(f for f in self._files if f not in asked and stage_of_file(f) is not None)

    def _selected(self, stage: str) -> bool:
        return self.sel.selected(stage) and not get_stage(stage).capture_only

    def wants(self, stage: str) -> bool:
        # Only stages with a file here: indexing code may skip work no tap needs (e.g. reuse an
        # encode group instead of recomputing it) when nothing could be injected into it.
        if self._present is None:
            self._present = stages_present(os.listdir(self.folder))
        return self._selected(stage) and stage in self._present

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        return self.wants(stage)

    def may_replace(self, stage: str) -> bool:
        return self.wants(stage)

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        if not self._selected(stage):
            return value
        if self._files is None:
            self.begin({"nranks": ctx.get("nranks", 1)})
        fname = artifact_filename(stage, **{k: ctx[k] for k in LOCATION_KEYS if ctx.get(k) is not None})
        if fname not in self._files:
            self.not_found.setdefault(stage, []).append(fname)
            return value
        path = os.path.join(self.folder, fname)
        try:
            stored = load_artifact(path, stage)
            new = fit_artifact(stage, stored, value, path, allow_cast=self.allow_cast, facts=ctx)
        except TapError as e:
            # remembered so the summary says the file was refused, not that the run never asked for it
            self.refused[fname] = f"{type(e).__name__}: {e}"
            raise
        self.injected.setdefault(stage, []).append(fname)
        ctx["tap_source"] = f"swap:{path}"
        return new

