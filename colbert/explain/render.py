"""Three views of one Explanation, as for compare: a rich table, markdown for a blog post, JSON."""

from __future__ import annotations

import io
import json
import sys

from colbert.compare.render import _clean, _md_table, fmt_num
from colbert.explain.chain import NOT_IMPLEMENTED, Explanation, Step, upstream_of

FORMATS = ("table", "markdown", "json")
COLUMNS = ("step", "injected from A", "now matching", "still differing (max |a−b|)",
           "within the profile, not bit for bit")

NOT_IMPLEMENTED_TEXT = ("Not implemented yet: " + ", ".join(NOT_IMPLEMENTED) + ". This explanation stops at the "
                        "stage level; it does not say which module, which input shapes or which aten op changed.")


def _drift(step: Step, stage: str, upstream: set[str] = frozenset()) -> str:
    m = step.max_abs.get(stage)
    n = step.n_diff.get(stage)
    parts = [fmt_num(m)] if m is not None else ([f"{n} differ"] if n else [])
    if stage in upstream:  # B's own computation, before what was injected: differs by construction
        parts.append("upstream of the injection")
    return f"{stage} ({'; '.join(parts)})" if parts else stage


def _versions(ex: Explanation) -> str:
    va, vb = ex.versions.get("A") or {}, ex.versions.get("B") or {}
    parts = [f"{k} {va.get(k)} → {vb.get(k)}" for k in dict.fromkeys(list(va) + list(vb)) if va.get(k) != vb.get(k)]
    return "; ".join(parts) if parts else "same versions on both sides"


def step_rows(ex: Explanation) -> list[list[str]]:
    rows = []
    prev: Step | None = None
    for s in ex.steps:
        injected = "— (B as saved)" if s.step == 0 else ", ".join(s.injected)
        if s.error:
            rows.append([str(s.step), injected, "", f"replay failed (log: {s.log})", ""])
            break
        if prev is None:
            now = f"{len(s.matching)} stages match"
        else:
            new = [x for x in s.matching if x not in prev.matching]
            now = ", ".join(new) if new else "nothing new"
        up = upstream_of(s.injected) if s.injected else set()
        differing = ", ".join(_drift(s, x, up) for x in s.differing) or "—"
        within = ", ".join(x for x in s.exact_differing if x not in s.differing) or "—"
        rows.append([str(s.step), injected, now, differing, within])
        prev = s
    return rows


def summary(ex: Explanation, md: bool = True) -> str:
    q = "`" if md else ""
    if ex.error:
        return f"Error: {ex.error}"
    if ex.converged and not ex.chain:
        return f"Converged without injecting anything: {ex.stop_reason}."
    if ex.converged:
        n = len(ex.chain)
        return (f"Converged after {n} replay{'s' if n != 1 else ''}; root stages: "
                + ", ".join(f"{q}{r}{q}" for r in ex.root_stages) + ".")
    return f"Not converged: {ex.stop_reason}."


def render_markdown(ex: Explanation) -> str:
    lines = [f"Explaining `{ex.b}` (B) against `{ex.a}` (A), profile `{ex.profile}`.", "",
             f"Versions: {_versions(ex)}.", ""]
    lines.append(f"First divergence (profile {ex.profile}): "
                 + (f"`{ex.first_divergence}`" if ex.first_divergence else "none")
                 + "; values first differ (exact): "
                 + (f"`{ex.first_divergence_exact}`" if ex.first_divergence_exact else "nowhere") + ".")
    if ex.origin_note:
        lines += ["", f"Note: {ex.origin_note}."]
    lines += [""]
    lines += _md_table(list(COLUMNS), step_rows(ex))
    lines += ["", f"**{summary(ex)}**"]
    if ex.needs:
        lines += ["", f"Needed: {ex.needs}"]
    lines += ["", f"_{NOT_IMPLEMENTED_TEXT}_", ""]
    return "\n".join(lines)


def render_json(ex: Explanation) -> str:
    return json.dumps(_clean(ex.to_json()), indent=2, ensure_ascii=False) + "\n"


def print_table(ex: Explanation, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if console is None:
        import os

        # piped into a file or a pager, rich would wrap at 80 columns: the chain needs room
        console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "240")))
    console.print(f"A: {ex.a}\nB: {ex.b}\nprofile: {ex.profile}; versions: {_versions(ex)}", highlight=False)
    console.print(f"first divergence ({ex.profile}): {ex.first_divergence or 'none'}; values first differ (exact): "
                  f"{ex.first_divergence_exact or 'nowhere'}", highlight=False)
    if ex.origin_note:
        console.print(f"note: {ex.origin_note}", highlight=False)
    table = Table(header_style="bold")
    for c in COLUMNS:
        table.add_column(c, overflow="fold", justify="right" if c == "step" else "left")
    for r in step_rows(ex):
        table.add_row(*r)
    console.print(table)
    style = "bold magenta" if ex.error else ("bold green" if ex.converged else "bold red")
    console.print(Text(summary(ex, md=False), style=style))
    if ex.needs:
        console.print(f"needed: {ex.needs}", highlight=False)
    if ex.work:
        console.print(f"replays kept under {ex.work}", highlight=False)
    console.print(NOT_IMPLEMENTED_TEXT, style="yellow", highlight=False)


def render_table(ex: Explanation, width: int = 200) -> str:
    from rich.console import Console

    buf = io.StringIO()
    print_table(ex, Console(file=buf, width=width, color_system=None, force_terminal=False))
    return buf.getvalue()


def render(ex: Explanation, fmt: str) -> str:
    if fmt == "markdown":
        return render_markdown(ex)
    if fmt == "json":
        return render_json(ex)
    if fmt == "table":
        return render_table(ex)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
