"""`colbert-tap replay`: a saved run re-run unattended from its manifest, with another tap."""

import json
import os
import subprocess
import sys

import pytest
import torch

from colbert.cli import main
from colbert.compare.engine import compare_runs
from colbert.tap.replay import ReplayError, replay

pytestmark = pytest.mark.slow

SCRIPT = '''
import os, sys
from colbert import Indexer
from colbert.infra import ColBERTConfig, Run, RunConfig
ckpt, tsv, root = sys.argv[1], sys.argv[2], sys.argv[3]
with open(tsv, encoding="utf-8") as f:
    passages = [line.rstrip("\\n").split("\\t")[1] for _, line in zip(range(40), f)]
with Run().context(RunConfig(nranks=1, experiment="replay", root=root)):
    config = ColBERTConfig(checkpoint=ckpt, doc_maxlen=64, nbits=2, kmeans_niters=2, index_bsize=16)
    print(Indexer(checkpoint=ckpt, config=config).index(name="r", collection=passages, overwrite=True))
'''

TSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colbert", "data", "vaswani",
                   "collection.tsv")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_")}
    env.update(HF_HUB_OFFLINE="1", COLBERT_TAP_QUIET="1", **extra)
    return env


@pytest.fixture(scope="module")
def original(colbert_checkpoint, tmp_path_factory):
    """A run made by `python index.py` (relative script path, its own cwd) with COLBERT_TAP=save."""
    work = tmp_path_factory.mktemp("replay_orig")
    (work / "index.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "index.py", colbert_checkpoint, TSV, "exp"], cwd=work,
                          env=_env(COLBERT_TAP=f"save:{work / 'tap'}"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = os.path.join(work, proc.stdout.strip().splitlines()[-1])  # the script's root is relative
    return work, index


def test_manifest_records_how_to_rerun(original):
    work, index = original
    rec = json.loads((work / "tap" / "manifest.json").read_text())["replay"]
    assert rec["executable"] == sys.executable
    assert rec["argv"][0] == "index.py" and rec["cwd"] == str(work)
    assert rec["env"]["COLBERT_TAP"] == f"save:{work / 'tap'}" and rec["env"]["HF_HUB_OFFLINE"] == "1"


def test_replay_reruns_without_touching_the_original(original, tmp_path):
    work, index = original
    before = {f: os.stat(os.path.join(index, f)).st_mtime_ns for f in os.listdir(index)}
    r = replay(str(work / "tap"), str(tmp_path / "B"))
    assert r.index == str(tmp_path / "B.index") and os.path.exists(os.path.join(r.index, "metadata.json"))
    assert {f: os.stat(os.path.join(index, f)).st_mtime_ns for f in os.listdir(index)} == before
    report = compare_runs(str(work / "tap"), r.tap)
    assert report.exit_code == 0, report.verdict_line()
    assert len(report.rows) > 10
    assert "index.py" in open(r.log).read()


def test_swap_only_injects_one_stage_and_saves_everything(original, tmp_path):
    work, _ = original
    # A donor whose local_sample_embs differ: every downstream stage must move, and only that stage is injected.
    donor = tmp_path / "donor"
    donor.mkdir()
    embs = torch.load(work / "tap" / "local_sample_embs.pt", weights_only=True)
    torch.save(embs + torch.randn_like(embs.float()).to(embs.dtype) * 0.05, donor / "local_sample_embs.pt")
    torch.save(torch.load(work / "tap" / "embs_0.pt", weights_only=True), donor / "embs_0.pt")
    r = replay(str(work / "tap"), str(tmp_path / "C"), swap=str(donor), only="local_sample_embs")
    manifest = json.loads((tmp_path / "C" / "manifest.json").read_text())["artifacts"]
    swapped = sorted(n for n, e in manifest.items() if (e.get("source") or "").startswith("swap:"))
    assert swapped == ["local_sample_embs.pt"]  # embs_0.pt was in the donor too, but not asked for
    assert {"sample_pids.pt", "postnorm_centroids.pt", "embs_0.pt", "codes_0.pt"} <= set(manifest)
    report = compare_runs(str(work / "tap"), r.tap)
    assert report.first_divergence == "local_sample_embs"


def test_cli_replay_of_a_colbert_tap_index_run(colbert_checkpoint, tmp_path, capsys):
    env = _env(COLBERT_TAP="save")
    proc = subprocess.run([sys.executable, "-m", "colbert.cli", "index", "--checkpoint", colbert_checkpoint,
                           "--collection", TSV, "--root", str(tmp_path / "exp"), "--name", "cli", "--limit", "30",
                           "--nbits", "2", "--kmeans-niters", "2", "--doc-maxlen", "48"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = tmp_path / "exp" / "default" / "indexes" / "cli"
    assert main(["replay", str(index), "--save", str(tmp_path / "R"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == str(index / "tap") and out["index"] == str(tmp_path / "R.index")
    assert compare_runs(str(index / "tap"), str(tmp_path / "R")).exit_code == 0


def test_replay_bad_inputs(original, tmp_path, capsys):
    work, _ = original
    # no manifest at all
    assert main(["replay", str(tmp_path), "--save", str(tmp_path / "X")]) == 2
    assert "holds no manifest.json" in capsys.readouterr().err
    # a hand-made folder / older manifest without the replay record
    old = tmp_path / "old"
    old.mkdir()
    m = json.loads((work / "tap" / "manifest.json").read_text())
    del m["replay"]
    (old / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReplayError, match="no replay record"):
        replay(str(old), str(tmp_path / "Y"))
    # an interpreter that no longer exists is named
    gone = tmp_path / "gone"
    gone.mkdir()
    m = json.loads((work / "tap" / "manifest.json").read_text())
    m["replay"]["executable"] = "/nonexistent/bin/python"
    (gone / "manifest.json").write_text(json.dumps(m))
    assert main(["replay", str(gone), "--save", str(tmp_path / "Z")]) == 2
    assert "/nonexistent/bin/python" in capsys.readouterr().err
    # a replay that crashes names its log
    crash = tmp_path / "crash"
    crash.mkdir()
    m = json.loads((work / "tap" / "manifest.json").read_text())
    m["replay"]["argv"] = ["-c", "raise SystemExit('boom')"]
    (crash / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReplayError, match=r"exit code 1 \(log: .*W\.log\): boom"):
        replay(str(crash), str(tmp_path / "W"))
    # an unknown stage in --only, and saving over the run itself
    assert main(["replay", str(work / "tap"), "--save", str(tmp_path / "V"), "--only", "no_such_stage"]) == 2
    assert "no_such_stage" in capsys.readouterr().err
    with pytest.raises(ReplayError, match="is the run being replayed"):
        replay(str(work / "tap"), str(work / "tap"))
    assert not (tmp_path / "X").exists() and not (tmp_path / "Z").exists() and not (tmp_path / "V").exists()
