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

from colbert.tap.manifest import MANIFEST, load_manifest

# Encoder stages: when one of them is a root stage, the module level has something to find.
ENCODER_STAGES = ("tensorize_output", "encoder_layers", "batches", "D", "local_sample_embs", "embs")
DEFAULT_BATCHES = 8


class ModuleLevelError(RuntimeError):
    """The module level cannot run for these runs; the message says why."""


def _manifest(tap: str) -> dict:
    return load_manifest(tap)  # merged over ranks, as compare and replay read it


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
    root = first["batch"] if first else 0
    result["encoder_shapes"] = encoder_shape_study(tap_a, tap_b, spec, spec_b, root, work, timeout, note)
    if first is None:
        result.update(layers=None, shapes=None, op=None, injected=None,
                      summary=f"every module call of {len(da['batches'])} batch(es) is bit-identical in both installs, "
                      "so the encoder does not cause the difference: it arises where its output is used")
        return result
    first["width"] = da["widths"][first["batch"]]
    first["rows"] = da["rows"][first["batch"]]
    detail_spec = {**spec, "batch": first["batch"], "module": first["module"], "call": first["call"]}
    note("modules", {"what": f"recording module {first['module'] or '(ColBERT.doc)'} in A's install"})
    detail = run_probe(tap_a, "detail", detail_spec, os.path.join(work, "detail-a.pt"), timeout=timeout)
    note("modules", {"what": "feeding A's inputs to B's modules; shapes and ops in B's install"})
    check = _load_json(run_probe(tap_b, "check", {**spec_b, "batch": first["batch"], "detail": detail},
                                 os.path.join(work, "check-b.json"), timeout=timeout))
    result["same_inputs"] = check["same_inputs"]
    result["layers"] = check["layers"]
    result["injected"] = mark_comparable(check["injected"], da["batches"][first["batch"]], db["batches"][first["batch"]])
    result["shapes"] = shape_summary(check["variants"], first["width"], first["rows"])
    result["op"] = op_summary(check)
    result["summary"] = summary_line(result)
    return result


def _signature(c: dict) -> tuple:
    return (tuple(map(tuple, c["shapes"])), tuple(sorted(c["kw"])) if c.get("kw") is not None else None)


def mark_comparable(injected: list[dict], calls_a: list[dict], calls_b: list[dict]) -> list[dict]:
    """A module fed A's inputs means something only if both installs call it the same way: another
    transformers release may pass the attention mask by keyword, in another form, or not at all."""
    sig_a = {(c["name"], c["call"]): _signature(c) for c in calls_a}
    sig_b = {(c["name"], c["call"]): _signature(c) for c in calls_b}
    for entry in injected:
        a, b = sig_a.get((entry["module"], entry["call"])), sig_b.get((entry["module"], entry["call"]))
        positional_differ = a is None or b is None or a[0] != b[0]
        keywords_differ = a is not None and b is not None and a[1] is not None and b[1] is not None and a[1] != b[1]
        entry["comparable"] = not (positional_differ or keywords_differ or entry.get("dropped_kwargs"))
        if not entry["comparable"]:
            entry["why_not"] = ("the two installs call it with different inputs: "
                                f"A {_describe_sig(a)}, B {_describe_sig(b)}"
                                + (f"; B does not accept {', '.join(entry['dropped_kwargs'])}"
                                   if entry.get("dropped_kwargs") else ""))
    return injected


def _describe_sig(sig: tuple | None) -> str:
    if sig is None:
        return "no such call"
    shapes, kw = sig
    text = f"{len(shapes)} positional tensor(s) {', '.join(str(list(x)) for x in shapes) or ''}".rstrip()
    return text + (f" + keywords {', '.join(kw)}" if kw else "")


def same_install(tap_a: str, tap_b: str) -> bool:
    (pa, ea), (pb, eb) = interpreter(tap_a), interpreter(tap_b)
    return os.path.realpath(pa) == os.path.realpath(pb) and ea.get("PYTHONPATH") == eb.get("PYTHONPATH")


def encoder_shape_study(tap_a, tap_b, spec, spec_b, batch, work, timeout, note) -> dict:
    """The root batch re-encoded at other widths and row counts, in B and (another install) in A."""
    note("modules", {"what": f"encoding batch {batch} at other shapes in B's install"})
    sb = _load_json(run_probe(tap_b, "shapes", {**spec_b, "batch": batch}, os.path.join(work, "shapes-b.json"),
                              timeout=timeout))
    sa = None
    if not same_install(tap_a, tap_b):
        note("modules", {"what": f"encoding batch {batch} at other shapes in A's install"})
        sa = _load_json(run_probe(tap_a, "shapes", {**spec, "batch": batch}, os.path.join(work, "shapes-a.json"),
                                  timeout=timeout))
    digests_a = {v["label"]: v["digest"] for v in sa["variants"]} if sa else {}
    rows = []
    for v in sb["variants"]:
        rows.append({"batch": v["rows"], "width": v["width"], "max_abs": v["max_abs"],
                     "changes_output": bool(v["n_unequal"]), "n_unequal": v["n_unequal"], "numel": v["numel"],
                     "installs_agree": (digests_a.get(v["label"]) == v["digest"]) if sa else None})
    agree = [r["installs_agree"] for r in rows if r["installs_agree"] is not None]
    verdict = None
    if agree:
        verdict = "no shape" if all(agree) else ("any input" if not any(agree) else "some shapes")
    return {"batch": batch, "rows": sb["rows"], "width": sb["width"], "variants": rows, "installs_disagree": verdict}


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


def public_lists(m: dict | None) -> dict[str, Any]:
    """The three lists explain's JSON names at its top level (null when the module level did not run)."""
    if m is None:
        return {"modules": None, "shape_sensitivity": None, "ops": None}
    modules = [{"name": x["module"], "cls": x["cls"], "call": x["call"], "max_abs": x["max_abs"],
                "mean_abs": x["mean_abs"], "count": x["n_unequal"]}
               for x in m.get("injected") or [] if x.get("equal") is False and x.get("comparable", True)]
    shapes = [{k: v[k] for k in ("batch", "width", "max_abs", "changes_output", "installs_agree")}
              for v in (m.get("encoder_shapes") or {}).get("variants", [])]
    ops = [{"op": o["op"], "inputs": o["inputs"], "max_abs": o.get("max_abs"), "count": o.get("n_unequal")}
           for o in ((m.get("op") or {}).get("ops") or []) if o.get("equal") is False]
    return {"modules": modules, "shape_sensitivity": shapes, "ops": ops}


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
