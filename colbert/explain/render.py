"""Three views of one Explanation, as for compare: a rich table, markdown for a blog post, JSON."""

from __future__ import annotations

import json
import sys

from colbert.compare.render import _clean, _md_table, capture_table, fmt_num, render_in
from colbert.explain.chain import NOT_IMPLEMENTED, Explanation, Step, upstream_of
from colbert.explain.modules import compact, module_label

FORMATS = ("table", "markdown", "json")
COLUMNS = ("step", "injected from A", "now matching", "still differing (max |a−b|)",
           "within the profile, not bit for bit")

NOT_IMPLEMENTED_TEXT = "Not implemented yet: " + ", ".join(NOT_IMPLEMENTED) + "."
LAYER_COLUMNS = ("module (batch of the first difference)", "bit-identical", "elements differing", "max |a−b|",
                 "mean |a−b|")
OP_COLUMNS = ("#", "aten op (A's inputs, replayed in B)", "inputs", "bit-identical", "max |a−b|")
FUNCTION_OP_COLUMNS = ("stage", "#", "aten op (A's inputs, replayed in B)", "inputs", "bit-identical",
                       "max |a−b| or elements differing")
FED_COLUMNS = ("module fed A's inputs in B", "class", "elements differing", "max |a−b|", "mean |a−b|")
MAX_OPS_SHOWN = 12


def _shape_text(study: dict | None) -> str | None:
    if not study:
        return None
    vs = study["variants"]
    widths = [v for v in vs if v["batch"] == study["rows"]]
    rows = [v for v in vs if v["width"] == study["width"] and v["batch"] != study["rows"]]
    changed_w = [v["width"] for v in widths if v["changes_output"]]
    changed_r = [v["batch"] for v in rows if v["changes_output"]]
    worst = max((v["max_abs"] or 0.0 for v in vs), default=0.0)
    text = (f"Shape sensitivity of the encoder: batch {study['batch']} ({study['rows']} passages, padded width "
            f"{study['width']}) re-encoded at widths {compact([v['width'] for v in widths])} and with "
            f"{compact([v['batch'] for v in rows]) or 'no fewer'} rows. In B, each passage's own embeddings change at "
            f"widths {compact(changed_w) or 'none'} and row counts {compact(changed_r) or 'none'}"
            + (f" (max |a−b| {fmt_num(worst)})" if worst else "") + ".")
    verdict = study.get("installs_disagree")
    if verdict == "any input":
        text += " The two installs disagree at every shape tried (any input)."
    elif verdict == "some shapes":
        text += (" The two installs disagree only at some shapes: widths "
                 + (compact([v["width"] for v in widths if v["installs_agree"] is False]) or "none")
                 + " and row counts " + (compact([v["batch"] for v in rows if v["installs_agree"] is False]) or "none")
                 + "; they agree at widths " + (compact([v["width"] for v in widths if v["installs_agree"]]) or "none")
                 + ".")
    elif verdict == "no shape":
        text += " The two installs agree at every shape tried."
    return text


def _module_text(ex: Explanation) -> list[str]:
    """Plain sentences below the stage level: which module, which shapes, which op."""
    m = ex.modules
    if m is None:
        return [ex.modules_note] if ex.modules_note else []
    out = [f"Encoder probed in both installs (torch {m['torch_a']} → {m['torch_b']}) on {m['batches_compared']} of "
           f"A's batches (padded widths {', '.join(map(str, m['widths']))}); batches with a differing module: "
           + (", ".join(map(str, m["batches_differing"])) or "none") + "."]
    out.append(m["summary"][0].upper() + m["summary"][1:] + ".")
    fed = m.get("injected") or []
    if fed:
        usable = [x for x in fed if x.get("comparable", True)]
        differ = [x for x in usable if x.get("equal") is False]
        failed = [x for x in usable if x.get("equal") is None]
        apart = [x for x in fed if not x.get("comparable", True)]
        out.append(f"Fed A's recorded inputs one by one, {len(differ)} of {len(usable)} probed modules of B give "
                   f"different outputs" + (f" (first: {module_label(differ[0]['module'])})" if differ else "")
                   + (f"; {len(failed)} could not be re-run ({failed[0].get('error')})" if failed else "")
                   + (f"; {len(apart)} not compared, because {apart[0]['why_not']} ({module_label(apart[0]['module'])}"
                      + (f" and {len(apart) - 1} more" if len(apart) > 1 else "") + ")" if apart else "") + ".")
    shape = _shape_text(m.get("encoder_shapes"))
    if shape:
        out.append(shape)
    same = m.get("same_inputs")
    if same is not None and same.get("error"):
        out.append(f"That module could not be re-run in B on A's recorded inputs: {same['error']}.")
    elif same is not None:
        out.append(f"Re-run in B on A's recorded inputs, that module's output is "
                   + ("bit-identical (the difference needs more than its inputs)" if same["equal"] else
                      f"different in {same['n_unequal']:,} of {same['numel']:,} elements (max |a−b| "
                      f"{fmt_num(same['max_abs'])})") + ".")
    s = m.get("shapes")
    if s:
        out.append(f"That module on A's input cut or extended, at {s['rows']} rows: padded widths that change its bits "
                   f"{compact(s['widths_differ']) or 'none'}; that do not {compact(s['widths_match']) or 'none'}. "
                   f"At width {s['width']}, row counts that change its bits {compact(s['rows_differ']) or 'none'}; "
                   f"that do not {compact(s['rows_match']) or 'none'}.")
    op = m.get("op")
    if op:
        if op.get("ops_error"):
            out.append(f"Op level not recorded in A's install: {op['ops_error']}.")
        elif not op["same_sequence"]:
            out.append(f"The module runs different aten ops in the two installs: A {', '.join(op['sequence_a'])}; "
                       f"B {', '.join(op['sequence_b'] or ['(not recorded)'])}.")
    return out


def _function_text(ex: Explanation) -> list[str]:
    """Sentences for the stages outside the encoder: their function, then the op that changed."""
    out = [r["summary"][0].upper() + r["summary"][1:] + "." for r in ex.functions]
    out += [n[0].upper() + n[1:] + "." for n in ex.functions_notes]
    return out


def function_op_rows(ex: Explanation) -> list[list[str]]:
    """Each recomputed stage's aten ops (A's, replayed in B) up to the first that differs."""
    rows = []
    for r in ex.functions:
        ops, first = r["ops"], r["first"]
        stop = first["index"] + 1 if first else len(ops)
        for o in ops[:stop][-MAX_OPS_SHOWN:]:
            eq = "error: " + o["error"] if o.get("error") else ("✓" if o["equal"] else "✗")
            moved = fmt_num(o.get("max_abs")) if o.get("max_abs") is not None else (
                "" if o.get("equal") or o.get("n_unequal") is None else f"{o['n_unequal']:,} / {o['numel']:,}")
            rows.append([r["stage"], str(o["index"]), o["op"], o["inputs"], eq, moved])
    return rows


def layer_rows(ex: Explanation) -> list[list[str]]:
    rows = []
    for r in (ex.modules or {}).get("layers") or []:
        differ = "" if r["n_unequal"] is None else f"{r['n_unequal']:,} / {r['numel']:,}"
        rows.append([module_label(r["module"]), "✓" if r["equal"] else "✗", differ, fmt_num(r["max_abs"]),
                     fmt_num(r["mean_abs"])])
    return rows


def fed_rows(ex: Explanation) -> list[list[str]]:
    rows = []
    for r in (ex.modules or {}).get("injected") or []:
        if r.get("equal") is False and r.get("comparable", True):
            differ = "" if r["n_unequal"] is None else f"{r['n_unequal']:,} / {r['numel']:,}"
            rows.append([module_label(r["module"]), r["cls"], differ, fmt_num(r["max_abs"]), fmt_num(r["mean_abs"])])
    return rows


def op_rows(ex: Explanation) -> list[list[str]]:
    """The module's own aten ops up to the first that differs (at most MAX_OPS_SHOWN rows)."""
    op = (ex.modules or {}).get("op") or {}
    ops = op.get("ops") or []
    first = op.get("first")
    stop = first["index"] + 1 if first else len(ops)
    rows = []
    for o in ops[:stop][-MAX_OPS_SHOWN:]:
        eq = "error: " + o["error"] if o.get("error") else ("✓" if o["equal"] else "✗")
        rows.append([str(o["index"]), o["op"], o["inputs"], eq, fmt_num(o.get("max_abs"))])
    return rows


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
    below = _module_text(ex) + _function_text(ex)
    if below:
        lines += ["", "### Below the stage level", ""] + [x for t in below for x in (t, "")]
    if layer_rows(ex):
        lines += _md_table(list(LAYER_COLUMNS), layer_rows(ex)) + [""]
    if fed_rows(ex):
        lines += _md_table(list(FED_COLUMNS), fed_rows(ex)) + [""]
    if op_rows(ex):
        lines += _md_table(list(OP_COLUMNS), op_rows(ex)) + [""]
    if function_op_rows(ex):
        lines += _md_table(list(FUNCTION_OP_COLUMNS), function_op_rows(ex)) + [""]
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
    for text in _module_text(ex) + _function_text(ex):
        console.print(text, highlight=False)
    for columns, rows in ((LAYER_COLUMNS, layer_rows(ex)), (FED_COLUMNS, fed_rows(ex)), (OP_COLUMNS, op_rows(ex)),
                          (FUNCTION_OP_COLUMNS, function_op_rows(ex))):
        if rows:
            t = Table(header_style="bold")
            for c in columns:
                t.add_column(c, overflow="fold")
            for r in rows:
                t.add_row(*r)
            console.print(t)
    console.print(NOT_IMPLEMENTED_TEXT, style="yellow", highlight=False)


def render_table(ex: Explanation, width: int = 200) -> str:
    return capture_table(print_table, ex, width)


def plot_modules(ex: Explanation, path: str) -> str:
    """Per-module drift: max |a−b| of each layer in the natural run and of each probed module fed A's inputs."""
    from colbert.utils.plots import pyplot, save_figure

    plt = pyplot()
    m = ex.modules or {}
    layers = m.get("layers") or []
    fed = [r for r in m.get("injected") or [] if r.get("max_abs") is not None and r.get("comparable", True)]
    if not layers and not fed:
        raise ValueError("nothing to plot: the module level found no differing module"
                         + (f" ({ex.modules_note})" if ex.modules_note else ""))
    fig, axes = plt.subplots(1 + bool(fed), 1, figsize=(11, 3.2 + 0.18 * len(fed)), squeeze=False)
    panels = [(layers, "natural run (each side its own inputs)")] + ([(fed, "fed A's inputs in B")] if fed else [])
    for ax, (rows, title) in zip(axes[:, 0], panels):
        names = [module_label(r["module"]).replace("colbert.model.", "").replace("encoder.", "") for r in rows]
        values = [max(r["max_abs"] or 0.0, 1e-12) for r in rows]
        ax.barh(range(len(rows)), values, color=["#c44e52" if (r["max_abs"] or 0) > 0 else "#55a868" for r in rows])
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("max |a−b| (log scale)")
        ax.set_title(title, fontsize=9)
    f = m.get("first") or {}
    fig.suptitle(f"torch {m.get('torch_a')} (A) vs {m.get('torch_b')} (B): first module "
                 f"{module_label(f.get('module', '')) if f else 'none'}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def render(ex: Explanation, fmt: str) -> str:
    return render_in(fmt, {"table": lambda: render_table(ex), "markdown": lambda: render_markdown(ex),
                           "json": lambda: render_json(ex)})
