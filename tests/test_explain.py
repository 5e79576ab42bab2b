"""`colbert-tap explain A B`: the stage-level causal chain, on tiny real runs (40 passages, one replay ~10 s)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from colbert.cli import main
from colbert.explain.chain import ExplainError, _load_done, explain, final_stages_of, injectable, upstream_of
from colbert.explain.render import render_markdown

pytestmark = pytest.mark.slow

SCRIPT = '''
import sys
from colbert import Indexer
from colbert.infra import ColBERTConfig, Run, RunConfig
ckpt, tsv, root = sys.argv[1], sys.argv[2], sys.argv[3]
with open(tsv, encoding="utf-8") as f:
    passages = [line.rstrip("\\n").split("\\t")[1] for _, line in zip(range(40), f)]
with Run().context(RunConfig(nranks=1, experiment="explain", root=root)):
    config = ColBERTConfig(checkpoint=ckpt, doc_maxlen=64, nbits=2, kmeans_niters=2, index_bsize=16)
    print(Indexer(checkpoint=ckpt, config=config).index(name="r", collection=passages, overwrite=True))
'''

# A user tap standing in for a changed computation: it scales the stages it is told to, but leaves a value
# that a swap injected alone (ctx["tap_source"] == "swap:..."), as a real code change would be overridden.
# Its settings are COLBERT_* variables, so the manifest's replay record carries them into every replay.
PERTURB = '''
import os
from colbert.tap import ArtifactTap

class PerturbTap(ArtifactTap):
    def __init__(self):
        self.stages = set(os.environ.get("COLBERT_TEST_PERTURB_STAGES", "local_sample_embs").split(","))
        self.scale = float(os.environ.get("COLBERT_TEST_PERTURB", "0.05"))
        self.stubborn = os.environ.get("COLBERT_TEST_PERTURB_SWAPPED") == "1"
    def wants(self, stage):
        return stage in self.stages
    def may_replace(self, stage):
        return stage in self.stages
    def on_artifact(self, stage, value, ctx):
        if stage not in self.stages:
            return value
        if str(ctx.get("tap_source", "")).startswith("swap:") and not self.stubborn:
            return value
        return value * (1 + self.scale)
'''

# Imported at interpreter start-up from B's PYTHONPATH: a changed op in B's encoder.
GELU = '''
import os
if os.environ.get("COLBERT_TEST_GELU"):
    import torch.nn.functional as F
    _gelu, _scale = F.gelu, 1 + float(os.environ["COLBERT_TEST_GELU"])
    F.gelu = lambda x, *a, **k: _gelu(x, *a, **k) * _scale
'''

# A changed op outside the encoder: F.normalize on 2-D inputs (the k-means centroids; the encoder's are 3-D)
# one ulp up, as a kernel that rounds its last bit differently would give.
NORMALIZE = '''
import os
if os.environ.get("COLBERT_TEST_NORMALIZE"):
    import torch
    import torch.nn.functional as F
    _normalize = F.normalize
    def normalize(x, *a, **k):
        out = _normalize(x, *a, **k)
        return torch.nextafter(out, torch.full_like(out, float("inf"))) if out.dim() == 2 else out
    F.normalize = normalize
'''

TSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colbert", "data", "vaswani",
                   "collection.tsv")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_")}
    env.update(HF_HUB_OFFLINE="1", COLBERT_TAP_QUIET="1", **extra)
    return env


@pytest.fixture(scope="module")
def lab(colbert_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("explain")
    (work / "index.py").write_text(SCRIPT)
    (work / "taps").mkdir()
    (work / "taps" / "perturb_tap.py").write_text(PERTURB)

    def make(name, **env):
        tap = work / name
        env["COLBERT_TAP"] = env.get("COLBERT_TAP", "") + f"save:{tap}"
        proc = subprocess.run([sys.executable, "index.py", colbert_checkpoint, TSV, f"exp_{name}"], cwd=work,
                              env=_env(**env),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return str(tap)

    def perturbed(name, **env):
        return make(name, PYTHONPATH=str(work / "taps"), COLBERT_TAP="perturb_tap:PerturbTap,", **env)

    return work, make, perturbed


@pytest.fixture(scope="module")
def run_a(lab):
    return lab[1]("A", COLBERT_TAP_LAYERS="1")


@pytest.fixture(scope="module")
def run_b(lab):
    """local_sample_embs scaled by 1 + 2e-6: inside allclose's tolerance, but the fp16 sample moves."""
    return lab[2]("B", COLBERT_TEST_PERTURB="2e-6")


@pytest.fixture(scope="module")
def explained_b(lab, run_a, run_b):
    """explain(A, B) once, into a work folder the CLI test then reuses."""
    work = lab[0] / "work_AB"
    return explain(run_a, run_b, work=str(work)), work


def test_registry_facts_used_for_the_chain():
    assert injectable("encoder_layers") == "batches"  # capture-only: the nearest injectable stage downstream
    assert injectable("local_sample_embs") == "local_sample_embs"
    assert {"D", "batches", "encoder_layers"} <= upstream_of(["local_sample_embs"])
    assert "embs" not in upstream_of(["local_sample_embs"])
    final = final_stages_of(None)  # the index file names compare knows
    assert {"centroids", "codes", "residuals", "doclens", "pid_ivf", "bucket_cutoffs"} <= set(final)
    assert "sample" not in final and "ivf" not in final


def test_user_tap_on_local_sample_embs(explained_b, run_a):
    ex, _ = explained_b
    # the profile first fails after the fp16 rounding, but the values first moved at local_sample_embs
    assert ex.first_divergence == "sample"
    assert ex.first_divergence_exact == "local_sample_embs"
    assert "local_sample_embs" in ex.steps[0].matching and "local_sample_embs" in ex.steps[0].exact_differing
    assert "codes" in ex.steps[0].differing or "residuals" in ex.steps[0].differing
    assert [s.injected for s in ex.chain] == [["local_sample_embs"]]
    assert ex.converged and ex.root_stages == ["local_sample_embs"] and ex.exit_code == 0
    step = ex.chain[0]
    assert step.differing == [] and step.final_match and not step.reused
    assert set(ex.final_stages) <= set(step.matching)
    # the replay kept B's own tap (its PYTHONPATH and COLBERT_* came from B's manifest) and injected only one stage
    log = open(step.log).read()
    assert "perturb_tap:PerturbTap" in log and f"swap:{run_a}" in log
    manifest = json.loads(open(os.path.join(step.tap, "manifest.json")).read())["artifacts"]
    assert [n for n, e in manifest.items() if (e.get("source") or "").startswith("swap:")] == ["local_sample_embs.pt"]
    md = render_markdown(ex)
    assert "| 1 | local_sample_embs |" in md and "root stages: `local_sample_embs`" in md
    # the perturbation is a tap after the encoder: probed in both installs, every module call is identical
    assert ex.modules is not None and ex.modules["first"] is None and ex.modules["batches_compared"] >= 1
    assert "bit-identical in both installs" in md and "Below the stage level" in md
    assert "Not implemented yet: op level for root stages outside the encoder that the registry cannot recompute" in md


def test_cli_json_reuses_the_complete_step(explained_b, run_a, run_b, capsys):
    ex, work = explained_b
    log = work / "step1" / "replay.log"
    mtime = log.stat().st_mtime_ns
    assert main(["explain", run_a, run_b, "--work", str(work), "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert log.stat().st_mtime_ns == mtime and "reusing the complete replay" in captured.err
    assert out["chain"][0]["reused"] is True and out["chain"][0]["seconds"] == pytest.approx(ex.chain[0].seconds)
    assert out["root_stages"] == ["local_sample_embs"] and out["converged"] is True
    assert out["first_divergence"] == "sample" and out["first_divergence_exact"] == "local_sample_embs"
    # below the stage level: the encoder is identical in both installs, so no module and no op is listed
    assert out["module_level"]["first"] is None and out["modules"] == [] and out["ops"] == []
    # B's PYTHONPATH differs (its user tap), so both sides ran the shape study: they agree at every shape
    assert out["shape_sensitivity"] and all(v["installs_agree"] is True for v in out["shape_sensitivity"])
    from colbert.explain.chain import NOT_IMPLEMENTED
    assert out["not_implemented"] == NOT_IMPLEMENTED and "k-means itself" in out["not_implemented"][0]
    c = out["chain"][0]
    assert c["injected"] == ["local_sample_embs"] and c["differing"] == [] and "codes" in c["matching"]
    assert out["initial"]["max_abs"]["sample"] > 0
    # a marker from another pair of runs (B's manifest changed) is not reused
    done = json.loads((work / "step1" / "done.json").read_text())
    assert _load_done(str(work / "step1"), ["local_sample_embs"], run_a, run_b) is not None
    done["b_manifest"] = "something else"
    (work / "step1" / "done.json").write_text(json.dumps(done))
    assert _load_done(str(work / "step1"), ["local_sample_embs"], run_a, run_b) is None
    assert _load_done(str(work / "step1"), ["embs"], run_a, run_b) is None


def test_encoder_change_needs_batches_then_embs(lab, run_a, tmp_path):
    """B's encoder differs (a sitecustomize on B's PYTHONPATH scales F.gelu by 1 + 1e-3), layers captured in both:
    the origin is the capture-only encoder_layers, the injectable stage is batches; injecting batches switches
    off the encode-once reuse, so the chunk is re-encoded under B and embs must be injected too."""
    site = lab[0] / "gelu"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GELU)
    b = lab[1]("BL", PYTHONPATH=str(site), COLBERT_TEST_GELU="1e-3", COLBERT_TAP_LAYERS="1")
    ex = explain(run_a, b, work=str(tmp_path / "w"))
    assert ex.first_divergence_exact == "encoder_layers" and "the injectable stage is batches" in ex.origin_note
    assert [s.injected for s in ex.chain] == [["batches"], ["batches", "embs"]]
    one, two = ex.chain
    assert {"centroids", "local_sample_embs"} <= set(one.matching) and "embs" in one.differing
    assert "D" in one.one_sided  # chunk-site groups exist only in the replay (reuse off)
    assert ex.converged and ex.root_stages == ["batches", "embs"]
    # B's own layer captures still differ (upstream of the injection); they do not count against convergence
    assert two.differing == ["encoder_layers"] and two.final_match
    assert "encoder_layers (0.0" in render_markdown(ex)


def test_changed_op_outside_the_encoder_is_named(lab, run_a, tmp_path):
    """B's F.normalize differs in the last bit for 2-D inputs: the root stage is postnorm_centroids, whose
    function (kmeans.normalize_centroids) changes its output on A's prenorm centroids, and B's extra op is named."""
    site = lab[0] / "normalize"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NORMALIZE)
    b = lab[1]("BN", PYTHONPATH=str(site), COLBERT_TEST_NORMALIZE="1")
    ex = explain(run_a, b, work=str(tmp_path / "w"))
    assert ex.first_divergence_exact == "postnorm_centroids"
    assert ex.converged and ex.root_stages == ["postnorm_centroids"]
    assert ex.modules is None  # nothing in the encoder to probe
    (fn,) = ex.functions
    assert fn["stage"] == "postnorm_centroids" and fn["function"] == "colbert.indexing.kmeans:normalize_centroids"
    assert fn["same_inputs"]["equal"] is False and fn["same_inputs"]["n_unequal"] > 0
    # A's ops all replay equal (same torch); B's patch runs extra ops after them, nextafter among them
    assert fn["first"] is None and fn["departure"] == {"index": len(fn["sequence_a"]), "a": [],
                                                       "b": fn["sequence_b"][len(fn["sequence_a"]):][:4]}
    assert "aten.nextafter.default" in fn["departure"]["b"]
    doc = ex.to_json()
    assert any(o["op"] == "aten.nextafter.default" and o["stage"] == "postnorm_centroids" for o in doc["ops"])
    text = render_markdown(ex)
    assert "aten.nextafter.default" in text and "normalize_centroids" in text and "aten.linalg_vector_norm" in text


def test_injection_that_changes_nothing_is_not_converged(lab, run_a, tmp_path, capsys):
    b = lab[2]("B4", COLBERT_TEST_PERTURB="0.01", COLBERT_TEST_PERTURB_SWAPPED="1")
    assert main(["explain", run_a, b, "--work", str(tmp_path / "w"), "--format", "markdown", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "Not converged: local_sample_embs still differs although A's value was injected" in out
    assert "| 1 | local_sample_embs |" in out


def test_identical_runs(lab, run_a, tmp_path, capsys):
    a2 = lab[1]("A2", COLBERT_TAP_LAYERS="1")
    assert main(["explain", run_a, a2, "--work", str(tmp_path / "w"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chain"] == [] and out["converged"] is True and out["root_stages"] == []
    assert out["first_divergence"] is None and out["first_divergence_exact"] is None
    assert out["initial"]["differing"] == [] and "codes" in out["initial"]["matching"]
    assert not (tmp_path / "w").exists()  # nothing was replayed


def _copy(run, dest, edit=None, manifest=True):
    shutil.copytree(run, dest)
    path = os.path.join(dest, "manifest.json")
    if not manifest:
        os.remove(path)
    elif edit is not None:
        m = json.loads(open(path).read())
        edit(m)
        with open(path, "w") as f:
            json.dump(m, f)
    return str(dest)


def test_bad_inputs(run_a, run_b, tmp_path, capsys):
    # no replay record: still compared, the first divergence reported, and what is needed said
    old = _copy(run_b, tmp_path / "old", lambda m: m.pop("replay"))
    assert main(["explain", run_a, old, "--work", str(tmp_path / "w1"), "--format", "markdown"]) == 2
    cap = capsys.readouterr()
    assert "First divergence (profile default): `sample`" in cap.out
    assert "has no replay record" in cap.out and "B's manifest must carry a replay record" in cap.out
    assert "has no replay record" in cap.err and not (tmp_path / "w1").exists()
    # a hand-made folder of torch.save'd files (no manifest at all)
    hand = _copy(run_b, tmp_path / "hand", manifest=False)
    ex = explain(run_a, hand, work=str(tmp_path / "w2"))
    assert ex.exit_code == 2 and ex.first_divergence == "sample" and "holds no manifest.json" in ex.error
    # an interpreter that no longer exists: one clear error naming it
    gone = _copy(run_b, tmp_path / "gone", lambda m: m["replay"].update(executable="/nonexistent/bin/python"))
    assert main(["explain", run_a, gone, "--work", str(tmp_path / "w3"), "--format", "json"]) == 2
    cap = capsys.readouterr()
    err = [ln for ln in cap.err.splitlines() if "error" in ln]
    assert len(err) == 1 and "/nonexistent/bin/python" in err[0] and "no longer exists" in err[0]
    assert json.loads(cap.out)["chain"] == []
    # an interpreter without colbert-tap
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'colbert'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    nofork = _copy(run_b, tmp_path / "nofork", lambda m: m["replay"].update(executable=str(fake)))
    ex = explain(run_a, nofork, work=str(tmp_path / "w4"))
    assert ex.exit_code == 2 and str(fake) in ex.error and "cannot import colbert.tap" in ex.error
    # different nbits: refused, naming it
    a4 = _copy(run_a, tmp_path / "a4", lambda m: m["config"].update(nbits=4))
    assert main(["explain", a4, run_b, "--work", str(tmp_path / "w5")]) == 2
    assert "nbits 4 vs 2" in capsys.readouterr().err
    with pytest.raises(ExplainError, match="nbits 4 vs 2"):
        explain(a4, run_b, work=str(tmp_path / "w5"))
    # a replay that crashes: the chain stops there, with the log's path
    crash = _copy(run_b, tmp_path / "crash", lambda m: m["replay"].update(argv=["-c", "raise SystemExit('boom')"]))
    assert main(["explain", run_a, crash, "--work", str(tmp_path / "w6"), "--format", "json", "--no-progress"]) == 2
    out = json.loads(capsys.readouterr().out)
    log = str(tmp_path / "w6" / "step1" / "replay.log")
    assert len(out["chain"]) == 1 and out["chain"][0]["log"] == log and os.path.isfile(log)
    assert log in out["chain"][0]["error"] and "boom" in out["chain"][0]["error"] and out["converged"] is False
    assert not os.path.exists(tmp_path / "w6" / "step1" / "done.json")
    # not a run at all
    assert main(["explain", run_a, str(tmp_path / "nothing-here")]) == 2
    assert "no such folder" in capsys.readouterr().err
