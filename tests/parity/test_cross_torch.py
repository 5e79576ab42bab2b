"""A tap folder saved under one torch loads for swap and compare under another: torch 2.13 (this
interpreter) and torch 1.13.1 (upstream's pin, the oldest we support; built from colbert/matrix/pins.json).

torch < 2.7 refuses Python sets under weights_only=True, and torch < 2.1 has no torch.load(mmap=);
both directions are exercised here with real indexing runs."""

import json
import os
import subprocess
import sys

import pytest

from index_diff import diff_indexes
from venvs import REPO, ensure_torch_env, run_in

pytestmark = [pytest.mark.parity, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
N = 150
OLD = "1.13.1"


@pytest.fixture(scope="module")
def old_python():
    return ensure_torch_env(OLD)[0]


def _index(python, root, checkpoint, tap: str) -> dict:
    os.makedirs(root, exist_ok=True)
    out = run_in(python, os.path.join(HERE, "index_script.py"), checkpoint, TSV, str(N), str(root), "B",
                 ours=True, cwd=str(root), extra_env={"COLBERT_TAP": tap, "COLBERT_TAP_QUIET": "1"})
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(old_python, colbert_checkpoint, tmp_path_factory):
    """Saved runs under both torches, then each swapped into the other."""
    base = tmp_path_factory.mktemp("cross_torch")
    new_python = sys.executable
    res = {}
    res["new"] = _index(new_python, base / "new", colbert_checkpoint, f"save:{base / 'tap_new'}")
    res["old"] = _index(old_python, base / "old", colbert_checkpoint, f"save:{base / 'tap_old'}")
    res["old_fed_new"] = _index(old_python, base / "old_fed_new", colbert_checkpoint,
                                f"swap:{base / 'tap_new'},save:{base / 'tap_old_fed_new'}")
    res["new_fed_old"] = _index(new_python, base / "new_fed_old", colbert_checkpoint,
                                f"swap:{base / 'tap_old'},save:{base / 'tap_new_fed_old'}")
    return base, res


def test_each_run_used_the_torch_asked_for(runs):
    _, res = runs
    import torch

    assert res["old"]["torch"].startswith(OLD) and res["old_fed_new"]["torch"].startswith(OLD)
    assert res["new"]["torch"] == res["new_fed_old"]["torch"] == torch.__version__


@pytest.mark.parametrize("receiver,donor", [("old_fed_new", "new"), ("new_fed_old", "old")])
def test_swapped_run_writes_the_donors_index(runs, receiver, donor):
    base, res = runs
    assert diff_indexes(res[receiver]["index_path"], res[donor]["index_path"]) == []
    # every artifact the donor saved was injected from its file, sample_pids (a set in the pipeline) included
    # (a swap turns encode-once reuse off, so the receiver also records chunk 0's own encoder batches)
    manifest = json.loads((base / f"tap_{receiver}" / "manifest.json").read_text())
    sources = {name: e.get("source") for name, e in manifest["artifacts"].items()}
    donated = json.loads((base / f"tap_{donor}" / "manifest.json").read_text())["artifacts"]
    assert len(donated) > 20 and "sample_pids.pt" in donated
    not_injected = sorted(n for n in donated if sources.get(n) != f"swap:{base / f'tap_{donor}' / n}")
    assert not_injected == [], not_injected


@pytest.mark.parametrize("which", ["old", "new"])
def test_compare_reads_both_torches_folders(runs, old_python, which):
    base, _ = runs
    python = old_python if which == "old" else sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_TAP")}
    env["PYTHONPATH"] = REPO
    proc = subprocess.run([python, "-m", "colbert.cli", "compare", str(base / "tap_new"), str(base / "tap_old"),
                           "--format", "json", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["total"] > 20 and report["errors"] == 0
    stages = {r["stage"] for r in report["rows"]}
    assert {"sample_pids", "local_sample_embs", "postnorm_centroids", "embs", "codes"} <= stages
    assert all(r["status"] != "error" for r in report["rows"])
