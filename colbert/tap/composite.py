"""Combining taps (COLBERT_TAP=swap:/a,save:/b) and restricting a user's tap to selected stages."""

from __future__ import annotations

from typing import Any, Iterable

from colbert.tap.core import ArtifactTap
from colbert.tap.select import Selection


class CompositeTap(ArtifactTap):
    """Runs its taps in order at each tap point, each receiving the value the previous returned.

    Put savers last so that they record what the run actually used (injected or computed).
    """

    def __init__(self, *taps: ArtifactTap):
        self.taps = [t for t in taps if t is not None]

    def __repr__(self) -> str:
        return f"CompositeTap({', '.join(map(repr, self.taps))})"

    def begin(self, info: dict[str, Any]) -> None:
        _refuse_save_into_swap(self.taps, info)
        for t in self.taps:
            t.begin(info)

    def wants(self, stage: str) -> bool:
        return any(t.wants(stage) for t in self.taps)

    def may_replace(self, stage: str) -> bool:
        return any(t.may_replace(stage) for t in self.taps)

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        # no short-circuit: a layer gate that is asked must also count the batch
        answers = [t.wants_at(stage, ctx) for t in self.taps]
        return any(answers)

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        for t in self.taps:
            value = t.on_artifact(stage, value, ctx)
        return value

    def fail(self, exc: BaseException) -> None:
        for t in self.taps:
            t.fail(exc)

    def end(self) -> None:
        # every tap gets its end() (a saver must finish its manifest even if another tap fails)
        first: BaseException | None = None
        for t in self.taps:
            try:
                t.end()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                first = first or e
        if first is not None:
            raise first


def _refuse_save_into_swap(taps: list[ArtifactTap], info: dict[str, Any]) -> None:
    """A save into the folder a swap reads would first clear the very files it is to inject."""
    from colbert.tap.errors import TapConfigError
    from colbert.tap.save import check_not_swap_folder, resolve_folder, save_folders
    from colbert.tap.swap import SwapTap

    swaps = [t.folder for t in taps if isinstance(t, SwapTap)]
    if not swaps:
        return
    for s in save_folders(CompositeTap(*taps)):
        try:
            folder = resolve_folder(s.folder_arg, info)
        except TapConfigError:
            continue  # SaveTap.begin reports it
        check_not_swap_folder(folder, swaps)


class FilterTap(ArtifactTap):
    """Shows `inner` only the selected stages (COLBERT_TAP_ONLY/SKIP/LAYERS applied to a user's tap)."""

    def __init__(self, inner: ArtifactTap, *, stages: str | Iterable[str] | None = None, layers: int = 0):
        self.inner = inner
        self.sel = Selection(stages, layers)

    def __repr__(self) -> str:
        return f"FilterTap({self.inner!r})"

    def begin(self, info: dict[str, Any]) -> None:
        self.sel.gate.reset()
        self.inner.begin(info)

    def wants(self, stage: str) -> bool:
        return self.sel.selected(stage) and self.inner.wants(stage)

    def may_replace(self, stage: str) -> bool:
        return self.sel.selected(stage) and self.inner.may_replace(stage)

    def wants_at(self, stage: str, ctx: dict[str, Any]) -> bool:
        return self.sel.admits(stage, ctx) and self.inner.wants_at(stage, ctx)

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        if not self.sel.admits(stage, ctx):
            return value
        return self.inner.on_artifact(stage, value, ctx)

    def fail(self, exc: BaseException) -> None:
        self.inner.fail(exc)

    def end(self) -> None:
        self.inner.end()
