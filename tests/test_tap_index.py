"""ArtifactTap on a real indexing run: every stage saved, round trip, causality, layer capture.

Uses the `colbert_checkpoint` fixture (tests/conftest.py; must be session-scoped) and the upstream
API `from colbert import Indexer`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil

import pytest
import torch

from colbert.tap import STAGES, CompositeTap, SaveTap, SwapTap, get_stage, load_manifest, use_tap

pytestmark = pytest.mark.slow
N = 120  # every passage is sampled (N <= 30,720): one sample site, one chunk
NBITS = 2


def _collection_tsv() -> str:
    import colbert

    # the embedded collection ships inside the package; older checkouts kept it at the repo root
    for base in (os.path.dirname(colbert.__file__), os.path.join(os.path.dirname(__file__), os.pardir)):
        path = os.path.join(base, "data", "vaswani", "collection.tsv")
        if os.path.exists(path):
            return path
    raise FileNotFoundError("the embedded vaswani collection (colbert/data/vaswani/collection.tsv) is missing")
TAP_VARS = ("COLBERT_TAP", "COLBERT_TAP_DIR", "COLBERT_TAP_ONLY", "COLBERT_TAP_SKIP", "COLBERT_TAP_LAYERS",
            "COLBERT_TAP_CAST", "COLBERT_TAP_QUIET", "COLBERT_ENCODE_ONCE")


def passages() -> list[str]:
    out = []
    with open(_collection_tsv()) as f:
        for line in f:
            out.append(line.rstrip("\n").split("\t")[1])
            if len(out) == N:
                break
    return out


def build(root, name: str, checkpoint: str, env: dict[str, str] | None = None) -> str:
    """Index the N passages under `root` with COLBERT_TAP* set to `env` only for this run."""
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    with pytest.MonkeyPatch.context() as mp:
        for k in TAP_VARS:
            mp.delenv(k, raising=False)
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with Run().context(RunConfig(nranks=1, experiment="tap", root=str(root))):
            config = ColBERTConfig(doc_maxlen=64, nbits=NBITS, kmeans_niters=4, index_bsize=16, root=str(root),
                                   checkpoint=checkpoint)
            path = Indexer(checkpoint=checkpoint, config=config).index(name=name, collection=passages(),
                                                                       overwrite=True)
    assert path and os.path.exists(os.path.join(path, "metadata.json")), path
    return path


def load(path: str):
    return torch.load(path, map_location="cpu", weights_only=True)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def index_files(path: str) -> list[str]:
    names = [os.path.basename(p) for p in glob.glob(os.path.join(path, "*")) if os.path.isfile(p)]
    return sorted(n for n in names if n.endswith(".pt") or n.startswith("doclens.") or n.endswith("metadata.json"))


def assert_index_equal(a: str, b: str) -> None:
    assert index_files(a) == index_files(b)
    for name in index_files(a):
        if name.endswith(".pt"):
            assert same(load(os.path.join(a, name)), load(os.path.join(b, name))), name
        elif name.startswith("doclens.") or name[0].isdigit():
            with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
                assert json.load(fa) == json.load(fb), name


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, colbert_checkpoint):
    root = tmp_path_factory.mktemp("tapA")
    tap_dir = str(root / "A_tap")
    # Encode every group at every site (as upstream does) so that chunk-site group artifacts exist;
    # test_save_with_encode_once covers the default, where chunks reuse the sample's groups.
    index = build(root, "A", colbert_checkpoint, {"COLBERT_TAP": f"save:{tap_dir}", "COLBERT_ENCODE_ONCE": "0"})
    return {"root": root, "index": index, "tap": tap_dir, "checkpoint": colbert_checkpoint}


def artifacts_of(folder: str, stage: str) -> dict[str, dict]:
    return {f: e for f, e in load_manifest(folder)["artifacts"].items() if e["stage"] == stage}


def one(folder: str, stage: str):
    arts = artifacts_of(folder, stage)
    assert len(arts) == 1, (stage, sorted(arts))
    return load(os.path.join(folder, next(iter(arts))))


def test_save_writes_every_stage(run_a):
    folder = run_a["tap"]
    m = load_manifest(folder)
    assert m["status"] == "complete"
    assert m["config"]["nbits"] == NBITS and m["index_path"] == run_a["index"]
    arts = m["artifacts"]
    stages_seen = {e["stage"] for e in arts.values()}
    assert stages_seen == {s.name for s in STAGES if s.name != "encoder_layers" and s.phase == "index"}
    assert set(arts) == {f for f in os.listdir(folder) if f.endswith(".pt")}

    for fname, e in arts.items():
        spec = get_stage(e["stage"])
        assert e["kind"] == spec.kind, (fname, e["kind"], spec.kind)
        if spec.kind == "tensor":
            assert e["dtype"] == spec.dtype, (fname, e["dtype"], spec.dtype)
        value = load(os.path.join(folder, fname))  # weights_only must read every artifact back
        assert e["shape"] == (list(value.shape) if isinstance(value, torch.Tensor) else e["shape"])

    dim = one(folder, "local_sample_embs").shape[1]
    num_passages = one(folder, "num_passages")
    assert num_passages == N
    assert len(one(folder, "sample_pids")) == min(1 + int(16 * math.sqrt(120 * N)), N)
    local = one(folder, "local_sample_embs")
    local_doclens = one(folder, "local_sample_doclens")
    assert len(local_doclens) == N and local.shape == (sum(local_doclens), dim)
    sample, heldout = one(folder, "sample"), one(folder, "sample_heldout")
    h = int(min(0.05 * local.shape[0], 50000))
    assert heldout.shape == (h, dim) and sample.shape == (local.shape[0] - h, dim)
    K = one(folder, "num_partitions")
    assert K > 0 and K & (K - 1) == 0
    for stage in ("prenorm_centroids", "postnorm_centroids", "centroids"):
        assert one(folder, stage).shape == (K, dim), stage
    assert one(folder, "bucket_cutoffs").shape == (2 ** NBITS - 1,)
    assert one(folder, "bucket_weights").shape == (2 ** NBITS,)
    assert one(folder, "avg_residual").dim() == 0
    assert isinstance(one(folder, "avg_doclen_est"), float) and isinstance(one(folder, "num_embeddings_est"), float)

    chunks = sorted(e["location"]["chunk"] for e in artifacts_of(folder, "embs").values())
    E = 0
    for c in chunks:
        embs, doclens = load(f"{folder}/embs_{c}.pt"), load(f"{folder}/doclens_{c}.pt")
        codes, residuals = load(f"{folder}/codes_{c}.pt"), load(f"{folder}/residuals_{c}.pt")
        assert embs.shape == (sum(doclens), dim)
        assert codes.shape == (embs.shape[0],) and residuals.shape == (embs.shape[0], dim * NBITS // 8)
        E += embs.shape[0]
    for stage in ("presort_codes", "values", "ivf"):
        assert one(folder, stage).shape == (E,), stage
    assert one(folder, "ivf_lengths").shape == (K,) and int(one(folder, "ivf_lengths").sum()) == E
    assert one(folder, "pid_ivf_lengths").shape == (K,)
    assert int(one(folder, "pid_ivf_lengths").sum()) <= one(folder, "pid_ivf").shape[0]  # padded, as upstream

    # group artifacts: one per encode group of each site; D rows are the group's embeddings
    for fname, e in artifacts_of(folder, "D").items():
        site, group = e["location"]["site"], e["location"]["group"]
        assert fname == f"D_{site}_{group}.pt"
        assert f"tensorize_output_{site}_{group}.pt" in arts and f"batches_{site}_{group}.pt" in arts
    sites = {e["location"]["site"] for e in artifacts_of(folder, "D").values()}
    assert "sample" in sites and {f"chunk{c}" for c in chunks} <= sites

    # what was tapped is what the index holds
    index = run_a["index"]
    assert same(load(f"{index}/centroids.pt"), one(folder, "centroids"))
    assert same(load(f"{index}/avg_residual.pt"), one(folder, "avg_residual"))
    assert same(load(f"{index}/buckets.pt"), (one(folder, "bucket_cutoffs"), one(folder, "bucket_weights")))
    for c in chunks:
        assert same(load(f"{index}/{c}.codes.pt"), load(f"{folder}/codes_{c}.pt"))
        assert same(load(f"{index}/{c}.residuals.pt"), load(f"{folder}/residuals_{c}.pt"))
    assert same(load(f"{index}/ivf.pid.pt"), (one(folder, "pid_ivf"), one(folder, "pid_ivf_lengths")))


def test_round_trip_swap_all(run_a, tmp_path):
    b_tap = str(tmp_path / "B_tap")
    b = build(tmp_path, "B", run_a["checkpoint"], {"COLBERT_TAP": f"swap:{run_a['tap']},save:{b_tap}",
                                                     "COLBERT_ENCODE_ONCE": "0"})
    assert_index_equal(run_a["index"], b)
    mb = load_manifest(b_tap)
    assert set(mb["artifacts"]) == set(load_manifest(run_a["tap"])["artifacts"])
    assert all(e["source"].startswith("swap:") for e in mb["artifacts"].values())


def test_single_stage_swap(run_a, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(os.path.join(run_a["tap"], "postnorm_centroids.pt"), only)
    swap, save = SwapTap(str(only), verbose=False), SaveTap(str(tmp_path / "B_tap"), verbose=False)
    with use_tap(CompositeTap(swap, save)):
        b = build(tmp_path, "B", run_a["checkpoint"])
    assert swap.injected == {"postnorm_centroids": ["postnorm_centroids.pt"]}
    assert "centroids" in swap.not_found and "embs" in swap.not_found
    arts = load_manifest(str(tmp_path / "B_tap"))["artifacts"]
    assert arts["postnorm_centroids.pt"]["source"].startswith("swap:")
    assert arts["centroids.pt"]["source"] == "computed"
    assert_index_equal(run_a["index"], b)  # A's own value: nothing downstream may change


def _perturbed_folder(src: str, dst, stage: str, seed: int) -> None:
    os.makedirs(dst, exist_ok=True)
    value = load(os.path.join(src, f"{stage}.pt"))
    g = torch.Generator().manual_seed(seed)
    noisy = value + 1e-3 * torch.randn(value.shape, generator=g, dtype=value.dtype)
    torch.save(noisy, os.path.join(dst, f"{stage}.pt"))  # a raw torch.save, as a hand-made tap would


def _compare(a: str, b: str) -> dict[str, bool]:
    """stage -> all artifacts of that stage equal between saved folders a and b."""
    ma, mb = load_manifest(a)["artifacts"], load_manifest(b)["artifacts"]
    assert set(ma) == set(mb)
    out: dict[str, bool] = {}
    for fname, e in ma.items():
        eq = same(load(os.path.join(a, fname)), load(os.path.join(b, fname)))
        out[e["stage"]] = out.get(e["stage"], True) and eq
    return out


def test_causality_local_sample_embs(run_a, tmp_path):
    _perturbed_folder(run_a["tap"], tmp_path / "Ap", "local_sample_embs", seed=0)
    b_tap = str(tmp_path / "B_tap")
    b = build(tmp_path, "B", run_a["checkpoint"], {"COLBERT_TAP": f"swap:{tmp_path / 'Ap'},save:{b_tap}",
                                                     "COLBERT_ENCODE_ONCE": "0"})
    eq = _compare(run_a["tap"], b_tap)
    for stage in ("num_passages", "sample_pids", "local_sample_doclens", "doclens", "embs"):
        assert eq[stage], f"{stage} changed although it is upstream of / independent from the swap"
    for stage in ("local_sample_embs", "sample", "prenorm_centroids", "postnorm_centroids", "centroids",
                  "bucket_cutoffs", "bucket_weights", "codes", "residuals", "ivf"):
        assert not eq[stage], f"{stage} did not change although it depends on local_sample_embs"
    ia = run_a["index"]
    for name in ("centroids.pt", "buckets.pt", "0.codes.pt", "0.residuals.pt", "ivf.pid.pt"):
        assert not same(load(f"{ia}/{name}"), load(f"{b}/{name}")), name
    with open(f"{ia}/doclens.0.json") as fa, open(f"{b}/doclens.0.json") as fb:
        assert json.load(fa) == json.load(fb)


def test_causality_postnorm_centroids(run_a, tmp_path):
    _perturbed_folder(run_a["tap"], tmp_path / "Ap", "postnorm_centroids", seed=1)
    b_tap = str(tmp_path / "B_tap")
    b = build(tmp_path, "B", run_a["checkpoint"], {"COLBERT_TAP": f"swap:{tmp_path / 'Ap'},save:{b_tap}",
                                                     "COLBERT_ENCODE_ONCE": "0"})
    eq = _compare(run_a["tap"], b_tap)
    for stage in ("num_passages", "sample_pids", "local_sample_embs", "sample", "prenorm_centroids", "doclens",
                  "embs"):
        assert eq[stage], f"{stage} changed although it is upstream of / independent from the swap"
    for stage in ("postnorm_centroids", "centroids", "residuals"):
        assert not eq[stage], f"{stage} did not change although it depends on postnorm_centroids"
    assert not same(load(f"{run_a['index']}/0.residuals.pt"), load(f"{b}/0.residuals.pt"))


def test_layers_capture(run_a, tmp_path, colbert_checkpoint):
    out = str(tmp_path / "L_tap")
    build(tmp_path, "L", colbert_checkpoint, {"COLBERT_TAP": f"save:{out}", "COLBERT_TAP_LAYERS": "2",
                                              "COLBERT_TAP_ONLY": "num_passages", "COLBERT_ENCODE_ONCE": "0"})
    with open(os.path.join(colbert_checkpoint, "config.json")) as f:
        num_layers = json.load(f)["num_hidden_layers"]
    arts = artifacts_of(out, "encoder_layers")
    by_batch: dict[tuple, dict[int, dict]] = {}
    for fname, e in arts.items():
        loc = e["location"]
        by_batch.setdefault((loc["site"], loc["group"], loc["batch"]), {})[loc["layer"]] = e
    sites = {k[0] for k in by_batch}
    assert "sample" in sites and "chunk0" in sites
    for site in sites:
        assert len([k for k in by_batch if k[0] == site]) == 2, site  # the first 2 batches of each site
    dim = one(run_a["tap"], "local_sample_embs").shape[1]
    for key, layers in by_batch.items():
        # embeddings output + one hidden state per transformer layer + the projection
        assert sorted(layers) == list(range(num_layers + 2)), key
        hidden = [layers[i]["shape"] for i in range(num_layers + 1)]
        assert all(len(s) == 3 and s[:2] == hidden[0][:2] for s in hidden), key
        assert layers[num_layers + 1]["shape"][:2] == hidden[0][:2] and layers[num_layers + 1]["shape"][2] == dim
        assert all(e["dtype"] == "float32" for e in layers.values())
    assert {e["stage"] for e in load_manifest(out)["artifacts"].values()} == {"encoder_layers", "num_passages"}


def test_save_with_encode_once(run_a, tmp_path):
    """Default: every passage is sampled, so chunks reuse the sample's encode groups. The index is
    the same, and the group artifacts are saved once, under site 'sample'."""
    out = str(tmp_path / "once_tap")
    index = build(tmp_path, "once", run_a["checkpoint"], {"COLBERT_TAP": f"save:{out}"})
    assert_index_equal(run_a["index"], index)
    assert {e["location"]["site"] for e in artifacts_of(out, "D").values()} == {"sample"}
    for stage in ("embs", "codes", "residuals", "doclens"):
        assert artifacts_of(out, stage), stage
    for fname, e in artifacts_of(out, "D").items():
        assert same(load(os.path.join(out, fname)), load(os.path.join(run_a["tap"], fname)))
