"""The module, shape and op levels of explain (colbert/explain/modules.py, probe.py), in one install:
identical runs find nothing; a checkpoint with one weight moved by one ulp is located to its module,
and the op level says no aten op differs on identical inputs (the module's parameters do)."""

import json
import os

import pytest

from colbert.explain.modules import ModuleLevelError, batch_files, compact, module_level, public_lists
from explain_probe_runs import nudged_checkpoint, probe_run, tokenized_batches
from conftest import vaswani_passages

NUDGED = "bert.encoder.layer.3.intermediate.dense.weight"
MODULE = "colbert.model.encoder.layer.3.intermediate.dense"


@pytest.fixture(scope="module")
def runs(colbert_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    batches = tokenized_batches(colbert_checkpoint, vaswani_passages(16), bsize=8)
    a = probe_run(str(root / "A"), colbert_checkpoint, batches)
    same = probe_run(str(root / "same"), colbert_checkpoint, batches)
    nudged = nudged_checkpoint(colbert_checkpoint, str(root / "nudged-ckpt"), NUDGED)
    b = probe_run(str(root / "B"), nudged, batches)
    return root, a, same, b, batches


def test_identical_installs_find_nothing(runs):
    root, a, same, _, batches = runs
    r = module_level(a, same, str(root / "work-same"))
    assert r["first"] is None and r["batches_differing"] == []
    assert r["batches_compared"] == len(batches[0]) == 2
    assert r["widths"] == [int(batches[0][0][0].shape[1])] * 2
    assert "bit-identical in both installs" in r["summary"]
    # the same install: the shape study runs once (B), so there is no agreement between installs to report
    study = r["encoder_shapes"]
    assert study["installs_disagree"] is None and {v["installs_agree"] for v in study["variants"]} == {None}
    widths = [v["width"] for v in study["variants"] if v["batch"] == study["rows"]]
    assert widths[-1] == study["width"] + 8 and [v["batch"] for v in study["variants"] if v["batch"] < study["rows"]] == [1, 2, 4]
    assert public_lists(r)["modules"] == [] and public_lists(r)["ops"] == []


def test_one_ulp_in_one_weight_is_located(runs):
    root, a, _, b, batches = runs
    work = root / "work-nudged"
    r = module_level(a, b, str(work))
    first = r["first"]
    assert (first["module"], first["cls"], first["batch"], first["inputs_match"]) == (MODULE, "Linear", 0, True)
    # B's module on A's recorded inputs differs: the difference is the module's, given identical inputs
    assert r["same_inputs"]["equal"] is False and 0 < r["same_inputs"]["n_unequal"] <= r["same_inputs"]["numel"]
    layers = {x["module"]: x for x in r["layers"]}
    assert all(layers[f"colbert.model.encoder.layer.{i}"]["equal"] for i in range(3))
    assert not layers["colbert.model.encoder.layer.3"]["equal"] and layers["colbert.model.encoder.layer.3"]["max_abs"] > 0
    # every shape is affected by a weight, and A's aten ops replayed in B (same torch, A's weight) agree
    assert r["shapes"]["widths_match"] == [] and len(r["shapes"]["widths_differ"]) == 25
    assert r["op"]["first"] is None and r["op"]["ops_recorded"] >= 1 and r["op"]["same_sequence"]
    assert all(o["equal"] for o in r["op"]["ops"])
    assert "no aten op differs on identical inputs" in r["summary"] and MODULE in r["summary"]
    # fed A's inputs one by one, only the sublayer holding the weight (and the whole encoder, "") differ
    fed = [x["name"] for x in public_lists(r)["modules"]]
    assert fed == ["colbert.model.encoder.layer.3.intermediate", ""], fed
    assert all(x["comparable"] for x in r["injected"]) and len(r["injected"]) > 30
    # a second call reuses every probe output (same spec, same manifests)
    stamps = {n: os.stat(work / n).st_mtime_ns for n in ("digests-a.json", "digests-b.json", "check-b.json")}
    assert module_level(a, b, str(work))["first"] == first
    assert stamps == {n: os.stat(work / n).st_mtime_ns for n in stamps}


def test_runs_without_what_the_probe_needs_are_refused(runs, tmp_path):
    _, a, _, _, _ = runs
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text(json.dumps({"artifacts": {}, "config": {"checkpoint": "x"}}))
    with pytest.raises(ModuleLevelError, match="no tensorize_output artifacts"):
        batch_files(str(bare))
    m = json.loads(open(os.path.join(a, "manifest.json")).read())
    m["replay"]["executable"] = str(tmp_path / "gone" / "python")
    gone = tmp_path / "gone-run"
    gone.mkdir()
    for name in os.listdir(a):
        os.link(os.path.join(a, name), gone / name) if name != "manifest.json" else None
    (gone / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModuleLevelError, match="records no interpreter that still exists"):
        module_level(a, str(gone), str(tmp_path / "work"))


def test_plot_draws_the_per_module_drift(runs, tmp_path):
    from colbert.explain.chain import Explanation
    from colbert.explain.render import plot_modules, render_markdown

    root, a, _, b, _ = runs
    ex = Explanation(a=a, b=b, profile="default", work=str(root))
    ex.modules = module_level(a, b, str(root / "work-nudged"))  # reused from the test above when it ran
    png = plot_modules(ex, str(tmp_path / "drift.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = render_markdown(ex)
    assert "| colbert.model.encoder.layer.3.intermediate | BertIntermediate |" in md
    empty = Explanation(a=a, b=b, profile="default", work=str(root))
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_modules(empty, str(tmp_path / "none.png"))


def test_compact_ranges():
    assert compact([82, 77, 78, 79]) == "77-79, 82"
    assert compact([1, 2]) == "1, 2" and compact([]) == ""
