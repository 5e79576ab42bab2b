"""Below the stage level for stages the encoder does not produce (postnorm_centroids, bucket_cutoffs,
values, ivf ...): the function that makes the stage, and the first aten op in it that changed.

The registry says how each such stage is recomputed alone (`Stage.recompute`, from the stages in
`recompute_from`). In A's install the function runs on A's saved inputs under a TorchDispatchMode trace
(colbert/explain/probe.py stage-record); in B's install it runs on the same inputs, and each of A's
recorded ops is replayed alone on A's recorded arguments (stage-check). So:

1. **function**: does B's function give another output from identical inputs? If not, the stage only
   differs because its inputs did, and there is nothing to find here.
2. **op**: the first of A's ops whose output differs in B given identical arguments (op, input shapes
   and dtypes, max |a-b| or, for integers, the count of differing elements). When every op replays
   equal, the ops themselves differ: the first place where B's op sequence departs from A's is named
   (a changed Python function composes other ops).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from colbert.explain.modules import ModuleLevelError, _manifest, run_probe
from colbert.tap.stages import get_stage

DEPARTURE_OPS = 4  # ops shown from each side where B's sequence departs from A's


def recomputable(stage: str) -> bool:
    try:
        return get_stage(stage).recompute is not None
    except KeyError:
        return False


def function_level(tap_a: str, tap_b: str, stage: str, work: str, *, timeout: float | None = None,
                   progress: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """The function and op levels for one stage of runs A and B (tap folders), as a JSON-able dict."""
    note = progress or (lambda event, info: None)
    os.makedirs(work, exist_ok=True)
    spec = {"tap_a": os.path.abspath(tap_a), "stage": stage, "config": _manifest(tap_a).get("config") or {}}
    st = get_stage(stage)
    note("modules", {"what": f"recording {st.recompute} for {stage} in A's install"})
    record = run_probe(tap_a, "stage-record", spec, os.path.join(work, f"{stage}-a.pt"), timeout=timeout)
    note("modules", {"what": f"replaying {stage}'s ops in B's install"})
    out = run_probe(tap_b, "stage-check", {**spec, "record": record}, os.path.join(work, f"{stage}-b.json"),
                    timeout=timeout)
    with open(out, encoding="utf-8") as f:
        check = json.load(f)
    ops = check["ops"]
    first = next((o for o in ops if o.get("equal") is False), None)
    split = check["sequence_split"]
    result = {"stage": stage, "function": st.recompute, "inputs": list(st.recompute_from),
              "torch_a": check["torch_a"], "torch_b": check["torch"], "same_inputs": check["same_inputs"],
              "first": first, "ops_recorded": len(ops), "ops": ops,
              "replay_errors": [o for o in ops if o.get("equal") is None],
              "sequence_a": check["sequence_a"], "sequence_b": check["sequence_b"], "sequence_split": split,
              "departure": None if split is None else {
                  "index": split, "a": check["sequence_a"][split:split + DEPARTURE_OPS],
                  "b": check["sequence_b"][split:split + DEPARTURE_OPS]}}
    result["summary"] = summary_line(result)
    return result


def function_levels(tap_a: str, tap_b: str, stages: list[str], work: str, *, timeout: float | None = None,
                    progress: Callable[[str, dict], None] | None = None) -> tuple[list[dict], list[str]]:
    """function_level for each recomputable stage in `stages`; (results, notes on the ones not run)."""
    results, notes = [], []
    for stage in dict.fromkeys(stages):
        if not recomputable(stage):
            notes.append(f"{stage}: the registry names no function that recomputes it alone")
            continue
        try:
            results.append(function_level(tap_a, tap_b, stage, os.path.join(work, "functions"), timeout=timeout,
                                          progress=progress))
        except (ModuleLevelError, OSError, ValueError) as e:
            notes.append(f"{stage}: op level not run: {e}")
    return results, notes


def summary_line(r: dict) -> str:
    same = r["same_inputs"]
    where = f"{r['stage']} ({r['function']} on A's {', '.join(r['inputs'])})"
    if same["equal"]:
        return (f"{where}: B's function gives A's output bit for bit from A's inputs, so {r['stage']} differs only "
                "because its inputs did")
    moved = f"{same['n_unequal']:,} of {same['numel']:,} elements differ"
    if same.get("max_abs") is not None:
        moved += f", max |a−b| {same['max_abs']:.3g}"
    text = f"{where}: B's function changes the output from identical inputs ({moved})"
    op = r["first"]
    if op:
        text += f"; first aten op differing on identical inputs: {op['op']}({op['inputs']})"
        if op.get("max_abs") is not None:
            text += f", max |a−b| {op['max_abs']:.3g}"
        elif op.get("n_unequal") is not None:
            text += f", {op['n_unequal']:,} of {op['numel']:,} elements differ"
    elif r["departure"]:
        d = r["departure"]
        text += (f"; every aten op of A's replays equal in B, but B runs other ops: from op {d['index']} A runs "
                 f"{', '.join(d['a']) or '(nothing more)'}; B runs {', '.join(d['b']) or '(nothing more)'}")
    else:
        text += "; every aten op replays equal alone and both run the same ops (the difference needs their order)"
    return text


def public_ops(results: list[dict]) -> list[dict]:
    """Explain's top-level `ops` entries for these stages: the differing ops, or B's departing op."""
    out = []
    for r in results:
        for o in r["ops"]:
            if o.get("equal") is False:
                out.append({"stage": r["stage"], "op": o["op"], "inputs": o["inputs"], "max_abs": o.get("max_abs"),
                            "count": o.get("n_unequal")})
        if not r["first"] and r["departure"] and not r["same_inputs"]["equal"]:
            out.extend({"stage": r["stage"], "op": op, "inputs": None, "max_abs": None, "count": None,
                        "only_in": "B"} for op in r["departure"]["b"])
    return out
