"""Three views of one Report: a rich table for the terminal, a pipe table for a Quarto post, JSON for CI."""

from __future__ import annotations

import io
import json
import math
import os
import sys
from typing import Any, Callable

from colbert.compare.report import DIFFERS, ERROR, MATCH, ONLY_A, ONLY_B, STATUS_TEXT, Report, Row
from colbert.compare.semantic import pct
from colbert.tap.stages import get_stage

FORMATS = ("table", "markdown", "json")


def fmt_num(v: float | None) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if v == 0:
        return "0"
    return f"{v:.3g}"


def verdict_cell(row: Row, profile: str) -> str:
    if row.status == ONLY_A:
        return "only in A"
    if row.status == ONLY_B:
        return "only in B"
    if row.status == ERROR:
        return "error"
    ok = row.verdicts.get(profile)
    if ok:
        return "✓"
    if row.max_abs is not None and row.n_total:  # floats: how much falls outside this profile
        frac = row.frac_outside.get(profile)
        return f"✗ {pct(frac * row.n_total, row.n_total)} out" if frac else "✗"
    if row.n_diff and row.n_total:
        return f"✗ {row.n_diff}/{row.n_total} ({pct(row.n_diff, row.n_total)})"
    return "✗"


def dtype_cell(row: Row) -> str:
    a, b = row.dtype_a or "", row.dtype_b or ""
    if row.status == ONLY_B:
        return b
    return a if (a == b or not b) else f"{a} / {b}"


def details_cell(row: Row) -> str:
    parts = []
    if row.error:
        parts.append(row.error)
    if row.semantic:
        parts.append(row.semantic)
    parts.extend(row.notes)
    return "; ".join(parts)


def columns(report: Report) -> list[str]:
    return (["#", "stage", "artifact", "kind", "dtype", "shape A", "shape B"] + [p["name"] for p in report.profiles]
            + ["max |a−b|", "mean |a−b|", "details"])


def row_cells(i: int, row: Row, report: Report) -> list[str]:
    return ([str(i), row.stage or "", row.name, row.kind, dtype_cell(row), row.shape_a or "", row.shape_b or ""]
            + [verdict_cell(row, p["name"]) for p in report.profiles]
            + [fmt_num(row.max_abs), fmt_num(row.mean_abs), details_cell(row)])


def version_lines(report: Report) -> list[str]:
    va, vb = report.versions.get("A") or {}, report.versions.get("B") or {}
    lines = []
    for k in dict.fromkeys(list(va) + list(vb)):
        x, y = va.get(k), vb.get(k)
        lines.append(f"{k}: {x}" if x == y else f"{k}: {x} → {y}")
    return lines


def layer_columns(report: Report) -> list[str]:
    return ["layer", "role", "tensors", "mean |a−b|", "max |a−b|"] + [f"out ({p['name']})" for p in report.profiles]


def layer_cells(e: dict, report: Report) -> list[str]:
    label = "" if e["label"].startswith("layer") else e["label"]
    return ([str(e["layer"]), label, f"{e['compared']}/{e['tensors']}", fmt_num(e["mean_abs"]), fmt_num(e["max_abs"])]
            + [pct(e["frac_outside"][p["name"]], 1) for p in report.profiles])


# ---- markdown -------------------------------------------------------------------------------------

def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
           "|" + "|".join("---:" if h in ("#", "tensors") else "---" for h in header) + "|"]
    out.extend("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows)
    return out


def artifact_groups(rows: list[Row]) -> list[list[Row]]:
    """The rows of each compared artifact (one file, or one element of an index tuple file): a tuple
    such as tensorize_output gives one row per element, all with the same key and files."""
    groups: list[list[Row]] = []
    for r in rows:
        if groups and (groups[-1][0].key, groups[-1][0].file_a, groups[-1][0].file_b) == (r.key, r.file_a, r.file_b):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _artifact_name(rows: list[Row]) -> str:
    """The artifact's own name: what its element rows' names (`x.pt[1][0]`, `x.pt[2]`) share."""
    name = os.path.commonprefix([r.name for r in rows])
    while name.count("[") > name.count("]"):
        name = name[:name.rfind("[")]
    return name


def _joined(values) -> str:
    return ", ".join(dict.fromkeys(v for v in values if v))


def summary_cells(i: int, rows: list[Row], report: Report) -> list[str]:
    """One artifact's row: an element row as it is, or one row for all of a tuple's or list's elements."""
    if len(rows) == 1:
        return row_cells(i, rows[0], report)
    first = rows[0]
    n, n_match = len(rows), sum(r.status == MATCH for r in rows)
    kind = get_stage(first.stage).kind if first.stage else "container"

    def verdict(profile: str) -> str:
        n_ok = sum(bool(r.verdicts.get(profile)) for r in rows)
        if n_ok == n:
            return "✓"
        return "error" if any(r.status == ERROR for r in rows) and not n_ok else f"✗ {n_ok}/{n}"

    def count(side: str) -> str:
        held = sum(r.status not in ({ONLY_B} if side == "a" else {ONLY_A}) for r in rows)
        return f"{held} elements"

    floats = [r for r in rows if r.max_abs is not None]
    max_abs = max((r.max_abs for r in floats), default=None)
    weighted = [r for r in floats if r.mean_abs is not None and r.n_total]
    total = sum(r.n_total for r in weighted)
    mean_abs = sum(r.mean_abs * r.n_total for r in weighted) / total if weighted and total else None
    details = [f"{n_match}/{n} elements match"]
    bad = next((r for r in rows if r.status != MATCH), None)
    if bad is not None:
        what = details_cell(bad) or STATUS_TEXT[bad.status]
        details.append(f"first: {bad.name[len(_artifact_name(rows)):] or bad.name} {what}")
    return ([str(i), first.stage or "", _artifact_name(rows), kind, _joined(dtype_cell(r) for r in rows),
             count("a"), count("b")] + [verdict(p["name"]) for p in report.profiles]
            + [fmt_num(max_abs), fmt_num(mean_abs), "; ".join(details)])


def render_markdown(report: Report, detail: bool = False) -> str:
    """A pipe table for a blog post: one row per artifact, or with `detail` one per element."""
    lines = [f"Comparing `{report.a}` (A) with `{report.b}` (B).", ""]
    vl = version_lines(report)
    if vl:
        lines += ["Versions: " + "; ".join(vl) + ".", ""]
    if detail:
        cells = [row_cells(i, r, report) for i, r in enumerate(report.rows, 1)]
    else:
        cells = [summary_cells(i, g, report) for i, g in enumerate(artifact_groups(report.rows), 1)]
    lines += _md_table(columns(report), cells)
    lines += ["", f"**{report.verdict_line()}**"]
    for n in report.notes:
        lines += ["", f"Note: {n}"]
    if report.layers is not None:
        lines += [""]
        if report.layers:
            lines += _md_table(layer_columns(report), [layer_cells(e, report) for e in report.layers])
        else:
            lines += ["No encoder layer captures (encoder_layers_*.pt) on both sides."]
    return "\n".join(lines) + "\n"


# ---- json -----------------------------------------------------------------------------------------

def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def render_json(report: Report) -> str:
    return json.dumps(_clean(report.to_json()), indent=2, ensure_ascii=False) + "\n"


# ---- rich table -----------------------------------------------------------------------------------

_STYLE = {MATCH: "green", DIFFERS: "red", ONLY_A: "yellow", ONLY_B: "yellow", ERROR: "magenta"}


def print_table(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if console is None:
        # piped into a file or a pager, rich would wrap at 80 columns: this table needs room
        wide = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "240"))
        console = Console(width=wide)
    console.print(f"A: {report.a}\nB: {report.b}", highlight=False)
    vl = version_lines(report)
    if vl:
        console.print("versions: " + "; ".join(vl), highlight=False)
    table = Table(show_lines=False, header_style="bold")
    for c in columns(report):
        table.add_column(c, overflow="fold", justify="right" if c == "#" else "left")
    for i, r in enumerate(report.rows, 1):
        cells = row_cells(i, r, report)
        k0 = 7
        for j, p in enumerate(report.profiles):
            ok = r.verdicts.get(p["name"])
            style = _STYLE[r.status] if r.status in (ONLY_A, ONLY_B, ERROR) else ("green" if ok else "red")
            cells[k0 + j] = Text(cells[k0 + j], style=style)
        table.add_row(*cells, style="dim" if r.downstream and r.status == MATCH else None)
    console.print(table)
    style = "bold green" if report.exit_code == 0 else ("bold magenta" if report.errors else "bold red")
    console.print(Text(report.verdict_line(), style=style))
    for n in report.notes:
        console.print(f"note: {n}", highlight=False)
    if report.layers is not None:
        if not report.layers:
            console.print("no encoder layer captures (encoder_layers_*.pt) on both sides")
            return
        lt = Table(title="per-layer |a−b| of encoder captures", header_style="bold")
        for c in layer_columns(report):
            lt.add_column(c)
        for e in report.layers:
            lt.add_row(*layer_cells(e, report), style=None if e["match"] else "red")
        console.print(lt)


def capture_table(print_fn: Callable[[Any, Any], None], obj: Any, width: int = 200) -> str:
    """What `print_fn(obj, console)` prints, as plain text without colour (for -o FILE and tests)."""
    from rich.console import Console

    buf = io.StringIO()
    print_fn(obj, Console(file=buf, width=width, color_system=None, force_terminal=False))
    return buf.getvalue()


def render_in(fmt: str, renderers: dict[str, Callable[[], str]]) -> str:
    """The output of the renderer named `fmt`, or a ValueError listing the formats there are."""
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(renderers)}")
    return renderers[fmt]()


def render_table(report: Report, width: int = 200) -> str:
    return capture_table(print_table, report, width)


def render(report: Report, fmt: str, detail: bool = False) -> str:
    return render_in(fmt, {"table": lambda: render_table(report), "markdown": lambda: render_markdown(report, detail),
                           "json": lambda: render_json(report)})
