"""The bracket the indexer puts around one indexing run (per rank)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

from colbert.tap.core import ArtifactTap, active_tap, use_tap
from colbert.tap.env import env_settings, tap_from_env


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
    t.begin(info)
    try:
        if bound is None:
            with use_tap(t):
                yield t
        else:
            yield t
    except BaseException as e:
        getattr(t, "fail", lambda e: None)(e)
        try:
            t.end()
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            pass
        raise
    t.end()
