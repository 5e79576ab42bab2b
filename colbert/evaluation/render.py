"""Renders evaluations and drift reports as a rich table (terminal), a markdown pipe table (ready to paste
into a post) or json."""

from __future__ import annotations

import io
import json


def _metric_rows(evaluations: dict):
    names = list(evaluations)
    labels = evaluations[names[0]].labels
    header = ["ranking", "queries"] + labels
    rows = [[name, str(len(ev.per_query))] + [f"{ev.aggregate[l]:.4f}" for l in labels]
            for name, ev in evaluations.items()]
    if len(names) == 2:
        a, b = (evaluations[n] for n in names)
        rows.append(["Δ (B − A)", ""] + [f"{b.aggregate[l] - a.aggregate[l]:+.4f}" for l in labels])
    return header, rows


def _drift_rows(report, names):
    a, b = names
    rows = [["queries answered by both", str(report.queries)],
            [f"mean pids of {a}'s top {report.k} not in {b}'s", f"{report.mean_changed:.2f}"],
            [f"max pids of {a}'s top {report.k} not in {b}'s", str(report.max_changed)],
            [f"queries with identical top {report.k} (order included)", str(report.identical)],
            [f"queries with the same top-{report.k} set", str(report.same_set)]]
    if report.max_score_diff is not None:
        rows.append([f"max |score difference| of shared top-{report.k} pids", f"{report.max_score_diff:.6g}"])
    if report.only_in_a or report.only_in_b:
        rows.append(["queries only in A / only in B", f"{len(report.only_in_a)} / {len(report.only_in_b)}"])
    if report.metric:
        rows.append([f"{b} vs {a} per query under {report.metric}: better / worse / equal",
                     f"{report.better} / {report.worse} / {report.equal}"])
    return ["drift", "value"], rows


def _notes(evaluations: dict) -> list[str]:
    notes = []
    for name, ev in evaluations.items():
        if ev.unanswered:
            notes.append(f"{name}: {len(ev.unanswered)} judged queries not in the ranking scored 0 "
                         f"({', '.join(ev.unanswered[:10])}{' ...' if len(ev.unanswered) > 10 else ''})")
        if ev.unjudged:
            notes.append(f"{name}: {len(ev.unjudged)} ranked queries have no relevant judgement and were left out")
    return notes


def _markdown(header, rows) -> str:
    def esc(cell):
        return str(cell).replace("|", "\\|")

    out = ["| " + " | ".join(map(esc, header)) + " |",
           "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |"]
    out += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(out)


def render(evaluations: dict, drift=None, fmt: str = "table", names: tuple[str, str] | None = None,
           color: bool = False) -> str:
    """evaluations: {name: Evaluation} (may be empty when only a drift report is wanted)."""
    names = names or tuple(evaluations)[:2]
    if fmt == "json":
        out = {"evaluations": {n: ev.to_dict() for n, ev in evaluations.items()}}
        if drift is not None:
            out["drift"] = {"a": names[0], "b": names[1], **drift.to_dict()}
        return json.dumps(out, indent=2, sort_keys=False)
    blocks = []
    if evaluations:
        blocks.append(("Retrieval quality", *_metric_rows(evaluations)))
    if drift is not None:
        blocks.append((f"Drift of B ({names[1]}) from A ({names[0]})", *_drift_rows(drift, names)))
    notes = _notes(evaluations)
    if fmt == "markdown":
        parts = [_markdown(header, rows) for _, header, rows in blocks]
        return "\n\n".join(parts + ([("\n".join(f"- {n}" for n in notes))] if notes else []))
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; expected table, markdown or json")
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, width=120, color_system="auto" if color else None)
    for title, header, rows in blocks:
        table = Table(title=title)
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for n in notes:
        console.print(f"note: {n}")
    return buf.getvalue().rstrip("\n")
