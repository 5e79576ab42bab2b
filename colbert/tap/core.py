"""The tap point API that indexing code calls, and the scoped binding of the active tap.

Indexing code calls `tap(stage, value, **ctx)` wherever it has produced an artifact that the next
stage consumes, and uses the returned value. With no tap bound this is one ContextVar read.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

_ACTIVE: contextvars.ContextVar["ArtifactTap | None"] = contextvars.ContextVar("colbert_tap", default=None)


class ArtifactTap:
    """Base class of every tap. Override `on_artifact`; return the value the pipeline should use.

    Every tap subclasses this class: the tap machinery (`tap_wants`, CompositeTap, FilterTap,
    tap_session) calls each method below on any tap it holds, relying on these defaults for the
    ones a subclass leaves out. `use_tap` refuses anything else; a plain object with only
    `on_artifact`, named in COLBERT_TAP=package.module:Name, is wrapped into one (colbert/tap/env.py).

    Methods
    -------
    begin(info)
        Start of one run (per rank) or search session. `info`: config, index_path, rank, nranks,
        phase ("index" or "search"), argv.
    wants(stage) / wants_at(stage, ctx)
        Whether the tap wants `stage` (at this location); lets the pipeline skip work only a tap needs.
    may_replace(stage)
        Whether `on_artifact` may return another value at `stage` (False allows recomputation shortcuts).
    on_artifact(stage, value, ctx)
        The value the pipeline continues with. `ctx` locates the artifact: rank, nranks, and where
        relevant chunk, site, group, batch, layer, qid.
    fail(exc), end()
        The run raised (called before `end`); the run is over.

    Examples
    --------
    >>> from colbert.tap import ArtifactTap, tap, use_tap
    >>> class Double(ArtifactTap):
    ...     def on_artifact(self, stage, value, ctx):
    ...         return value * 2 if stage == "num_passages" else value
    >>> with use_tap(Double()):
    ...     tap("num_passages", 21, rank=0, nranks=1)
    42
    >>> tap("num_passages", 21, rank=0, nranks=1)  # no tap bound: the value itself
    21

    Around a real run, `with use_tap(CompositeTap(Double(), SaveTap("/tmp/doubled"))):
    Indexer(...).index(...)` saves what the doubled run used (docs/tap.md).
    """

    def begin(self, info: dict[str, Any]) -> None:
        pass

    def wants(self, stage: str) -> bool:
        return True

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        """`wants` for one located tap point; taps that gate on the location (e.g. the first N
        encode batches of a call site) override this, the others need only `wants`."""
        return self.wants(stage)

    def may_replace(self, stage: str) -> bool:
        """Whether this tap may return something other than the value it is given at `stage`.
        Indexing may skip recomputing an artifact (e.g. reuse an encode group) only when no tap could
        replace it. Conservative by default: a user's tap may return anything."""
        return True

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        return value

    def fail(self, exc: BaseException) -> None:
        """Called before `end` when the run raised, so a tap can mark its output incomplete."""

    def end(self) -> None:
        pass


def active_tap() -> ArtifactTap | None:
    return _ACTIVE.get()


def tap(stage: str, value: Any, **ctx: Any) -> Any:
    t = _ACTIVE.get()
    if t is None:
        return value
    return t.on_artifact(stage, value, ctx)


def tap_wants(stage: str, **ctx: Any) -> bool:
    """True when a bound tap wants `stage` (lets callers skip work that only a tap needs).

    Pass the location (site, group, batch, ...) where the answer depends on it: the layer capture
    of COLBERT_TAP_LAYERS=N wants only the first N batches of each encode call site.
    """
    t = _ACTIVE.get()
    if t is None:
        return False
    return t.wants_at(stage, ctx) if ctx else t.wants(stage)


@contextlib.contextmanager
def use_tap(t: ArtifactTap | None) -> Iterator[ArtifactTap | None]:
    """Binds `t` (None: no tap) for the `with` block; the previous binding returns on exit."""
    if t is not None and not isinstance(t, ArtifactTap):
        raise TypeError(f"use_tap({t!r}): a tap must subclass colbert.tap.ArtifactTap")
    token = _ACTIVE.set(t)
    try:
        yield t
    finally:
        _ACTIVE.reset(token)
