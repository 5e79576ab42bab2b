"""The causal chain of `colbert-tap explain A B` (stage level).

Compare A with B; locate the first stage whose values differ bit for bit (the origin, whatever the
verdict profile tolerates); replay B with A's value of that stage injected and compare again; while
the final index artifacts still differ under the profile, inject the first stage that still differs
as well (cumulative) and repeat. The stages that had to be injected are the root stages.

Every stage fact (pipeline order, capture-only, what feeds what) comes from colbert/tap/stages.py;
which stages count as "final index artifacts" comes from what compare maps index files onto.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from colbert.compare.engine import Options, compare_runs
from colbert.compare.report import DIFFERS, MATCH, ONLY_A, ONLY_B, Report, Row
from colbert.compare.tolerances import PROFILES, resolve_profiles
from colbert.explain.functions import function_levels, public_ops
from colbert.explain.modules import DEFAULT_BATCHES, ENCODER_STAGES, ModuleLevelError, module_level, public_lists
from colbert.tap.manifest import MANIFEST
from colbert.tap.stages import STAGES, downstream, get_stage, index_stages, stage_index

EXACT = "exact"
DONE = "done.json"  # written last into a step folder: the step is complete and may be reused
# Below the stage level: the encoder (colbert/explain/modules.py) and the stages the registry can
# recompute alone (colbert/explain/functions.py); what neither covers:
NOT_IMPLEMENTED = ["op level for root stages outside the encoder that the registry cannot recompute alone: k-means "
                   "itself (faiss runs outside aten), the per-chunk codes and residuals, pid_ivf, and the search stages"]
# What makes one run's artifacts meaningless in the other (injection would not fit).
_SAME = ("num_passages", "dim", "nbits")


class ExplainError(RuntimeError):
    """explain cannot go on (bad input); the message says what is needed."""


@dataclass
class Step:
    """One comparison of A with a run: B as saved (step 0) or a replay of B with `injected` from A."""

    step: int
    injected: list[str]  # cumulative: every stage injected in this replay
    added: list[str]  # the stage(s) first injected at this step
    matching: list[str] = field(default_factory=list)  # stages whose rows on both sides all match (profile)
    differing: list[str] = field(default_factory=list)  # stages with a row that differs (profile)
    max_abs: dict[str, float | None] = field(default_factory=dict)  # per differing stage; None: not a float
    n_diff: dict[str, int | None] = field(default_factory=dict)  # per differing stage: elements not equal
    one_sided: list[str] = field(default_factory=list)  # stages with rows on one side only (e.g. reuse off)
    exact_differing: list[str] = field(default_factory=list)  # stages differing bit for bit
    first_divergence: str | None = None  # first differing stage under the profile
    first_divergence_exact: str | None = None  # first stage whose values differ bit for bit
    final_match: bool = False  # every final index artifact matches under the profile
    tap: str | None = None  # the compared run's tap folder
    log: str | None = None
    seconds: float | None = None  # replay wall time (None for step 0; 0 when reused)
    reused: bool = False
    error: str | None = None

    def signature(self) -> tuple:
        return (tuple(self.differing), tuple(self.exact_differing),
                tuple(sorted((k, v) for k, v in self.max_abs.items())))


@dataclass
class Explanation:
    a: str
    b: str
    profile: str
    work: str | None
    steps: list[Step] = field(default_factory=list)  # steps[0] is A vs B as saved
    final_stages: list[str] = field(default_factory=list)
    converged: bool = False
    stop_reason: str = ""
    error: str | None = None
    needs: str | None = None  # what is missing to go on, when explain stopped before replaying
    versions: dict[str, Any] = field(default_factory=dict)
    origin_note: str | None = None
    modules: dict[str, Any] | None = None  # the module, shape and op levels (colbert/explain/modules.py)
    modules_note: str | None = None  # why they were not run, or why they stopped
    functions: list[dict[str, Any]] = field(default_factory=list)  # op level of non-encoder stages (functions.py)
    functions_notes: list[str] = field(default_factory=list)

    @property
    def chain(self) -> list[Step]:
        return self.steps[1:]

    @property
    def root_stages(self) -> list[str]:
        done = [s for s in self.chain if s.error is None]
        return list(done[-1].injected) if done else []

    @property
    def first_divergence(self) -> str | None:
        return self.steps[0].first_divergence if self.steps else None

    @property
    def first_divergence_exact(self) -> str | None:
        return self.steps[0].first_divergence_exact if self.steps else None

    @property
    def exit_code(self) -> int:
        if self.error:
            return 2
        return 0 if self.converged else 1

    def _public_lists(self) -> dict[str, Any]:
        lists = public_lists(self.modules)
        if self.functions:
            lists["ops"] = (lists["ops"] or []) + public_ops(self.functions)
        return lists

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "colbert-tap-explain/1",
            "a": self.a,
            "b": self.b,
            "profile": self.profile,
            "work": self.work,
            "versions": self.versions,
            "first_divergence": self.first_divergence,
            "first_divergence_exact": self.first_divergence_exact,
            "origin_note": self.origin_note,
            "initial": _step_json(self.steps[0]) if self.steps else None,
            "chain": [_step_json(s) for s in self.chain],
            "root_stages": self.root_stages,
            "final_stages": self.final_stages,
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "needs": self.needs,
            "exit_code": self.exit_code,
            **self._public_lists(),
            "module_level": self.modules,
            "modules_note": self.modules_note,
            "functions": self.functions,
            "functions_notes": self.functions_notes,
            "not_implemented": list(NOT_IMPLEMENTED),
        }


def _step_json(s: Step) -> dict[str, Any]:
    d = asdict(s)
    d["max_abs"] = {k: (None if v is None else ("inf" if v == float("inf") else v)) for k, v in s.max_abs.items()}
    return d


# ---- reading the runs -----------------------------------------------------------------------------

def tap_of(run: str) -> str:
    """The tap folder of a run given as a tap folder or as an index folder holding tap/."""
    from colbert.tap.replay import ReplayError, tap_folder_of

    try:
        return tap_folder_of(run)
    except ReplayError:
        run = os.path.abspath(run)
    if not os.path.isdir(run):
        raise ExplainError(f"{run}: no such folder")
    if any(n.endswith(".pt") for n in os.listdir(run)):
        return run  # a hand-made folder of torch.save'd artifacts: compared, never replayed
    raise ExplainError(f"{run} holds no {MANIFEST}: explain needs tap folders written by COLBERT_TAP=save "
                       "(or index folders holding tap/)")


def _manifest(tap: str) -> dict:
    if not os.path.isfile(os.path.join(tap, MANIFEST)):
        return {}
    try:
        with open(os.path.join(tap, MANIFEST), encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ExplainError(f"cannot read {os.path.join(tap, MANIFEST)}: {e}") from None
    if not isinstance(m, dict):
        raise ExplainError(f"{os.path.join(tap, MANIFEST)} is not a JSON object")
    return m


def _num_passages(tap: str) -> int | None:
    path = os.path.join(tap, "num_passages.pt")
    if not os.path.isfile(path):
        return None
    try:
        import torch

        v = torch.load(path, weights_only=True)
        return int(v)
    except Exception:
        return None


def run_facts(tap: str) -> dict[str, Any]:
    cfg = _manifest(tap).get("config") or {}
    return {"num_passages": _num_passages(tap), "dim": cfg.get("dim"), "nbits": cfg.get("nbits")}


def check_compatible(tap_a: str, tap_b: str) -> None:
    fa, fb = run_facts(tap_a), run_facts(tap_b)
    diff = [f"{k} {fa[k]} vs {fb[k]}" for k in _SAME if fa[k] is not None and fb[k] is not None and fa[k] != fb[k]]
    if diff:
        raise ExplainError("A and B cannot be explained by injection (A's artifacts do not fit B's run): "
                           + ", ".join(diff))


def replay_problem(tap_b: str) -> str | None:
    """Why B cannot be replayed (missing record, interpreter or working directory), or None."""
    import subprocess

    from colbert.tap.replay import ReplayError, replay_command

    if not os.path.isfile(os.path.join(tap_b, MANIFEST)):
        return (f"{tap_b} holds no {MANIFEST} (a hand-made folder?), so nothing records how to run it again")
    try:
        cmd, env, cwd, _ = replay_command(tap_b, os.path.join(os.path.dirname(tap_b), ".explain-probe"))
    except ReplayError as e:
        return str(e).removeprefix("replay: ")
    except Exception as e:  # noqa: BLE001 - reported, never a crash
        return f"{type(e).__name__}: {e}"
    try:
        probe = subprocess.run([cmd[0], "-c", "import colbert.tap.replay"], cwd=cwd, env=env, capture_output=True,
                               text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the run's interpreter {cmd[0]} cannot be started: {e}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [""])[-1]
        return (f"the run's interpreter {cmd[0]} cannot import colbert.tap (is colbert-tap installed there?): "
                f"{last}")
    return None


# ---- judging one comparison -----------------------------------------------------------------------

def final_stages_of(index_folder: str | None) -> list[str]:
    """The stages written into an index: what compare maps the index folder's files onto."""
    from colbert.compare.layout import scan_run

    stages: set[str] = set()
    if index_folder and os.path.isdir(index_folder):
        try:
            stages = {a.stage for a in scan_run(index_folder).artifacts if a.source == "index" and a.stage}
        except OSError:
            stages = set()
    if not stages:  # no index to look at: the stages the registry places in index files
        stages = set(index_stages())
    return sorted(stages, key=stage_index)


def _exact_ok(row: Row) -> bool | None:
    v = row.verdicts.get(EXACT)
    return v


def injectable(stage: str) -> str | None:
    """`stage`, or for a capture-only stage the nearest stage downstream of it that a swap injects."""
    s = get_stage(stage)
    if not s.capture_only:
        return stage
    below = downstream(stage)
    for t in STAGES[stage_index(stage) + 1:]:
        if t.name in below and not t.capture_only and t.phase == s.phase:
            return t.name
    return None


def upstream_of(stages: list[str]) -> set[str]:
    """Every stage from which one of `stages` is reachable through the registry's consumers graph."""
    wanted = set(stages)
    return {s.name for s in STAGES if s.name not in wanted and downstream(s.name) & wanted}


def first_exact(rows: list[Row], *, injectable_only: bool, exclude: set[str] = frozenset()) -> str | None:
    """First stage (pipeline order) whose values differ bit for bit.

    Rows present on one side only and shape changes are structural (another batching, reuse switched
    off) and are passed over while a same-shape value difference exists further on; with
    injectable_only, capture-only stages are passed over too (their injectable stage comes later).
    """
    cands = [r for r in rows if r.stage and r.status in (MATCH, DIFFERS) and _exact_ok(r) is False
             and r.kind != "json" and r.stage not in exclude]
    if injectable_only:
        cands = [r for r in cands if not get_stage(r.stage).capture_only]
    same_shape = [r for r in cands if r.shape_a == r.shape_b]
    pick = same_shape[0] if same_shape else (cands[0] if cands else None)
    return None if pick is None else pick.stage


def judge(report: Report, step: Step, profile: str, final: list[str]) -> None:
    by_stage: dict[str, list[Row]] = {}
    for r in report.rows:
        if r.stage:
            by_stage.setdefault(r.stage, []).append(r)
    order = sorted(by_stage, key=stage_index)
    matching, differing, one_sided, exact_diff = [], [], [], []
    max_abs: dict[str, float | None] = {}
    n_diff: dict[str, int | None] = {}
    for st in order:
        rows = by_stage[st]
        both = [r for r in rows if r.status in (MATCH, DIFFERS)]
        if any(r.status in (ONLY_A, ONLY_B) for r in rows):
            one_sided.append(st)
        bad = [r for r in both if r.verdicts.get(profile) is False]
        if bad:
            differing.append(st)
            floats = [r.max_abs for r in bad if r.max_abs is not None]
            max_abs[st] = max(floats) if floats else None
            counts = [r.n_diff for r in bad if r.n_diff is not None]
            n_diff[st] = sum(counts) if counts else None
        elif both:
            matching.append(st)
        if any(_exact_ok(r) is False for r in both):
            exact_diff.append(st)
    step.matching, step.differing, step.one_sided, step.exact_differing = matching, differing, one_sided, exact_diff
    step.max_abs, step.n_diff = max_abs, n_diff
    profile_rows = [r for r in report.rows if r.stage and r.status in (MATCH, DIFFERS)
                    and r.verdicts.get(profile) is False]
    step.first_divergence = profile_rows[0].stage if profile_rows else None
    step.first_divergence_exact = first_exact(report.rows, injectable_only=False)
    present = {st for st in order if any(r.status in (MATCH, DIFFERS) for r in by_stage[st])}
    step.final_match = all(st in present and st not in differing for st in final)


# ---- the chain ------------------------------------------------------------------------------------

def default_work(a: str, b: str) -> str:
    def name(p: str) -> str:
        p = os.path.abspath(p).rstrip(os.sep)
        base = os.path.basename(p)
        return os.path.basename(os.path.dirname(p)) if base == "tap" else base

    return os.path.join(os.path.dirname(os.path.abspath(b).rstrip(os.sep)), f"explain-{name(a)}-{name(b)}")


Progress = Callable[[str, dict], None]  # (event, info): "compare", "replay", "reused", "step", "done"


def _noop(event: str, info: dict) -> None:
    pass


def _compare(a: str, b: str, profile: str) -> Report:
    names = [profile] if profile == EXACT else [profile, EXACT]
    return compare_runs(a, b, Options(profiles=resolve_profiles(names), progress=False))


def _digest(tap: str) -> str | None:
    """The run's manifest, hashed: a step is reused only for the very runs it was made from."""
    import hashlib

    try:
        with open(os.path.join(tap, MANIFEST), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _load_done(folder: str, injected: list[str], tap_a: str, tap_b: str) -> dict | None:
    try:
        with open(os.path.join(folder, DONE), encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if (d.get("injected") != injected or d.get("a") != tap_a or d.get("b") != tap_b
            or d.get("a_manifest") != _digest(tap_a) or d.get("b_manifest") != _digest(tap_b)):
        return None
    if not os.path.isfile(os.path.join(folder, "tap", MANIFEST)):
        return None
    return d


def explain(a: str, b: str, *, profile: str = "default", work: str | None = None, max_steps: int = 8,
            timeout: float | None = None, progress: Progress | None = None, modules: bool = True,
            module_batches: int | None = None) -> Explanation:
    """Build the causal chain, then go below it into the encoder when an encoder stage is where values
    first move or a root stage. Never raises for bad input: the Explanation carries `error`."""
    ex = _stage_chain(a, b, profile=profile, work=work, max_steps=max_steps, timeout=timeout, progress=progress)
    encoder = [s for s in [ex.first_divergence_exact, *ex.root_stages] if s in ENCODER_STAGES]
    if ex.error:  # nothing below a chain that could not be built; the error says what is needed
        ex.modules_note = "module level not run: the stage chain stopped with an error"
    elif not encoder:
        ex.modules_note = "no encoder stage is where values first move or a root stage: nothing to probe below"
    elif not modules:
        ex.modules_note = "module level switched off (--no-modules)"
    else:
        try:
            ex.modules = module_level(ex.a, ex.b, os.path.join(ex.work, "modules"),
                                      max_batches=module_batches or DEFAULT_BATCHES, timeout=timeout,
                                      progress=progress)
        except ModuleLevelError as e:
            ex.modules_note = f"module level not run: {e}"
    others = [s for s in ex.root_stages if s not in ENCODER_STAGES]
    if ex.first_divergence_exact and ex.first_divergence_exact not in ENCODER_STAGES \
            and ex.first_divergence_exact in ex.root_stages:
        others.insert(0, ex.first_divergence_exact)
    if others and not ex.error and modules:
        ex.functions, ex.functions_notes = function_levels(ex.a, ex.b, others, ex.work, timeout=timeout,
                                                           progress=progress)
    return ex


def _stage_chain(a: str, b: str, *, profile: str, work: str | None, max_steps: int, timeout: float | None,
                 progress: Progress | None) -> Explanation:
    from colbert.tap.replay import ReplayError, replay

    notify = progress or _noop
    if profile not in PROFILES:
        raise ExplainError(f"unknown tolerance profile {profile!r}; choose from {', '.join(PROFILES)}")
    tap_a, tap_b = tap_of(a), tap_of(b)
    work = os.path.abspath(work or default_work(a, b))
    ex = Explanation(a=tap_a, b=tap_b, profile=profile, work=work)
    check_compatible(tap_a, tap_b)

    notify("compare", {"what": "A vs B"})
    report = _compare(tap_a, tap_b, profile)
    ex.versions = report.versions
    b_index = _manifest(tap_b).get("index_path")
    ex.final_stages = final_stages_of(b_index)
    step0 = Step(step=0, injected=[], added=[], tap=tap_b)
    judge(report, step0, profile, ex.final_stages)
    ex.steps.append(step0)
    origin = step0.first_divergence_exact
    if origin and get_stage(origin).capture_only:
        ex.origin_note = (f"values first differ in {origin} (capture-only: a swap cannot inject it); "
                          f"the injectable stage is {injectable(origin)}")
    elif origin and step0.first_divergence and origin != step0.first_divergence:
        ex.origin_note = (f"values first differ at {origin} (bit for bit, within profile {profile}); "
                          f"profile {profile} first fails at {step0.first_divergence}")
    if step0.final_match and not step0.differing:
        ex.converged, ex.stop_reason = True, "no stage differs under the profile: nothing to explain"
        return ex
    if step0.final_match:
        ex.converged = True
        ex.stop_reason = ("the final index artifacts already match under the profile; "
                          f"other stages differ: {', '.join(step0.differing)}")
        return ex

    problem = replay_problem(tap_b)
    if problem:
        ex.error = f"cannot replay B: {problem}"
        ex.needs = ("the stage chain needs B replayable: B's manifest must carry a replay record "
                    "(interpreter, argv, working directory; written by this colbert-tap's COLBERT_TAP=save) "
                    "and that interpreter must still exist with colbert-tap installed; A needs only its "
                    "saved artifacts.")
        ex.stop_reason = "B cannot be replayed"
        return ex

    injected: list[str] = []
    prev = step0
    while True:
        # stages upstream of an injected one are B's own computation and differ by construction
        nxt = first_exact(report.rows, injectable_only=True, exclude=upstream_of(injected))
        if nxt is None:
            ex.stop_reason = "the final index artifacts differ but no injectable stage differs bit for bit"
            break
        nxt = injectable(nxt) or nxt
        if nxt in injected:
            ex.stop_reason = (f"{nxt} still differs although A's value was injected: something in B's run "
                              "changes it after the injection point")
            break
        if len(ex.steps) - 1 >= max_steps:
            ex.stop_reason = f"stopped after --max-steps {max_steps} replays"
            break
        injected = injected + [nxt]
        i = len(ex.steps)
        folder = os.path.join(work, f"step{i}")
        step = Step(step=i, injected=list(injected), added=[nxt], tap=os.path.join(folder, "tap"),
                    log=os.path.join(folder, "replay.log"))
        done = _load_done(folder, injected, tap_a, tap_b)
        if done is not None:
            step.reused, step.seconds = True, 0.0
            notify("reused", {"step": i, "injected": injected, "folder": folder})
        else:
            if os.path.exists(folder):
                shutil.rmtree(folder)
            os.makedirs(folder)
            notify("replay", {"step": i, "injected": injected, "folder": folder})
            try:
                r = replay(tap_b, step.tap, swap=tap_a, only=",".join(injected), index=os.path.join(folder, "index"),
                           log_path=step.log, timeout=timeout)
            except ReplayError as e:
                step.error = str(e)
                ex.steps.append(step)
                ex.error = f"step {i}: {e}"
                ex.stop_reason = f"the replay of step {i} failed (log: {step.log})"
                notify("failed", {"step": i, "error": str(e)})
                break
            step.seconds = r.seconds
        notify("compare", {"what": f"A vs step {i}"})
        report = _compare(tap_a, step.tap, profile)
        judge(report, step, profile, ex.final_stages)
        if done is None:
            with open(os.path.join(folder, DONE), "w", encoding="utf-8") as f:
                json.dump({"injected": injected, "a": tap_a, "b": tap_b, "a_manifest": _digest(tap_a),
                           "b_manifest": _digest(tap_b), "seconds": step.seconds}, f)
        else:
            step.seconds = done.get("seconds")
        ex.steps.append(step)
        notify("step", {"step": i, "injected": injected, "differing": step.differing, "seconds": step.seconds,
                        "reused": step.reused})
        if step.final_match:
            ex.converged = True
            ex.stop_reason = f"the final index artifacts match under profile {profile}"
            break
        stuck = [x for x in injected if x in step.exact_differing]
        if stuck:
            ex.stop_reason = (f"{', '.join(stuck)} still differs although A's value was injected: something in "
                              "B's run changes it after the injection point")
            break
        if step.signature() == prev.signature():
            ex.stop_reason = f"injecting {nxt} changed nothing"
            break
        prev = step
    return ex
