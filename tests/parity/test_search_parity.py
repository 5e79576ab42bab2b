"""Search parity with colbert-ai 0.2.22: the first 1,000 Vaswani passages indexed by each side (config
B: nbits=2, defaults otherwise), the 93 Vaswani queries searched with k=10 and k=100 (a fresh Searcher
per k, since the first k fixes ncells/threshold/ndocs), every searcher on every index.

The reference is colbert-ai searching its own index. Our searcher runs in the ours-tf457 venv (same
torch/transformers/tokenizers pins as the oracle, our package via PYTHONPATH), so query encoding is
the same to the bit; a last test runs it in the dev venv (the interpreter running pytest) as well.
"""

import json
import math
import os
import sys

import pytest

from index_diff import diff_indexes
from venvs import REPO, ensure_venv, run_in

pytestmark = [pytest.mark.parity, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
QUERIES = os.path.join(REPO, "colbert", "data", "vaswani", "queries.tsv")
N = 1000
KS = ("10", "100")
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def pythons():
    return {"oracle": ensure_venv("oracle"), "ours": ensure_venv("ours-tf457"), "dev": sys.executable}


@pytest.fixture(scope="module")
def indexes(pythons, colbert_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("search_parity")
    out = {}
    for side in ("oracle", "ours"):
        folder = root / f"index-{side}"
        folder.mkdir()
        stdout = run_in(pythons[side], os.path.join(HERE, "index_script.py"), colbert_checkpoint, TSV, str(N),
                        str(folder), "B", ours=side == "ours", cwd=str(folder))
        out[side] = json.loads(stdout.strip().splitlines()[-1])["index_path"]
    return out


_cache: dict = {}


def rankings(searcher: str, index: str, pythons, indexes, colbert_checkpoint, tmp_path_factory) -> dict:
    """{k: {qid: [[pid, rank, score], ...]}} of `searcher` (oracle | ours | dev) on `index` (oracle | ours)."""
    key = (searcher, index)
    if key not in _cache:
        folder = tmp_path_factory.mktemp(f"search-{searcher}-on-{index}")
        out = str(folder / "rankings.json")
        run_in(pythons[searcher], os.path.join(HERE, "search_script.py"), indexes[index], colbert_checkpoint,
               QUERIES, out, *KS, ours=searcher != "oracle", cwd=str(folder))
        with open(out) as f:
            _cache[key] = json.load(f)["rankings"]
    return _cache[key]


def compare(got: dict, want: dict) -> dict:
    """-> {"identical_queries": n, "queries": n, "max_rel_diff": x, "problems": [...]} for one k."""
    problems, identical, max_rel, bit_equal, total = [], 0, 0.0, 0, 0
    if list(got) != list(want):
        problems.append(f"qids differ: {list(got)[:5]}... vs {list(want)[:5]}...")
    for qid, w in want.items():
        g = got.get(qid, [])
        gp, wp = [x[0] for x in g], [x[0] for x in w]
        if gp != wp:
            problems.append(f"qid {qid}: pids {gp[:8]}... vs {wp[:8]}...")
            continue
        if [x[1] for x in g] != [x[1] for x in w]:
            problems.append(f"qid {qid}: ranks differ")
            continue
        rel = max((abs(a[2] - b[2]) / max(abs(b[2]), 1e-12) for a, b in zip(g, w)), default=0.0)
        bit_equal += sum(a[2] == b[2] for a, b in zip(g, w))
        total += len(w)
        max_rel = max(max_rel, rel)
        if not rel <= REL_TOL or any(math.isnan(a[2]) for a in g):
            problems.append(f"qid {qid}: scores differ by {rel:.3g} (relative)")
            continue
        identical += 1
    return {"identical_queries": identical, "queries": len(want), "max_rel_diff": max_rel, "problems": problems,
            "bit_equal_scores": bit_equal, "scores": total}


def test_the_two_indexes_are_bit_identical(indexes):
    assert diff_indexes(indexes["ours"], indexes["oracle"]) == []


@pytest.mark.parametrize("searcher,index", [("ours", "ours"), ("oracle", "ours"), ("ours", "oracle")])
@pytest.mark.parametrize("k", KS)
def test_search_all_matches_colbert_ai(searcher, index, k, pythons, indexes, colbert_checkpoint, tmp_path_factory):
    want = rankings("oracle", "oracle", pythons, indexes, colbert_checkpoint, tmp_path_factory)[k]
    got = rankings(searcher, index, pythons, indexes, colbert_checkpoint, tmp_path_factory)[k]
    assert len(want) == 93 and all(len(v) == int(k) for v in want.values())  # a real, full reference
    result = compare(got, want)
    print(f"\n[search parity] {searcher} searcher on {index} index, k={k}: {result['identical_queries']}/"
          f"{result['queries']} queries identical, max relative score diff {result['max_rel_diff']:.3g}, "
          f"{result['bit_equal_scores']}/{result['scores']} scores bit-equal")
    assert result["problems"] == [], "\n".join(result["problems"][:10])


@pytest.mark.parametrize("k", KS)
def test_dev_venv_searcher_matches_colbert_ai(k, pythons, indexes, colbert_checkpoint, tmp_path_factory):
    """Our searcher under the dev venv's transformers (5.x) on our index: the same rankings."""
    want = rankings("oracle", "oracle", pythons, indexes, colbert_checkpoint, tmp_path_factory)[k]
    got = rankings("dev", "ours", pythons, indexes, colbert_checkpoint, tmp_path_factory)[k]
    result = compare(got, want)
    print(f"\n[search parity] dev-venv searcher on ours index, k={k}: {result['identical_queries']}/"
          f"{result['queries']} queries identical, max relative score diff {result['max_rel_diff']:.3g}, "
          f"{result['bit_equal_scores']}/{result['scores']} scores bit-equal")
    assert result["problems"] == [], "\n".join(result["problems"][:10])


def test_compare_catches_a_difference():
    want = {"1": [[5, 1, 10.0], [7, 2, 9.0]]}
    assert compare({"1": [[5, 1, 10.0], [7, 2, 9.0]]}, want)["problems"] == []
    assert compare({"1": [[7, 1, 10.0], [5, 2, 9.0]]}, want)["problems"]
    assert compare({"1": [[5, 1, 10.001], [7, 2, 9.0]]}, want)["problems"]
