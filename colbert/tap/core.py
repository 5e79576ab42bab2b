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

    `ctx` holds what locates the artifact: rank, nranks, and where relevant chunk, site, group,
    batch, layer. `begin`/`end` bracket one indexing run (per rank).
    """

    def begin(self, info: dict[str, Any]) -> None:
        pass

    def wants(self, stage: str) -> bool:
        return True

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        """`wants` for one located tap point; taps that gate on the location (e.g. the first N
        encode batches of a call site) override this. Kept separate from `wants` so that user taps
        written against the one-argument `wants` keep working."""
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
    if ctx:
        at = getattr(t, "wants_at", None)  # a duck-typed tap may only have wants()
        if at is not None:
            return at(stage, ctx)
    return t.wants(stage)


@contextlib.contextmanager
def use_tap(t: ArtifactTap | None) -> Iterator[ArtifactTap | None]:
    token = _ACTIVE.set(t)
    try:
        yield t
    finally:
        _ACTIVE.reset(token)
