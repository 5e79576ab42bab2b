"""matrix.md, matrix.json and matrix.png from the matrix's data (the dict documented in docs/matrix.md)."""

from __future__ import annotations

import json
import logging
import math
import os
import platform

from colbert.tap.manifest import atomic_write_bytes, cpu_name, git_revision, package_versions
from colbert.tap.stages import STAGE_NAMES

log = logging.getLogger(__name__)

PAIR_HEADER = ["Version A", "Version B", "All shapes match (N/M)", "Default (N/M)", "bnb (N/M)", "first divergence"]
RUN_HEADER = ["Run", "torch", "ok", "seconds", "parity with upstream", "error", "log"]


def machine_facts() -> dict:
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "versions": package_versions(), "git_revision": git_revision()}


def _cell(x) -> str:
    s = "" if x is None else str(x)
    return s.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _nm(v) -> str:
    return "—" if not v else f"{v[0]}/{v[1]}"


def pair_rows(data: dict) -> list[list]:
    rows = []
    for p in data.get("pairs", []):
        if p.get("error"):
            rows.append([p["a"], p["b"], "—", "—", "—", p["error"]])
        else:
            rows.append([p["a"], p["b"], _nm(p["shapes_match"]), _nm(p["default"]), _nm(p["bnb"]),
                         p.get("first_divergence") or "none"])
    return rows


def _yes(v) -> str:
    return "—" if v is None else ("yes" if v else "no")


def run_rows(data: dict) -> list[list]:
    rows = []
    for r in data.get("runs", []):
        sec = "" if r.get("seconds") is None else f"{float(r['seconds']):.1f}"
        err = r.get("error") or ""
        up = r.get("upstream") or {}
        if up.get("error"):
            err = (err + "; " if err else "") + f"upstream: {up['error']}"
        if r.get("tested_pins") is False:
            err = (err + "; " if err else "") + "untested torch version: common pins used"
        if len(err) > 400:
            err = err[:400] + "… (matrix.json and the log have all of it)"
        rows.append([r["name"], r.get("torch") or "", "yes" if r.get("ok") else "no", sec,
                     _yes(r.get("parity_with_upstream")), err, r.get("log") or ""])
    return rows


def stage_order(data: dict) -> list[str]:
    """Stages present in any pair, in the registry's order (colbert/tap/stages.py)."""
    present = set()
    for p in data.get("pairs", []):
        present.update((p.get("stages") or {}).keys())
    return [s for s in STAGE_NAMES if s in present]


def _fmt_abs(v) -> str:
    if v is None:
        return ""
    if v == "inf":
        return "inf"
    return f"{float(v):.2g}"


def stage_cell(s: dict | None) -> str:
    if not s:
        return ""
    st = s.get("status")
    if st == "error":
        return "error"
    if st in ("only_a", "only_b"):
        return "only A" if st == "only_a" else "only B"
    if s.get("exact"):
        return "exact"
    if s.get("default"):
        return f"default ({_fmt_abs(s.get('max_abs'))})"
    if s.get("bnb"):
        return f"bnb ({_fmt_abs(s.get('max_abs'))})"
    m = _fmt_abs(s.get("max_abs"))
    return f"differs ({m})" if m else "differs"


def stage_rows(data: dict) -> tuple[list[str], list[list]]:
    pairs = [p for p in data.get("pairs", [])]
    header = ["Stage"] + [f"{p['a']} → {p['b']}" for p in pairs]
    rows = [[stage] + [stage_cell((p.get("stages") or {}).get(stage)) for p in pairs] for stage in stage_order(data)]
    return header, rows


def _f(v, digits=4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def search_rows(data: dict) -> tuple[list[str], list[list]]:
    s = data.get("search") or {}
    metrics = s.get("metrics") or []
    header = ["Version A", "Version B"] + [f"{m} {side}" for m in metrics for side in ("A", "B")]
    header += ["pids differing / query", "better/worse/equal", "search code on the first index: pids differing",
               "better/worse/equal", "B's index vs the first: pids differing"]
    rows = []
    for p in s.get("pairs", []):
        if p.get("error"):
            rows.append([p["a"], p["b"]] + [""] * (len(header) - 3) + [p["error"]])
            continue
        row = [p["a"], p["b"]]
        for m in metrics:
            row += [_f((p.get("metrics_a") or {}).get(m)), _f((p.get("metrics_b") or {}).get(m))]
        for key in ("total", "search_code"):
            d = p.get(key)
            if d is None:
                row += ["", ""]
                continue
            row.append(_f(d["mean_changed"], 2))
            row.append("" if d.get("better") is None else f"{d['better']}/{d['worse']}/{d['equal']}")
        d = p.get("index_vs_first")
        row.append("" if d is None else _f(d["mean_changed"], 2))
        rows.append(row)
    return header, rows


def render_markdown(data: dict) -> str:
    m = data.get("machine") or {}
    v = m.get("versions") or {}
    lines = ["# colbert-tap matrix", "",
             f"* command: `{data.get('command', '')}`",
             f"* wall time: {data.get('wall_seconds', 0):.1f} s",
             f"* machine: {m.get('cpu', '?')} ({m.get('cpus', '?')} CPUs), {m.get('platform', '?')}; "
             f"matrix run by python {v.get('python', '?')}, torch {v.get('torch', '?')}"
             + (f"; fork at git {m['git_revision'][:12]}" if m.get("git_revision") else ""),
             f"* tolerance profiles: {', '.join(data.get('profiles', []))}; N/M counts rows of each pair's "
             "compare report (`pairs/A__B.json`)", ""]
    lines += ["## Consecutive pairs", ""] + _table(PAIR_HEADER, pair_rows(data)) + [""]
    lines += ["## Runs", ""] + _table(RUN_HEADER, run_rows(data)) + [""]
    header, rows = stage_rows(data)
    if rows:
        lines += ["## Stages × pairs", "",
                  "exact: bit-identical; default / bnb: within that profile (max |a−b|); differs: outside both.", ""]
        lines += _table(header, rows) + [""]
    if data.get("search"):
        s = data["search"]
        header, rows = search_rows(data)
        lines += [f"## Search (k = {s.get('k')})", "",
                  "Each version searched its own index and the first run's index. \"search code on the first "
                  "index\" compares the two versions searching the same (first) index: search-code drift alone.",
                  ""]
        lines += _table(header, rows) + [""]
    return "\n".join(lines)


def heat_matrix(data: dict) -> tuple[list[str], list[str], list[list[float]]]:
    """(stages, pair labels, values): max |a−b| per stage and pair; NaN where exact or not compared."""
    stages = stage_order(data)
    pairs = [p for p in data.get("pairs", [])]
    values = []
    for stage in stages:
        row = []
        for p in pairs:
            s = (p.get("stages") or {}).get(stage)
            if not s or s.get("exact") or s.get("max_abs") in (None, 0):
                row.append(float("nan"))
            else:
                row.append(math.inf if s["max_abs"] == "inf" else float(s["max_abs"]))
        values.append(row)
    return stages, [f"{p['a']}\n→ {p['b']}" for p in pairs], values


def write_png(path: str, data: dict) -> bool:
    try:
        from matplotlib.colors import LogNorm

        from colbert.utils.plots import pyplot, save_figure

        plt = pyplot()
        import numpy as np
    except ImportError as e:
        log.warning("matrix.png skipped: matplotlib is not installed (%s)", e)
        return False
    stages, labels, values = heat_matrix(data)
    if not stages or not labels:
        log.info("matrix.png skipped: no compared pair")
        return False
    arr = np.array(values, dtype=float)
    finite = arr[np.isfinite(arr) & (arr > 0)]
    arr = np.where(np.isinf(arr), finite.max() if finite.size else 1.0, arr)
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(labels), 1.0 + 0.32 * len(stages)))
    masked = np.ma.masked_invalid(arr)
    norm = LogNorm(vmin=finite.min(), vmax=finite.max() if finite.max() > finite.min() else finite.min() * 10) \
        if finite.size else None
    im = ax.imshow(masked, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks(range(len(stages)), stages, fontsize=8)
    ax.set_title("max |a − b| per stage (blank: exact)", fontsize=9)
    if finite.size:
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def write_outputs(out: str, data: dict) -> None:
    atomic_write_bytes(os.path.join(out, "matrix.json"), (json.dumps(data, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(os.path.join(out, "matrix.md"), render_markdown(data).encode())
    write_png(os.path.join(out, "matrix.png"), data)
