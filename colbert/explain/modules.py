"""Below the stage level: which encoder module, which input shapes, which aten op.

When the stage chain ends at an encoder stage, explain encodes A's own tokenized batches (its saved
`tensorize_output`) in both installs (colbert/explain/probe.py runs in A's and in B's interpreter) and
compares every module call bit for bit:

1. **module**: the first call, in completion order, whose output differs while its inputs match. A
   module's children complete before it does, so this is the innermost module whose own computation
   changed; a parent whose children all matched names its own ops (for "" the mask and normalisation
   of ColBERT.doc).
2. **layers**: per transformer layer of that batch, max and mean |a-b| (the maintainer's per-layer table).
3. **shapes**: that module on A's input at other padded widths (W-12 .. W+12) and with fewer rows, in
   both installs: which shapes change its bits.
4. **op**: every aten op the module runs itself, replayed in B on A's recorded inputs (strides kept):
   the first op that differs given identical inputs, with its input shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Callable

from colbert.tap.manifest import MANIFEST

# Encoder stages: when one of them is a root stage, the module level has something to find.
ENCODER_STAGES = ("tensorize_output", "encoder_layers", "batches", "D", "local_sample_embs", "embs")
DEFAULT_BATCHES = 8


class ModuleLevelError(RuntimeError):
    """The module level cannot run for these runs; the message says why."""


def _manifest(tap: str) -> dict:
    with open(os.path.join(tap, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def batch_files(tap: str) -> list[str]:
    """A's tensorize_output files in the order the run produced them."""
    artifacts = _manifest(tap).get("artifacts") or {}
    rows = sorted((e.get("order", 0), name) for name, e in artifacts.items() if e.get("stage") == "tensorize_output")
    files = [os.path.join(tap, name) for _, name in rows if os.path.isfile(os.path.join(tap, name))]
    if not files:
        raise ModuleLevelError(f"{tap} holds no tensorize_output artifacts (saved with COLBERT_TAP_ONLY or "
                               "COLBERT_TAP_SKIP excluding it?): the module level encodes A's own batches")
    return files


def interpreter(tap: str) -> tuple[str, dict[str, str]]:
    """(python, environment) that run `tap` was made with, the tap itself switched off."""
    rec = _manifest(tap).get("replay") or {}
    python = rec.get("executable")
    if not python or not os.path.isfile(python):
        raise ModuleLevelError(f"{os.path.join(tap, MANIFEST)} records no interpreter that still exists "
                               f"({python!r}); the module level runs each side in its own install")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_")}
    env.update({k: v for k, v in (rec.get("env") or {}).items() if not k.startswith("COLBERT_TAP")})
    env["COLBERT_TAP"] = "off"
    return python, env


def encoder_spec(tap: str) -> dict[str, Any]:
    cfg = _manifest(tap).get("config") or {}
    if not cfg.get("checkpoint"):
        raise ModuleLevelError(f"{os.path.join(tap, MANIFEST)} records no checkpoint in its config")
    return {"checkpoint": cfg["checkpoint"], "config": {"mask_punctuation": cfg.get("mask_punctuation", True)}}


def run_probe(tap: str, command: str, spec: dict, out: str, *, timeout: float | None) -> str:
    """Run probe COMMAND in the install of run `tap`; returns the output file. A finished output of the
    same spec and the same run (its manifest's sha256) is reused."""
    python, env = interpreter(tap)
    full = {**spec, "out": out, "command": command, "python": python, "manifest_sha256": _sha256(tap)}
    spec_path = out + ".spec.json"
    if os.path.exists(out) and os.path.exists(spec_path) and _load_json(spec_path) == full:
        return out
    if os.path.exists(out):
        os.remove(out)
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(full, f)
    log_path = out + ".log"
    with open(log_path, "w", encoding="utf-8") as logf:
        try:
            proc = subprocess.run([python, "-m", "colbert.explain.probe", command, spec_path], env=env,
                                  cwd=os.path.dirname(out), stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ModuleLevelError(f"probe {command} in {python} timed out after {timeout} s (log {log_path})") from None
    if proc.returncode != 0 or not os.path.exists(out):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            last = ([ln.strip() for ln in f if ln.strip()] or [""])[-1]
        raise ModuleLevelError(f"probe {command} failed in {python} (exit {proc.returncode}, log {log_path}): {last}")
    return out


def _sha256(tap: str) -> str:
    import hashlib

    with open(os.path.join(tap, MANIFEST), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def first_module_divergence(a: dict, b: dict) -> dict | None:
    """The first module call (completion order) of the first batch whose output differs bit for bit."""
    for batch, (calls_a, calls_b) in enumerate(zip(a["batches"], b["batches"])):
        index_b = {(c["name"], c["call"]): c for c in calls_b}
        for position, ca in enumerate(calls_a):
            cb = index_b.get((ca["name"], ca["call"]))
            if cb is None:
                return {"batch": batch, "position": position, **_call(ca), "inputs_match": None,
                        "note": "B's encoder has no such module call"}
            if ca["out"] != cb["out"]:
                # keyword inputs are only seen on torch >= 2.0; compared where both sides saw them
                kw_match = ca.get("kw") == cb.get("kw") if ca.get("kw") is not None and cb.get("kw") is not None else True
                return {"batch": batch, "position": position, **_call(ca),
                        "inputs_match": ca["in"] == cb["in"] and kw_match, "calls_before": position}
    return None


def _call(c: dict) -> dict:
    return {"module": c["name"], "call": c["call"], "cls": c["cls"], "leaf": c["leaf"], "input_shapes": c["shapes"]}


def module_level(tap_a: str, tap_b: str, work: str, *, max_batches: int = DEFAULT_BATCHES,
                 timeout: float | None = None, progress: Callable[[str, dict], None] | None = None) -> dict:
    """The module, shape and op levels for runs A and B (tap folders); results as a JSON-able dict."""
    note = progress or (lambda event, info: None)
    os.makedirs(work, exist_ok=True)
    files = batch_files(tap_a)
    spec = {**encoder_spec(tap_a), "batch_files": files, "max_batches": max_batches}
    spec_b = {**spec, "checkpoint": encoder_spec(tap_b)["checkpoint"]}
    note("modules", {"what": "module digests in A's install"})
    da = _load_json(run_probe(tap_a, "digests", spec, os.path.join(work, "digests-a.json"), timeout=timeout))
    note("modules", {"what": "module digests in B's install"})
    db = _load_json(run_probe(tap_b, "digests", spec_b, os.path.join(work, "digests-b.json"), timeout=timeout))
    result: dict[str, Any] = {"torch_a": da["torch"], "torch_b": db["torch"], "batches_compared": len(da["batches"]),
                              "widths": da["widths"], "rows": da["rows"],
                              "batches_differing": [i for i, (x, y) in enumerate(zip(da["batches"], db["batches"]))
                                                    if [c["out"] for c in x] != [c["out"] for c in y]]}
    first = first_module_divergence(da, db)
    result["first"] = first
    if first is None:
        result.update(layers=None, shapes=None, op=None,
                      summary=f"every module call of {len(da['batches'])} batch(es) is bit-identical in both installs, "
                      "so the encoder does not cause the difference: it arises where its output is used")
        return result
    first["width"] = da["widths"][first["batch"]]
    first["rows"] = da["rows"][first["batch"]]
    detail_spec = {**spec, "batch": first["batch"], "module": first["module"], "call": first["call"]}
    note("modules", {"what": f"recording module {first['module'] or '(ColBERT.doc)'} in A's install"})
    detail = run_probe(tap_a, "detail", detail_spec, os.path.join(work, "detail-a.pt"), timeout=timeout)
    note("modules", {"what": "checking shapes and ops in B's install"})
    check = _load_json(run_probe(tap_b, "check", {**spec_b, "batch": first["batch"], "detail": detail},
                                 os.path.join(work, "check-b.json"), timeout=timeout))
    result["same_inputs"] = check["same_inputs"]
    result["layers"] = check["layers"]
    result["shapes"] = shape_summary(check["variants"], first["width"], first["rows"])
    result["op"] = op_summary(check)
    result["summary"] = summary_line(result)
    return result


def shape_summary(variants: list[dict], width: int, rows: int) -> dict | None:
    if not variants:
        return None
    widths = [(int(v["label"].split()[1]), v["equal"]) for v in variants if v["label"].startswith("width")]
    row_counts = [(int(v["label"].split()[1]), v["equal"]) for v in variants if v["label"].startswith("rows")]
    return {"width": width, "rows": rows,
            "widths_differ": [w for w, eq in widths if not eq], "widths_match": [w for w, eq in widths if eq],
            "rows_differ": [r for r, eq in row_counts if not eq], "rows_match": [r for r, eq in row_counts if eq]}


def op_summary(check: dict) -> dict:
    ops = check["ops"]
    first = next((o for o in ops if o.get("equal") is False), None)
    return {"first": first, "ops_recorded": len(ops), "ops": ops, "ops_error": check.get("ops_error"),
            "replay_errors": [o for o in ops if o.get("equal") is None],
            "sequence_a": check["sequence_a"], "sequence_b": check["sequence_b"],
            "same_sequence": check["sequence_a"] == check["sequence_b"]}


def module_label(name: str) -> str:
    return name or "ColBERT.doc (mask and normalisation)"


def summary_line(r: dict) -> str:
    f = r["first"]
    where = f"{module_label(f['module'])} ({f['cls']}, call {f['call']}) on batch {f['batch']} " \
            f"({f['rows']} rows, padded width {f['width']})"
    if f.get("inputs_match") is False:
        text = f"first differing output: {where}, whose inputs already differ (computed outside any module)"
    else:
        text = f"first module whose own computation differs: {where}"
    s = r.get("shapes")
    if s:
        text += (f"; widths that change its bits: {compact(s['widths_differ']) or 'none'}, widths that do not: "
                 f"{compact(s['widths_match']) or 'none'}")
    op = (r.get("op") or {}).get("first")
    if op:
        text += f"; first op differing on identical inputs: {op['op']}({op['inputs']})"
    elif r.get("op") is not None:
        text += "; no aten op differs on identical inputs when replayed alone"
    return text


def compact(values: list[int]) -> str:
    """[77, 78, 79, 82] -> '77-79, 82'."""
    out, run = [], []
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
        run = [v]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    return ", ".join(out)
