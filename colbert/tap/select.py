"""Which stages a tap acts on, and the per-call-site gate of the encoder layer capture."""

from __future__ import annotations

from typing import Any, Iterable

from colbert.tap.stages import STAGE_NAMES, match_stages

LAYER_STAGE = "encoder_layers"


def resolve_stages(stages: str | Iterable[str] | None) -> frozenset[str] | None:
    """None means every stage; names and globs are expanded (unknown ones raise, listing valid names)."""
    if stages is None:
        return None
    if isinstance(stages, str):
        return frozenset(match_stages(stages))
    return frozenset(match_stages(list(stages)))


class LayerGate:
    """Admits the first `n` encode batches of each call site (ctx['site']).

    A batch is identified by (group, batch), so the gate works whether the caller numbers batches
    per encode group or per call site, and asking twice about the same batch (tap_wants, then tap)
    gives the same answer.
    """

    def __init__(self, n: int):
        self.n = int(n)
        self._seen: dict[Any, set[tuple[Any, Any]]] = {}

    def reset(self) -> None:
        self._seen.clear()

    def admit(self, ctx: dict[str, Any] | None) -> bool:
        if self.n <= 0:
            return False
        if ctx is None:
            return True
        seen = self._seen.setdefault(ctx.get("site"), set())
        key = (ctx.get("group"), ctx.get("batch"))
        if key in seen:
            return True
        if len(seen) >= self.n:
            return False
        seen.add(key)
        return True


class Selection:
    def __init__(self, stages: str | Iterable[str] | None = None, layers: int = 0):
        self.stages = resolve_stages(stages)
        if layers < 0:
            raise ValueError(f"layers must be >= 0, got {layers}")
        self.gate = LayerGate(layers)

    def selected(self, stage: str) -> bool:
        if stage == LAYER_STAGE and self.gate.n <= 0:
            return False
        return self.stages is None or stage in self.stages

    def admits(self, stage: str, ctx: dict[str, Any] | None) -> bool:
        if not self.selected(stage):
            return False
        if stage == LAYER_STAGE:
            return self.gate.admit(ctx)
        return True

    def describe(self) -> dict[str, Any]:
        return {"stages": sorted(self.stages, key=STAGE_NAMES.index) if self.stages is not None else "all",
                "layers": self.gate.n}
