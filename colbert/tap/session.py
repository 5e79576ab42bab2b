"""The bracket the indexer puts around one indexing run (per rank)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

from colbert.tap.core import ArtifactTap, active_tap, use_tap
from colbert.tap.env import env_settings, tap_from_env
from colbert.utils.signals import sigterm_raises


@contextlib.contextmanager
def tap_session(*, config_dict: dict[str, Any] | Callable[[], dict[str, Any]] | None, index_path: str | None, rank: int = 0,
                nranks: int = 1, phase: str = "index", source: str | None = None) -> Iterator[ArtifactTap | None]:
    """Begin/end the active tap around one indexing run of one rank, or one search call
    (phase="search"; source names the call, e.g. "Searcher::search_all").

    A tap already bound with `use_tap` is used as is; otherwise one is built from COLBERT_TAP*
    and bound for the duration. With neither, this yields None and binds nothing, so the tap
    points inside cost one ContextVar read each.

    Call it after the index folder has been cleared for an overwrite: the default save folder is
    `<index_path>/tap/` (indexing) or `<index_path>/tap/search/` (search).
    """
    bound = active_tap()
    t = bound if bound is not None else tap_from_env()
    if t is None:
        yield None
        return
    if callable(config_dict):  # built only when a tap is on: a search calls this once per query
        config_dict = config_dict()
    info = {"config": config_dict, "index_path": index_path, "rank": rank, "nranks": nranks, "phase": phase,
            "argv": list(sys.argv), "tap_settings": {"env": env_settings()}}
    if source is not None:
        info["source"] = source
    # a stopped job (SIGTERM) must still mark its manifest failed; only while a tap is on, so an
    # untapped run keeps Python's own signal handling
    with sigterm_raises():
        t.begin(info)
        try:
            if bound is None:
                with use_tap(t):
                    yield t
            else:
                yield t
        except BaseException as e:
            t.fail(e)
            try:
                t.end()
            except Exception:  # noqa: BLE001 - the run's own error is the one to report
                pass
            raise
        t.end()


def _planned_folders(index_path: str) -> tuple[list[str], list[str]]:
    """(save folders, swap folders) of the coming index run: from the bound tap, else from
    COLBERT_TAP (parsed only: no tap is built, a user's tap class is not imported)."""
    import os

    from colbert.tap.composite import CompositeTap
    from colbert.tap.env import default_save_folder, tap_actions
    from colbert.tap.save import resolve_folder, save_folders
    from colbert.tap.swap import SwapTap

    info = {"index_path": index_path, "phase": "index"}
    bound = active_tap()
    if bound is not None:
        members = bound.taps if isinstance(bound, CompositeTap) else [bound]
        swaps = [t.folder for t in members if isinstance(t, SwapTap)]
        return [resolve_folder(s.folder_arg, info) for s in save_folders(bound)], swaps
    default = default_save_folder()
    actions = tap_actions()
    saves = [resolve_folder(arg or default, info) for action, arg in actions if action == "save"]
    swaps = [os.path.abspath(os.path.expanduser(arg)) for action, arg in actions if action == "swap"]
    return saves, swaps


def planned_saves(index_path: str) -> list[str]:
    """The save folders of the coming index run, each checked (not an index, not the index being
    written, not a swap folder of the same run). Called before the indexer creates or erases anything."""
    from colbert.tap.save import check_save_target

    saves, swaps = _planned_folders(index_path)
    folders = list(dict.fromkeys(saves))
    for folder in folders:
        check_save_target(folder, index_path, swaps)
    return folders


@contextlib.contextmanager
def lock_saves(folders: list[str], nranks: int) -> Iterator[None]:
    """Lock the save folders of an index run for the whole run (the caller holds the index lock).

    With nranks > 1 a previous save is also cleared here, once: the spawned ranks must not clear a
    folder other ranks are already writing to. With one rank SaveTap.begin clears it.
    """
    from colbert.tap.save import clear_previous_save, prepare_folder
    from colbert.utils.locks import TAP_LOCK, folder_lock

    with contextlib.ExitStack() as stack:
        for folder in folders:
            prepare_folder(folder)
            stack.enter_context(folder_lock(folder, TAP_LOCK, what="tap save"))
        if nranks > 1:
            for folder in folders:
                clear_previous_save(folder)
        yield
