"""The result of a comparison: one Row per compared piece, and the Report that judges them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MATCH, DIFFERS, ONLY_A, ONLY_B, ERROR = "match", "differs", "only_a", "only_b", "error"
STATUS_TEXT = {MATCH: "match", DIFFERS: "differs", ONLY_A: "only in A", ONLY_B: "only in B", ERROR: "error"}
DOWNSTREAM_TEXT = "downstream of first divergence"


@dataclass
class Row:
    name: str  # file (and element) as shown, e.g. "buckets.pt[0]" or "batches_sample_0.pt[1][0]"
    key: str  # what A and B were paired on
    stage: str | None
    file_a: str | None = None
    file_b: str | None = None
    kind: str = ""
    dtype_a: str | None = None
    dtype_b: str | None = None
    shape_a: str | None = None
    shape_b: str | None = None
    status: str = MATCH
    verdicts: dict[str, bool | None] = field(default_factory=dict)  # per profile; None when not comparable
    n_total: int | None = None
    n_diff: int | None = None  # elements not exactly equal
    frac_outside: dict[str, float] = field(default_factory=dict)
    max_abs: float | None = None
    mean_abs: float | None = None
    semantic: str | None = None
    details: dict = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    downstream: bool = False
    ctx: dict = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        return self.status in (MATCH, DIFFERS)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status_text"] = STATUS_TEXT[self.status]
        for k in ("max_abs", "mean_abs"):
            if d[k] is not None and d[k] == float("inf"):
                d[k] = "inf"
        return d


@dataclass
class Report:
    a: str
    b: str
    profiles: list[dict]  # name, description, tolerances per dtype; the first one decides
    rows: list[Row]
    versions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: list[dict] | None = None

    @property
    def primary(self) -> str:
        return self.profiles[0]["name"]

    @property
    def matched(self) -> int:
        return sum(r.status == MATCH for r in self.rows)

    @property
    def errors(self) -> int:
        return sum(r.status == ERROR for r in self.rows)

    @property
    def first_divergent_row(self) -> Row | None:
        # errors are unknowns, not divergences; one-sided files are divergences (one run lacks a stage).
        # Pipeline artifacts come first: a manifest that records a different thread count is worth a
        # row, but it is not where the pipeline diverged.
        diverged = [r for r in self.rows if r.status in (DIFFERS, ONLY_A, ONLY_B)]
        return next((r for r in diverged if r.stage), diverged[0] if diverged else None)

    @property
    def first_value_divergent_row(self) -> Row | None:
        """First stage artifact present on both sides with the same shape whose values differ.

        Differently cut encode groups or batches (another index_bsize) make tensorize_output differ in
        shape first, which is true but structural; this names where numbers first moved.
        """
        return next((r for r in self.rows if r.stage and r.status == DIFFERS and r.shape_a == r.shape_b
                     and r.kind != "json"), None)

    @property
    def first_divergence(self) -> str | None:
        r = self.first_divergent_row
        return None if r is None else (r.stage or r.name)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 0 if self.matched == len(self.rows) else 1

    def verdict_line(self) -> str:
        total = len(self.rows)
        s = f"{self.matched}/{total} match (profile {self.primary})"
        r = self.first_divergent_row
        if r is None:
            s += "; no divergence" if not self.errors else ""
        else:
            s += f"; first divergence: {r.stage or r.name} ({r.name}, {STATUS_TEXT[r.status]})"
            v = self.first_value_divergent_row
            if v is not None and v is not r:
                s += f"; first difference in values: {v.stage} ({v.name})"
            down = [x for x in self.rows if x.downstream]
            if down:
                n_bad = sum(x.status != MATCH for x in down)
                s += f"; {len(down)} row(s) downstream of it, {n_bad} of them not matching"
        if self.errors:
            s += f"; {self.errors} error(s)"
        return s

    def to_json(self) -> dict[str, Any]:
        r = self.first_divergent_row
        return {
            "a": self.a,
            "b": self.b,
            "profile": self.primary,
            "profiles": self.profiles,
            "matched": self.matched,
            "total": len(self.rows),
            "errors": self.errors,
            "verdict": self.verdict_line(),
            "first_divergence": self.first_divergence,
            "first_divergence_row": None if r is None else r.name,
            "first_value_divergence": None if self.first_value_divergent_row is None
            else self.first_value_divergent_row.stage,
            "downstream": [x.name for x in self.rows if x.downstream],
            "exit_code": self.exit_code,
            "versions": self.versions,
            "notes": self.notes,
            "rows": [x.to_json() for x in self.rows],
            "layers": self.layers,
        }
