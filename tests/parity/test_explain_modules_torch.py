"""explain's module, shape and op levels across two real installs: this interpreter (torch 2.13) and
torch 1.13.1 (upstream's pin), each encoding the same tokenized batches with the same checkpoint.

Whether the two torches agree bit for bit depends on the CPU; what must hold anywhere: each side ran
its own torch, and a reported module is one whose inputs matched, re-run in 1.13.1 on 2.13's inputs
with the same verdict, with every op of its own replayed. On the development machine (AMD EPYC) the
first difference is embeddings.LayerNorm, and aten.native_layer_norm differs on identical inputs."""

import pytest

from colbert.explain.modules import module_level
from conftest import vaswani_passages
from explain_probe_runs import probe_run, tokenized_batches
from venvs import ensure_torch_env

pytestmark = [pytest.mark.parity, pytest.mark.slow]


def test_module_level_between_torch_2_13_and_1_13_1(colbert_checkpoint, tmp_path):
    old_python = ensure_torch_env("1.13.1")[0]
    batches = tokenized_batches(colbert_checkpoint, vaswani_passages(24), bsize=8, doc_maxlen=96)
    a = probe_run(str(tmp_path / "A"), colbert_checkpoint, batches)
    b = probe_run(str(tmp_path / "B"), colbert_checkpoint, batches, python=old_python)
    r = module_level(a, b, str(tmp_path / "work"), max_batches=2)
    assert r["torch_a"].startswith("2.13.0") and r["torch_b"].startswith("1.13.1")
    assert r["batches_compared"] == 2
    first = r["first"]
    if first is None:
        assert r["batches_differing"] == [] and r["layers"] is None
        return
    assert first["inputs_match"] is True and first["batch"] == r["batches_differing"][0]
    assert r["same_inputs"]["equal"] is False, "the module differs in the natural run, so also on A's inputs"
    op = r["op"]
    assert op["ops_error"] is None and op["ops_recorded"] == len(op["ops"]) >= 1
    assert all(o.get("error") is None for o in op["ops"]), [o for o in op["ops"] if o.get("error")]
    assert op["first"] is not None or not op["same_sequence"] or "no aten op differs" in r["summary"]
    names = [x["module"] for x in r["layers"]]
    assert names[0].endswith("embeddings") and names[-1] == "" and any(n.endswith("layer.0") for n in names)
