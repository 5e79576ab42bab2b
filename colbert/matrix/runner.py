"""The matrix itself: one run of the same job per environment, then each consecutive pair compared.

Layout of the output folder (see docs/matrix.md, "Running the matrix"):

    envs/NAME/             the virtual environment built for --torch V (NAME = torch-V); envs/NAME/upstream
                           holds colbert-ai 0.2.22 with --with-upstream
    runs/NAME/index        the index the job wrote
    runs/NAME/tap          its tap (COLBERT_TAP=save:runs/NAME/tap)
    runs/NAME/log.txt      everything that was run for NAME, with its output
    runs/NAME/upstream/    colbert-ai's index of the same job (--with-upstream)
    runs/NAME/search/      own.tsv (NAME searching its own index), first.tsv (searching the first run's)
    pairs/A__B.json        the compare report of a consecutive pair
    matrix.md, matrix.json, matrix.png

Resuming: a run is complete when runs/NAME/.complete exists (written last, after the tap and the index)
and records the same job; a complete run, environment or search is reused, never redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

from colbert.indexing.index_files import METADATA, PLAN
from colbert.matrix import envs
from colbert.matrix.pins import is_tested
from colbert.tap.manifest import atomic_write_bytes

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "jobs", "index_job.py")
SEARCH_JOB = os.path.join(HERE, "jobs", "search_job.py")
# The folder holding the `colbert` package the matrix runs from: what built environments import.
FORK_ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_COLLECTION = os.path.join(os.path.dirname(HERE), "data", "vaswani", "collection.tsv")
PROFILES = ["default", "bnb"]
COMPLETE = ".complete"
TAP_PREFIX = "COLBERT_TAP"
PHASES = ("install", "index", "upstream", "search", "compare")

Progress = Callable[[str, str], None]  # (run name, phase or "done"/"failed"/"reused")


@dataclass
class Target:
    """One run of the matrix: a torch version to build an environment for, or an existing interpreter."""

    name: str
    torch: str | None = None  # --torch V
    python: str | None = None  # --env NAME=PYTHON

    @property
    def kind(self) -> str:
        return "torch" if self.torch else "env"


@dataclass
class Job:
    collection: str = DEFAULT_COLLECTION
    limit: int | None = None
    checkpoint: str | None = None
    config: dict = field(default_factory=dict)
    script: str | None = None  # --script: the user's own indexing script instead of jobs/index_job.py


@dataclass
class SearchSpec:
    queries: str
    qrels: str | None = None
    k: int = 10


@dataclass
class Spec:
    out: str
    targets: list[Target]
    job: Job = field(default_factory=Job)
    with_upstream: bool = False
    search: SearchSpec | None = None
    prune: bool = False
    jobs: int = 1
    installer: envs.Installer = field(default_factory=envs.Installer)
    timeout: float | None = None
    command: str = ""
    fork_path: str | None = None  # --fork-path: also put this source root on PYTHONPATH for --env runs


@dataclass
class RunResult:
    name: str
    kind: str
    torch: str | None  # the version asked for (--torch) or found (--env)
    python: str | None = None
    ok: bool = False
    error: str | None = None
    log: str = ""
    seconds: float | None = None  # the indexing job's wall time
    reused: bool = False
    pythonpath: str | None = None
    colbert: str | None = None  # where `colbert` was imported from
    tested_pins: bool | None = None
    index: str | None = None
    tap: str | None = None
    parity_with_upstream: bool | None = None
    upstream: dict | None = None
    search: dict | None = None
    torch_imported: str | None = None  # torch.__version__ as the interpreter reported it
    phase: str = ""


def parse_targets(torch_versions: list[str], env_specs: list[str], order: list[tuple[str, str]] | None = None
                  ) -> list[Target]:
    """order: [("torch", "2.1.0"), ("env", "a=/py"), ...] as given on the command line (wins when given)."""
    items = order if order is not None else [("torch", v) for v in torch_versions] + [("env", e) for e in env_specs]
    out: list[Target] = []
    for kind, value in items:
        if kind == "torch":
            v = value.strip()
            if not v:
                continue
            out.append(Target(f"torch-{v}", torch=v))
        else:
            name, sep, py = value.partition("=")
            if not sep or not name.strip() or not py.strip():
                raise ValueError(f"--env {value!r}: expected NAME=/path/to/python")
            if "/" in name or name.strip() in (".", ".."):
                raise ValueError(f"--env {value!r}: NAME must not contain '/'")
            out.append(Target(name.strip(), python=os.path.abspath(os.path.expanduser(py.strip()))))
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"run names must be unique; given twice: {', '.join(dup)}")
    if not out:
        raise ValueError("nothing to run: give --torch V[,V...] and/or --env NAME=PYTHON")
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _write_json(path: str, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _note(log_path: str, text: str) -> None:
    log.info(text)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"[matrix {time.strftime('%H:%M:%S')}] {text}\n")


def child_env(pythonpath: str | None, tap: str | None, inherit_pythonpath: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(TAP_PREFIX)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    elif not inherit_pythonpath:
        env.pop("PYTHONPATH", None)
    if tap:
        env["COLBERT_TAP"] = tap
    return env


class Matrix:
    def __init__(self, spec: Spec, progress: Progress | None = None):
        self.spec = spec
        self.out = os.path.abspath(spec.out)
        self.progress = progress or (lambda name, phase: None)
        self.results: dict[str, RunResult] = {}

    # -- paths --
    def env_dir(self, t: Target) -> str:
        return os.path.join(self.out, "envs", t.name)

    def run_dir(self, t: Target) -> str:
        return os.path.join(self.out, "runs", t.name)

    def _phase(self, r: RunResult, phase: str) -> None:
        r.phase = phase
        self.progress(r.name, phase)

    # -- the whole thing --
    def run(self) -> dict:
        t0 = time.time()
        os.makedirs(os.path.join(self.out, "runs"), exist_ok=True)
        if self.spec.job.script is None and not self.spec.job.checkpoint:
            self.spec.job.checkpoint = self.default_checkpoint()
        targets = self.spec.targets
        for t in targets:
            self.results[t.name] = RunResult(t.name, t.kind, t.torch, python=t.python,
                                             log=os.path.join(self.run_dir(t), "log.txt"),
                                             tested_pins=is_tested(t.torch) if t.torch else None)
        with ThreadPoolExecutor(max_workers=max(1, self.spec.jobs)) as pool:
            list(pool.map(self._first_pass, targets))
            if self.spec.search:
                list(pool.map(self._search_first, targets))
        for t in targets:
            self._finish(t)
        pairs = [self._compare(a, b) for a, b in zip(targets, targets[1:])]
        from colbert.matrix.study import search_study

        search = search_study(self, targets) if self.spec.search else None
        from colbert.matrix.render import machine_facts, write_outputs

        data = {
            "format": "colbert-tap-matrix/1",
            "command": self.spec.command,
            "out": self.out,
            "wall_seconds": round(time.time() - t0, 2),
            "machine": machine_facts(),
            "fork_root": FORK_ROOT,
            "profiles": PROFILES,
            "job": {"script": self.spec.job.script, "collection": self.spec.job.collection,
                    "limit": self.spec.job.limit, "checkpoint": self.spec.job.checkpoint,
                    "config": self.spec.job.config},
            "runs": [self._run_json(self.results[t.name]) for t in targets],
            "pairs": pairs,
            "search": search,
        }
        write_outputs(self.out, data)
        return data

    def default_checkpoint(self) -> str:
        ckpt = os.path.join(self.out, "checkpoint")
        if not os.path.exists(os.path.join(ckpt, "artifact.metadata")):
            from colbert.modeling.make_checkpoint import make_checkpoint

            log.info("making the MiniLM checkpoint in %s", ckpt)
            make_checkpoint("minilm", ckpt, dim=96, seed=12345, overwrite=True)
        return ckpt

    @staticmethod
    def _run_json(r: RunResult) -> dict:
        d = asdict(r)
        d.pop("phase", None)
        return d

    # -- one target: environment, probe, index, upstream, own search --
    def _first_pass(self, t: Target) -> None:
        r = self.results[t.name]
        os.makedirs(self.run_dir(t), exist_ok=True)
        try:
            if self._reuse_without_env(t, r):
                self.progress(t.name, "reused")
                return
            python, pythonpath = self._environment(t, r)
            self._index(t, r, python, pythonpath)
            if self.spec.with_upstream:
                self._upstream(t, r, python)
            if self.spec.search:
                self._search(t, r, python, pythonpath, t)
            r.ok = r.error is None
        except Exception as e:  # one version failing never stops the others
            r.ok = False
            r.error = r.error or f"{type(e).__name__}: {e}"
            log.warning("%s failed in phase %s: %s (log: %s)", t.name, r.phase, r.error, r.log)
            with open(r.log, "a", encoding="utf-8") as f:
                f.write(f"[matrix] FAILED in phase {r.phase}: {r.error}\n")
        if not self.spec.search:
            self._prune(t)
        self.progress(t.name, "failed" if not r.ok else "indexed")

    def _reuse_without_env(self, t: Target, r: RunResult) -> bool:
        """A --torch run whose environment is gone (--prune) but whose every result is complete is
        reused as it is: nothing needs the environment again."""
        if t.kind != "torch" or os.path.exists(envs.env_marker(self.env_dir(t), self.spec.installer, t.torch)):
            return False
        python = envs.env_python(self.env_dir(t))
        done = self._complete(self.run_dir(t), self._job_key(python, "ours"))
        if not done:
            return False
        up = None
        if self.spec.with_upstream:
            up = self._complete(os.path.join(self.run_dir(t), "upstream"), self._job_key(python, "upstream"))
            if not up:
                return False
        if self.spec.search:
            owners = [t] + ([self.spec.targets[0]] if t is not self.spec.targets[0] else [])
            if not all(self._search_done(t, python, o) for o in owners):
                return False
        _note(r.log, f"{t.name}: environment {self.env_dir(t)} is gone (pruned) but every result is complete: "
                     "reused without rebuilding it")
        r.python, r.pythonpath, r.torch_imported = python, FORK_ROOT, done.get("torch")
        r.reused, r.index, r.tap, r.seconds = True, done["index"], done.get("tap"), done.get("seconds")
        if up:
            r.upstream = {"ok": True, "error": None, "index": up["index"], "seconds": up.get("seconds"), "reused": True}
        if self.spec.search:
            r.search = {"own": os.path.join(self.run_dir(t), "search", "own.tsv")}
            if t is not self.spec.targets[0]:
                r.search["first"] = os.path.join(self.run_dir(t), "search", "first.tsv")
        r.ok = True
        return True

    def _environment(self, t: Target, r: RunResult) -> tuple[str, str | None]:
        self._phase(r, "install")
        if t.kind == "torch":
            python, _ = envs.ensure_env(self.env_dir(t), t.torch, self.spec.installer, r.log)
            pythonpath = FORK_ROOT
        else:
            python, pythonpath = t.python, self.spec.fork_path
            if not os.path.exists(python):
                raise FileNotFoundError(f"interpreter {python} does not exist")
        r.python, r.pythonpath = python, pythonpath
        _note(r.log, f"{t.name}: python {python}; PYTHONPATH="
                     + (pythonpath if pythonpath is not None else "(inherited, not set by the matrix)"))
        info = envs.probe(python, child_env(pythonpath, None, t.kind == "env"), r.log)
        if "torch" not in info:
            raise RuntimeError(f"{python} cannot import torch: {info.get('torch_error')}")
        found = info["torch"]
        if t.kind == "torch" and found.split("+")[0] != t.torch.split("+")[0]:
            raise RuntimeError(f"{python} imports torch {found}, expected {t.torch}")
        if "colbert" not in info:
            raise RuntimeError(f"{python} cannot import colbert (the fork is not installed there; "
                               f"{info.get('colbert_error')})")
        if not info.get("fork"):
            raise RuntimeError(f"{python} imports colbert from {info['colbert']}, which is not colbert-tap "
                               "(no colbert.tap)")
        if pythonpath and os.path.realpath(info["colbert"]) != os.path.realpath(os.path.join(pythonpath, "colbert")):
            raise RuntimeError(f"{python} imports colbert from {info['colbert']}, not from the fork {pythonpath}")
        if t.kind == "env":
            r.torch = found
        r.torch_imported = found
        r.colbert = info["colbert"]
        return python, pythonpath

    def _job_key(self, python: str, side: str) -> dict:
        j = self.spec.job
        key = {"side": side, "python": os.path.abspath(python), "config": j.config}
        if j.script:
            key.update(script=os.path.abspath(j.script), script_hash=_file_hash(j.script), checkpoint=j.checkpoint)
        else:
            key.update(collection=os.path.abspath(j.collection), limit=j.limit, checkpoint=j.checkpoint,
                       job_hash=_file_hash(JOB))
        return key

    def _complete(self, folder: str, key: dict) -> dict | None:
        m = _read_json(os.path.join(folder, COMPLETE))
        if not m or m.get("key") != _hash(key):
            return None
        idx = m.get("index")
        if not idx or not os.path.exists(os.path.join(idx, METADATA)):
            return None
        if m.get("tap") and not os.path.exists(os.path.join(m["tap"], "manifest.json")):
            return None
        return m

    def _index(self, t: Target, r: RunResult, python: str, pythonpath: str | None) -> None:
        self._phase(r, "index")
        folder = self.run_dir(t)
        key = self._job_key(python, "ours")
        done = self._complete(folder, key)
        tap = os.path.join(folder, "tap")
        if done:
            _note(r.log, f"{t.name}: complete run reused ({os.path.join(folder, COMPLETE)})")
            r.reused, r.index, r.tap, r.seconds = True, done["index"], done.get("tap"), done.get("seconds")
            return
        for stale in (COMPLETE, "index", "tap", "result.json", "job.json", "experiments"):
            p = os.path.join(folder, stale)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.unlink(p)
        env = child_env(pythonpath, f"save:{tap}", t.kind == "env")
        index, seconds = self._run_job(r, python, env, folder)
        manifest = _read_json(os.path.join(tap, "manifest.json"))
        if not manifest or manifest.get("status") != "complete":
            raise RuntimeError(f"the job finished but its tap {tap} is not complete "
                               f"(status {manifest.get('status') if manifest else 'missing'})")
        if index is None:
            index = manifest.get("index_path")
            if index and not os.path.isabs(index):  # a script's relative root: relative to its cwd
                index = os.path.normpath(os.path.join(folder, index))
        if not index or not os.path.exists(os.path.join(index, METADATA)):
            raise RuntimeError(f"the job finished but wrote no index (looked for {index})")
        r.index, r.tap, r.seconds = index, tap, seconds
        _write_json(os.path.join(folder, COMPLETE), {"key": _hash(key), "job": key, "index": index, "tap": tap,
                                                     "seconds": seconds, "torch": r.torch_imported,
                                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _run_job(self, r: RunResult, python: str, env: dict, folder: str) -> tuple[str | None, float]:
        """Run the indexing job (ours or upstream) in folder; (index path if known, seconds)."""
        j = self.spec.job
        t0 = time.time()
        if j.script:
            if j.checkpoint:
                env["CKPT"] = j.checkpoint
            cmd = [python, os.path.abspath(j.script)]
            result = None
        else:
            result = os.path.join(folder, "result.json")
            spec = {"checkpoint": j.checkpoint, "collection": os.path.abspath(j.collection), "limit": j.limit,
                    "root": folder, "config": j.config, "result": result}
            spec_path = os.path.join(folder, "job.json")
            _write_json(spec_path, spec)
            cmd = [python, JOB, spec_path]
        rc, out = envs.run_logged(cmd, r.log, env=env, cwd=folder, timeout=self.spec.timeout)
        seconds = round(time.time() - t0, 2)
        if rc != 0:
            raise RuntimeError(f"the indexing job exited with {rc}: {envs.output_tail(out)}")
        if result is None:
            return None, seconds
        data = _read_json(result)
        if not data:
            raise RuntimeError(f"the indexing job exited 0 but wrote no {result}")
        return data["index_path"], round(float(data.get("seconds", seconds)), 2)

    def _upstream(self, t: Target, r: RunResult, python: str) -> None:
        self._phase(r, "upstream")
        up = {"ok": False, "error": None, "index": None, "seconds": None}
        r.upstream = up
        try:
            target, _ = envs.ensure_upstream(self.env_dir(t), python, self.spec.installer, r.log)
            folder = os.path.join(self.run_dir(t), "upstream")
            os.makedirs(folder, exist_ok=True)
            key = self._job_key(python, "upstream")
            done = self._complete(folder, key)
            env = child_env(target, None, False)
            if done:
                _note(r.log, f"{t.name}: complete upstream run reused")
                up.update(ok=True, index=done["index"], seconds=done.get("seconds"), reused=True)
            else:
                info = envs.probe(python, env, r.log)
                if os.path.realpath(info.get("colbert", "")) != os.path.realpath(os.path.join(target, "colbert")):
                    raise RuntimeError(f"upstream run imports colbert from {info.get('colbert')}, not {target}")
                for stale in (COMPLETE, "index", "result.json"):
                    p = os.path.join(folder, stale)
                    if os.path.isdir(p):
                        shutil.rmtree(p)
                    elif os.path.exists(p):
                        os.unlink(p)
                index, seconds = self._run_job(r, python, env, folder)
                if index is None:
                    index = _find_index(folder)
                _write_json(os.path.join(folder, COMPLETE), {"key": _hash(key), "job": key, "index": index,
                                                             "seconds": seconds})
                up.update(ok=True, index=index, seconds=seconds)
        except Exception as e:
            up["error"] = f"{type(e).__name__}: {e}"
            _note(r.log, f"{t.name}: upstream failed: {up['error']}")

    def _search_key(self, t: Target, python: str, owner: Target) -> tuple[str, str, str | None]:
        """(ranking path, its key, the index searched) for t searching owner's index."""
        s = self.spec.search
        which = "own" if owner is t else "first"
        out = os.path.join(self.run_dir(t), "search", f"{which}.tsv")
        mark = _read_json(os.path.join(self.run_dir(owner), COMPLETE)) or {}
        key = _hash({"queries": _file_hash(s.queries), "k": s.k, "index": mark.get("index"),
                     "index_run": mark.get("key"), "python": os.path.abspath(python),
                     "checkpoint": self.spec.job.checkpoint})
        return out, key, mark.get("index")

    def _search_done(self, t: Target, python: str, owner: Target) -> bool:
        out, key, _ = self._search_key(t, python, owner)
        return os.path.exists(out) and (_read_json(out + ".done") or {}).get("key") == key

    def _search(self, t: Target, r: RunResult, python: str, pythonpath: str | None, owner: Target) -> str:
        self._phase(r, "search")
        which = "own" if owner is t else "first"
        out, key, index = self._search_key(t, python, owner)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        s = self.spec.search
        folder = os.path.dirname(out)
        marker = out + ".done"
        if os.path.exists(out) and (_read_json(marker) or {}).get("key") == key:
            _note(r.log, f"{t.name}: search of {index} reused ({out})")
        else:
            spec = {"index": index, "checkpoint": self.spec.job.checkpoint, "queries": os.path.abspath(s.queries),
                    "k": s.k, "out": out}
            spec_path = os.path.join(folder, f"{which}.json")
            _write_json(spec_path, spec)
            env = child_env(pythonpath, None, t.kind == "env")
            rc, text = envs.run_logged([python, SEARCH_JOB, spec_path], r.log, env=env, cwd=folder,
                                       timeout=self.spec.timeout)
            if rc != 0:
                raise RuntimeError(f"searching {index} exited with {rc}: {envs.output_tail(text)}")
            _write_json(marker, {"key": key})
        r.search = dict(r.search or {}, **{which: out})
        return out

    def _search_first(self, t: Target) -> None:
        r = self.results[t.name]
        try:
            self._search_first_index(t, r)
        finally:
            self._prune(t)

    def _search_first_index(self, t: Target, r: RunResult) -> None:
        first = self.results[self.spec.targets[0].name]
        if not r.ok:
            return
        if not first.ok or not first.index:
            r.search = dict(r.search or {}, first=None)
            return
        if t is self.spec.targets[0]:
            r.search = dict(r.search or {}, first=(r.search or {}).get("own"))
            return
        try:
            self._search(t, r, r.python, r.pythonpath, self.spec.targets[0])
        except Exception as e:
            r.ok = False
            r.error = f"{type(e).__name__}: {e}"
            with open(r.log, "a", encoding="utf-8") as f:
                f.write(f"[matrix] FAILED in phase search: {r.error}\n")
            self.progress(t.name, "failed")

    def _prune(self, t: Target) -> None:
        """--prune: the environment goes once nothing needs it again (the runs stay)."""
        if not self.spec.prune:
            return
        # an --env interpreter is never ours to delete: only the colbert-ai folder the matrix put there
        folder = self.env_dir(t) if t.kind == "torch" else envs.upstream_dir(self.env_dir(t))
        if os.path.isdir(folder):
            shutil.rmtree(folder)
            _note(self.results[t.name].log, f"{t.name}: environment {folder} pruned")

    def _finish(self, t: Target) -> None:
        r = self.results[t.name]
        if self.spec.with_upstream and r.ok and r.upstream and r.upstream.get("ok"):
            self.progress(t.name, "compare")
            r.parity_with_upstream = self._parity(r)
        self.progress(t.name, "done" if r.ok else "failed")

    def _parity(self, r: RunResult) -> bool | None:
        from colbert.compare.engine import Options, compare_runs
        from colbert.compare.tolerances import resolve_profiles

        try:
            report = compare_runs(r.index, r.upstream["index"],
                                  Options(profiles=resolve_profiles(["exact"]), progress=False))
        except Exception as e:
            r.upstream["error"] = f"parity comparison failed: {type(e).__name__}: {e}"
            return None
        differing = [row.name for row in report.rows if row.status != "match"]
        r.upstream["rows"] = len(report.rows)
        r.upstream["differing"] = differing[:50]
        return not differing and report.errors == 0

    # -- a consecutive pair --
    def _compare(self, a: Target, b: Target) -> dict:
        ra, rb = self.results[a.name], self.results[b.name]
        pair = {"a": a.name, "b": b.name, "shapes_match": None, "default": None, "bnb": None,
                "first_divergence": None, "first_value_divergence": None, "error": None, "report": None,
                "stages": {}}
        failed = [x.name for x in (ra, rb) if not x.ok]
        if failed:
            pair["error"] = f"not compared: {', '.join(failed)} failed"
            return pair
        for x in (ra, rb):
            self.progress(x.name, "compare")
        folder = os.path.join(self.out, "pairs")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{a.name}__{b.name}.json")
        key = _hash([_read_json(os.path.join(self.run_dir(x), COMPLETE)) for x in (a, b)] + [_compare_code_hash()])
        cached = _read_json(path)
        if cached and cached.get("key") == key and cached.get("summary"):
            log.info("pair %s vs %s: comparison reused (%s)", a.name, b.name, path)
            pair.update(cached["summary"], report=path)
        else:
            from colbert.compare.engine import Options, compare_runs
            from colbert.compare.tolerances import resolve_profiles

            try:
                report = compare_runs(ra.tap, rb.tap, Options(profiles=resolve_profiles(PROFILES), progress=False))
            except Exception as e:
                pair["error"] = f"comparison failed: {type(e).__name__}: {e}"
                return pair
            summary = summarize_report(report)
            _write_json(path, {"key": key, "summary": summary, "report": report.to_json()})
            pair.update(summary, report=path)
        for x in (ra, rb):
            self.progress(x.name, "done")
        return pair


def _compare_code_hash() -> str:
    """Changes when the compare engine or the stage registry does, so a cached pair summary is redone."""
    import colbert.compare
    from colbert.tap import stages

    folder = os.path.dirname(os.path.abspath(colbert.compare.__file__))
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))
    return _hash([_file_hash(f) for f in files + [os.path.abspath(stages.__file__), os.path.abspath(__file__)]])


def _find_index(folder: str) -> str | None:
    """The one index folder (metadata.json + plan.json) under folder, for --script runs."""
    found = []
    for root, _dirs, files in os.walk(folder):
        if METADATA in files and PLAN in files:
            found.append(root)
    if len(found) != 1:
        raise RuntimeError(f"expected one index under {folder}, found {len(found)}: {found[:5]}")
    return found[0]


def _worst(statuses: list[str]) -> str:
    for s in ("error", "only_a", "only_b", "differs"):
        if s in statuses:
            return s
    return "match"


def summarize_report(report) -> dict:
    """What the matrix keeps of a compare Report: N/M counts, first divergence, one entry per stage."""
    rows = report.rows
    m = len(rows)
    out = {
        "shapes_match": [sum(r.shape_a == r.shape_b for r in rows), m],
        "default": [sum(r.verdicts.get("default") is True for r in rows), m],
        "bnb": [sum(r.verdicts.get("bnb") is True for r in rows), m],
        "first_divergence": report.first_divergence,
        "first_value_divergence": None if report.first_value_divergent_row is None
        else report.first_value_divergent_row.stage,
        "verdict": report.verdict_line(),
    }
    stages: dict[str, dict] = {}
    for r in rows:
        if not r.stage:
            continue
        s = stages.setdefault(r.stage, {"rows": 0, "statuses": [], "default": True, "bnb": True, "max_abs": None,
                                        "exact": True})
        s["rows"] += 1
        s["statuses"].append(r.status)
        s["default"] = s["default"] and r.verdicts.get("default") is True
        s["bnb"] = s["bnb"] and r.verdicts.get("bnb") is True
        if r.max_abs is not None:
            v = float(r.max_abs)
            s["max_abs"] = v if s["max_abs"] is None else max(s["max_abs"], v)
        exact = r.status == "match" and (r.n_diff == 0 or (r.n_diff is None and not r.max_abs))
        s["exact"] = s["exact"] and exact
    for s in stages.values():
        s["status"] = _worst(s.pop("statuses"))
        if s["max_abs"] == float("inf"):
            s["max_abs"] = "inf"
    out["stages"] = stages
    return out
