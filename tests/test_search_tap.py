"""The ArtifactTap on search: every search stage saved per query, swap round trip, causality."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from colbert.tap import SwapTap, load_manifest, use_tap
from colbert.tap.stages import stages_of_phase
from conftest import clear_tap_env

QUERIES = {3: "dielectric constant of liquids", 4: "band pass filter design", 5: "noise in electron tubes"}
TAP_VARS = ("COLBERT_TAP", "COLBERT_TAP_DIR", "COLBERT_TAP_ONLY", "COLBERT_TAP_SKIP", "COLBERT_TAP_LAYERS",
            "COLBERT_TAP_CAST", "COLBERT_TAP_QUIET")
SEARCH_STAGES = [s.name for s in stages_of_phase("search")]


@pytest.fixture(scope="module")
def index_copy(small_index, tmp_path_factory):
    """A private copy: the default save folder is inside the index, which other tests share."""
    src, _ = small_index
    dst = tmp_path_factory.mktemp("search_tap") / "index"
    shutil.copytree(src, dst)
    return str(dst)


@pytest.fixture(scope="module")
def searcher(index_copy, colbert_checkpoint):
    from colbert import Searcher

    return Searcher(index=index_copy, checkpoint=colbert_checkpoint, verbose=0)


@pytest.fixture
def clean_env(monkeypatch):
    return clear_tap_env(monkeypatch)


def load(folder, name):
    return torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def saved(searcher, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("saved_search"))
    with pytest.MonkeyPatch.context() as mp:
        for k in TAP_VARS:
            mp.delenv(k, raising=False)
        mp.setenv("COLBERT_TAP", f"save:{folder}")
        mp.setenv("COLBERT_TAP_QUIET", "1")
        ranking = searcher.search_all(QUERIES, k=10)
    return folder, ranking


def test_save_writes_every_search_stage_per_query(saved, searcher):
    folder, ranking = saved
    m = load_manifest(folder)
    assert m["status"] == "complete" and m["phase"] == "search" and m["source"] == "Searcher::search_all"
    arts = m["artifacts"]
    assert {(e["stage"], e["location"]["qid"]) for e in arts.values()} == {
        (s, q) for s in SEARCH_STAGES for q in QUERIES}
    Q = searcher.encode(list(QUERIES.values()))  # search_all encodes all queries in one batch
    for i, qid in enumerate(QUERIES):
        assert torch.equal(load(folder, f"Q_q{qid}.pt"), Q[i:i + 1])
        pids = [p for p, _, _ in ranking.data[qid]]
        ranked = load(folder, f"ranked_pids_q{qid}.pt")
        assert ranked.dtype == torch.int32 and ranked[:10].tolist() == pids
        scores = load(folder, f"ranked_scores_q{qid}.pt")
        assert scores[:10].tolist() == [s for _, _, s in ranking.data[qid]]
        filtered = load(folder, f"filtered_pids_q{qid}.pt")
        candidates = load(folder, f"candidate_pids_q{qid}.pt")
        assert set(filtered.tolist()) <= set(candidates.tolist()) and set(pids) <= set(filtered.tolist())
        assert load(folder, f"centroid_scores_q{qid}.pt").shape[1] == searcher.config.query_maxlen


def test_default_folder_is_index_tap_search(searcher, index_copy, clean_env):
    clean_env.setenv("COLBERT_TAP", "save")
    searcher.search(QUERIES[3], k=5)
    folder = os.path.join(index_copy, "tap", "search")
    m = load_manifest(folder)
    assert m["source"] == "Searcher::search" and os.path.isfile(os.path.join(folder, "ranked_pids_q0.pt"))
    assert not os.path.exists(os.path.join(index_copy, "tap", "manifest.json"))  # the index's own tap untouched


def test_swap_round_trip_reproduces_the_ranking(saved, searcher, clean_env):
    folder, ranking = saved
    t = SwapTap(folder, verbose=False)
    with use_tap(t):
        again = searcher.search_all(QUERIES, k=10)
    assert again.data == ranking.data
    assert set(t.injected) == set(SEARCH_STAGES)
    assert not t.not_found


def test_swapped_stages_drive_the_search(saved, searcher, tmp_path, clean_env):
    folder, ranking = saved
    # Q of query 4 injected into query 3: query 3 then ranks exactly as query 4 did
    swap = tmp_path / "q"
    swap.mkdir()
    shutil.copy(os.path.join(folder, "Q_q4.pt"), swap / "Q_q3.pt")
    with use_tap(SwapTap(str(swap), verbose=False)):
        got = searcher.search_all({3: QUERIES[3]}, k=10)
    assert got.data[3] == ranking.data[4]

    # a hand-made pruning result: only these survive, so only these can be ranked
    prune = tmp_path / "p"
    prune.mkdir()
    chosen = torch.tensor([7, 70, 17], dtype=torch.int32)
    torch.save(chosen, prune / "filtered_pids_q5.pt")
    with use_tap(SwapTap(str(prune), verbose=False)):
        got = searcher.search_all({5: QUERIES[5]}, k=10)
    assert sorted(p for p, _, _ in got.data[5]) == [7, 17, 70]


def test_search_tap_without_env_binds_nothing(searcher, clean_env, tmp_path):
    from colbert.tap import active_tap

    seen = []

    class Spy:
        def on_artifact(self, stage, value, ctx):
            seen.append(stage)
            return value

    searcher.search(QUERIES[3], k=3)
    assert active_tap() is None and not seen
    from colbert.tap.env import _DuckTap

    with use_tap(_DuckTap(Spy())):
        searcher.search(QUERIES[3], k=3)
    assert seen == SEARCH_STAGES  # in registry order: the registry order is the pipeline order


def test_compare_finds_the_first_search_stage_that_differs(saved, tmp_path, capsys):
    import hashlib
    import json

    from colbert.compare import main

    folder, _ = saved
    same = tmp_path / "same"
    shutil.copytree(folder, same)
    assert main([folder, str(same), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["first_divergence"] is None and rep["matched"] == rep["total"] >= len(SEARCH_STAGES) * len(QUERIES)
    assert {r["stage"] for r in rep["rows"] if r["stage"]} == set(SEARCH_STAGES)

    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    pids = load(folder, "filtered_pids_q4.pt")
    torch.save(pids.flip(0).contiguous(), changed / "filtered_pids_q4.pt")
    scores = load(folder, "exact_scores_q4.pt")
    torch.save(scores.flip(0).contiguous(), changed / "exact_scores_q4.pt")
    # as if another run had written them: compare checks each file against its manifest's sha256
    manifest = json.loads((changed / "manifest.json").read_text())
    for name in ("filtered_pids_q4.pt", "exact_scores_q4.pt"):
        manifest["artifacts"][name]["sha256"] = hashlib.sha256((changed / name).read_bytes()).hexdigest()
    (changed / "manifest.json").write_text(json.dumps(manifest))
    assert main([folder, str(changed), "--format", "json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["first_divergence"] == "filtered_pids"
