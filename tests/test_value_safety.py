"""Values, numbers, files on disk, resume: swapped artifacts whose values are out of range, non-finite
index tensors and scores, resuming with another collection or after a kill in k-means, the search
CLI's tap, file modes and a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import stat

import pytest
import torch

from colbert.cli import main as cli_main
from colbert.tap import ArtifactTap, SwapTap, tap, use_tap
from colbert.tap.errors import TapMismatchError
from colbert.tap.stages import STAGES, get_stage
from conftest import clear_tap_env, file_hashes

TAP_VARS = ("COLBERT_TAP", "COLBERT_TAP_DIR", "COLBERT_TAP_ONLY", "COLBERT_TAP_SKIP", "COLBERT_TAP_LAYERS",
            "COLBERT_TAP_CAST", "COLBERT_TAP_QUIET")
QUERIES = {"1": "measurement of dielectric constants of liquids", "2": "transistor amplifier noise figure",
           "7": "electron beam focusing in travelling wave tubes"}


@pytest.fixture
def clean_env(monkeypatch):
    return clear_tap_env(monkeypatch)


def hashes(folder) -> dict[str, str]:
    """Every file but the index lock (colbert/utils/locks.py): a run takes and drops it even when it
    refuses to change anything, and a kill leaves its file behind."""
    from colbert.utils.locks import INDEX_LOCK

    return file_hashes(folder, skip={INDEX_LOCK})


def swap_one(tmp_path, stage, stored, live, **ctx):
    """Inject `stored` at `stage` through a real SwapTap; ctx carries the location and the facts."""
    folder = tmp_path / f"swap-{stage}"
    folder.mkdir(exist_ok=True)
    from colbert.tap.stages import LOCATION_KEYS, artifact_filename

    fname = artifact_filename(stage, **{k: v for k, v in ctx.items() if k in LOCATION_KEYS})
    torch.save(stored, folder / fname)
    with use_tap(SwapTap(str(folder), verbose=False)):
        return tap(stage, live, **ctx), str(folder / fname)


# -- swapped values that fit type, dtype and shape but not the stage -------------------------------------------

BAD_VALUES = [
    # stage, stored, live, ctx, expected words in the message, found words
    ("sample_pids", {0, 5, 200}, {0, 1, 2}, {"num_passages": 12}, "values in [0, 11", "from 0 to 200"),
    ("sample_pids", [-1, 3, 4], {0, 1, 2}, {"num_passages": 12}, "values in [0, 11", "from -1 to 4"),
    ("num_partitions", 0, 64, {}, "values >= 1 (registry: K, a power of two)", "0"),
    ("num_partitions", -8, 64, {}, "values >= 1", "-8"),
    ("num_partitions", 48, 64, {}, "a power of two", "int 48"),
    ("num_passages", 500, 120, {"collection_size": 120}, "values in [1, 120", "500"),
    ("avg_doclen_est", 0.0, 30.5, {}, ">= 1", "0"),
    ("avg_doclen_est", float("nan"), 30.5, {}, "finite numbers", "nan"),
    ("postnorm_centroids", torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.eye(2), {}, "finite numbers",
     "1 NaN and 0 inf of 4"),
    ("embs", torch.tensor([[1.0, float("inf")]]).half(), torch.zeros(1, 2).half(), {"chunk": 0}, "finite numbers",
     "0 NaN and 1 inf"),
    ("codes", torch.tensor([0, 3, 64], dtype=torch.int32), torch.zeros(3, dtype=torch.int32),
     {"chunk": 0, "num_partitions": 64}, "values in [0, 63 (num_partitions-1, num_partitions=64)]", "from 0 to 64"),
    ("doclens", [3, 4, 4], [3, 4, 5], {"chunk": 0, "num_embeddings": 12}, "summing to 12", "a sum of 11"),
    ("doclens", [-1, 8, 5], [3, 4, 5], {"chunk": 0, "num_embeddings": 12}, ">= 0", "from -1 to 8"),
    ("bucket_cutoffs", torch.tensor([0.1, -0.1, 0.2]), torch.tensor([-0.1, 0.0, 0.1]), {}, "ascending order",
     "0.1"),
    ("ivf_lengths", torch.tensor([2, 2, 2]), torch.tensor([1, 2, 3]), {"num_embeddings": 7}, "summing to 7",
     "a sum of 6"),
    ("pid_ivf", torch.tensor([0, 1, 120], dtype=torch.int32), torch.zeros(3, dtype=torch.int32),
     {"num_passages": 120}, "[0, 119", "from 0 to 120"),
    ("tensorize_output", ([(torch.tensor([[101, 99999]]), torch.tensor([[1, 1]]))], torch.tensor([0])),
     ([(torch.tensor([[101, 102]]), torch.tensor([[1, 1]]))], torch.tensor([0])),
     {"site": "sample", "group": 0, "vocab_size": 30522}, "[0, 30521", "from 0 to 99999"),
    ("probed_cells", torch.tensor([1, 70]), torch.tensor([1, 2]), {"qid": 3, "num_partitions": 64}, "[0, 63",
     "from 1 to 70"),
    ("ranked_scores", torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0]), {"qid": 3}, "descending order",
     "1 then 2"),
]


@pytest.mark.parametrize("stage,stored,live,ctx,expected,found", BAD_VALUES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_VALUES)])
def test_swapped_value_out_of_range_is_refused(tmp_path, stage, stored, live, ctx, expected, found):
    with pytest.raises(TapMismatchError) as e:
        swap_one(tmp_path, stage, stored, live, **ctx)
    msg = str(e.value)
    assert msg.startswith(f"tap swap: stage {stage!r}: stored artifact {tmp_path}/swap-{stage}/"), msg
    want, got = msg.split(" does not fit: expected ", 1)[1].split(", found ", 1)
    assert expected in want and found in got, msg
    assert "\n" not in msg


def test_in_range_values_are_injected_and_unknown_facts_leave_bounds_unchecked(tmp_path):
    got, _ = swap_one(tmp_path, "sample_pids", [0, 11, 3], {0, 1, 2}, num_passages=12)
    assert got == {0, 3, 11}
    got, _ = swap_one(tmp_path, "num_partitions", 128, 64)
    assert got == 128
    got, _ = swap_one(tmp_path, "doclens", [0, 7, 5], [3, 4, 5], chunk=1, num_embeddings=12)
    assert got == [0, 7, 5]
    # a tap point that passes no num_partitions (a user's own) gets the type checks only
    got, _ = swap_one(tmp_path, "codes", torch.tensor([900], dtype=torch.int32), torch.zeros(1, dtype=torch.int32),
                      chunk=2)
    assert got.tolist() == [900]


def test_every_named_fact_is_a_bound_and_int_ids_have_bounds():
    """The registry's value facts are well formed, and every stage holding ids bounds them."""
    from colbert.tap.validate import _bound

    for s in STAGES:
        for b in (s.low, s.high, s.total):
            if isinstance(b, str):
                value, _ = _bound(b, {b.removesuffix("-1"): 10})
                assert value in (9, 10), (s.name, b)
        assert s.order in (None, "ascending", "descending"), s.name
    for name in ("sample_pids", "codes", "presort_codes", "values", "ivf", "pid_ivf", "probed_cells",
                 "candidate_pids", "filtered_pids", "ranked_pids", "tensorize_output"):
        spec = get_stage(name)
        assert spec.low == 0 and isinstance(spec.high, str), name
    assert get_stage("num_partitions").power_of_two and get_stage("num_partitions").low == 1


def test_index_run_refuses_a_non_power_of_two_num_partitions_before_writing(colbert_checkpoint, small_passages,
                                                                           tmp_path, clean_env):
    from conftest import build_index

    swap = tmp_path / "swap"
    swap.mkdir()
    torch.save(48, swap / "num_partitions.pt")
    clean_env.setenv("COLBERT_TAP", f"swap:{swap}")
    with pytest.raises(TapMismatchError) as e:
        build_index(colbert_checkpoint, small_passages[:40], tmp_path / "root", name="p2")
    assert f"stage 'num_partitions': stored artifact {swap}/num_partitions.pt" in str(e.value)
    assert "expected a power of two" in str(e.value) and "found int 48" in str(e.value)
    index = tmp_path / "root" / "tests" / "indexes" / "p2"
    assert [n for n in os.listdir(index) if n != "tap"] == []  # no plan.json, no chunk: refused before


# -- non-finite index tensors and scores ----------------------------------------------------------------------

@pytest.fixture
def index_copy(small_index, tmp_path):
    src, _ = small_index
    dst = tmp_path / "index"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tap"))
    return str(dst)


@pytest.mark.parametrize("name,poison,what", [
    ("centroids.pt", lambda c: torch.full_like(c, float("nan")), "finite centroids"),
    ("buckets.pt", lambda b: (b[0], torch.full_like(b[1], float("inf"))), "finite bucket weights"),
    ("buckets.pt", lambda b: (b[0].clone().fill_(float("nan")), b[1]), "finite bucket cutoffs"),
    ("avg_residual.pt", lambda a: torch.tensor(float("nan")), "finite average residual"),
])
def test_non_finite_index_tensor_is_named_at_load(index_copy, name, poison, what):
    from colbert.search.index_loader import IndexFormatError, load_index

    path = os.path.join(index_copy, name)
    torch.save(poison(torch.load(path, weights_only=True)), path)
    before = hashes(index_copy)
    with pytest.raises(IndexFormatError) as e:
        load_index(index_copy)
    assert str(e.value).startswith(f"index {index_copy}: {name}: expected {what}; found "), str(e.value)
    assert hashes(index_copy) == before


def test_search_cli_with_nan_centroids_exits_2_and_writes_no_ranking(index_copy, tmp_path, capsys):
    path = os.path.join(index_copy, "centroids.pt")
    torch.save(torch.full_like(torch.load(path, weights_only=True), float("nan")), path)
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    out = tmp_path / "ranking.tsv"
    before = hashes(index_copy)
    rc = cli_main(["search", "--index", index_copy, "--queries", str(queries), "-k", "50", "--out", str(out),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "centroids.pt: expected finite centroids; found" in err and "NaN" in err
    assert not out.exists() and hashes(index_copy) == before


def test_a_non_finite_score_is_an_error_not_a_row(small_index, colbert_checkpoint, clean_env):
    from colbert import Searcher
    from colbert.search.index_loader import NonFiniteScoreError, check_scores_finite

    class PoisonQ(ArtifactTap):  # a user's tap (swaps are checked before they get this far)
        def on_artifact(self, stage, value, ctx):
            return torch.full_like(value, float("nan")) if stage == "Q" else value

    searcher = Searcher(index=small_index[0], checkpoint=colbert_checkpoint, verbose=0)
    assert len(searcher.search(QUERIES["1"], k=5)[0]) == 5
    with use_tap(PoisonQ()), pytest.raises(NonFiniteScoreError) as e:
        searcher.search(QUERIES["1"], k=5)
    assert f"search of {small_index[0]} (query 0): expected finite scores, got" in str(e.value)
    with pytest.raises(NonFiniteScoreError, match=r"got 1 of 3 NaN or inf \(first: pid 9, score inf\)"):
        check_scores_finite(torch.tensor([1.0, float("inf"), 2.0]), torch.tensor([4, 9, 5]), "test")
    with pytest.raises(NonFiniteScoreError, match=r"got 2 of 4 NaN or inf \(first: pid 6, score nan\)"):
        check_scores_finite(torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]]),
                            torch.tensor([[4, 5], [6, 7]]), "exhaustive")


# -- resume ---------------------------------------------------------------------------------------------------

def index_with(checkpoint, passages, root, overwrite, name="r"):
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    with Run().context(RunConfig(nranks=1, experiment="tests", root=str(root))):
        config = ColBERTConfig(checkpoint=checkpoint, doc_maxlen=128, nbits=2, dim=96, kmeans_niters=4,
                               index_bsize=16)
        return Indexer(checkpoint=checkpoint, config=config, verbose=0).index(name=name, collection=passages,
                                                                             overwrite=overwrite)


class Recorder(ArtifactTap):
    def __init__(self):
        self.ctx = {}

    def may_replace(self, stage):
        return False

    def on_artifact(self, stage, value, ctx):
        self.ctx.setdefault(stage, dict(ctx))
        return value


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from test_value_safety import index_with
from conftest import vaswani_passages
from colbert.tap import ArtifactTap, use_tap

class KillInKmeans(ArtifactTap):
    def may_replace(self, stage):
        return False
    def on_artifact(self, stage, value, ctx):
        if stage == "prenorm_centroids":  # k-means has run, its centroids are not yet normalised or saved
            os.kill(os.getpid(), signal.SIGKILL)
        return value

with use_tap(KillInKmeans()):
    index_with(sys.argv[2], vaswani_passages(120), sys.argv[3], overwrite=True, name="test")
"""


@pytest.fixture(scope="module")
def killed_in_kmeans(colbert_checkpoint, small_passages, tmp_path_factory):
    """A run of the small index (same name and settings) killed with SIGKILL in k-means."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("killed")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for k in TAP_VARS:
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, os.path.dirname(__file__), colbert_checkpoint,
                           str(root)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    path = os.path.join(root, "tests", "indexes", "test")
    return root, path


def test_resume_with_another_collection_is_one_error_and_changes_nothing(killed_in_kmeans, colbert_checkpoint,
                                                                         small_passages):
    from colbert.indexing.fingerprint import FINGERPRINT_FILE, ResumeMismatchError

    from colbert.utils.locks import INDEX_LOCK

    root, path = killed_in_kmeans
    # what the kill left: the plan, the fingerprint, and the (released) index lock's file
    assert sorted(os.listdir(path)) == sorted([FINGERPRINT_FILE, "plan.json", INDEX_LOCK])
    before = hashes(path)
    other = small_passages[:60] + [p + " (edited)" for p in small_passages[60:]]
    with pytest.raises(ResumeMismatchError) as e:
        index_with(colbert_checkpoint, other, root, overwrite="resume", name="test")
    msg = str(e.value)
    assert msg.startswith(f"resume: index {path} was started on another collection: expected the collection "
                          f"recorded in {FINGERPRINT_FILE} (120 passages"), msg
    assert "got 120 passages" in msg and "nothing was changed" in msg
    assert hashes(path) == before
    from colbert.compare.layout import scan_run

    assert [a.path.name for a in scan_run(path).artifacts] == ["plan.json"]  # compare skips the sidecar


def test_resume_after_a_kill_in_kmeans_writes_the_fresh_index(killed_in_kmeans, small_index, colbert_checkpoint,
                                                             small_passages):
    from parity.index_diff import diff_indexes

    root, path = killed_in_kmeans
    stale = os.path.join(path, ".tmp-save-x1")  # what a kill inside atomic_torch_save leaves
    os.mkdir(stale)
    rec = Recorder()
    with use_tap(rec):
        assert index_with(colbert_checkpoint, small_passages, root, overwrite="resume", name="test") == path
    fresh = small_index[0]
    assert sorted(os.listdir(path)) == sorted(n for n in os.listdir(fresh) if n != "tap")  # no sidecar, no temp
    assert diff_indexes(path, fresh, ignore_config_keys={"resume"}) == []
    for name in os.listdir(path):
        if name.endswith(".pt") or name.startswith("doclens"):
            with open(os.path.join(path, name), "rb") as a, open(os.path.join(fresh, name), "rb") as b:
                assert a.read() == b.read(), name
    # every fact a stage's bounds name reached its tap point in the real pipeline
    for s in STAGES:
        if s.phase != "index" or s.capture_only:
            continue
        for b in (s.low, s.high, s.total):
            if isinstance(b, str):
                assert b.removesuffix("-1") in rec.ctx[s.name], (s.name, b, rec.ctx[s.name])


def test_resume_of_a_finished_index_checks_the_passage_count(small_index, colbert_checkpoint, small_passages,
                                                             tmp_path):
    from colbert.indexing.fingerprint import ResumeMismatchError

    dst = tmp_path / "tests" / "indexes" / "r"
    shutil.copytree(small_index[0], dst, ignore=shutil.ignore_patterns("tap"))
    before = hashes(dst)
    with pytest.raises(ResumeMismatchError, match=r"0\.metadata\.json holds passages up to 119, but the collection "
                                                   r"has 100: expected the collection the index was started on"):
        index_with(colbert_checkpoint, small_passages[:100], tmp_path, overwrite="resume")
    with pytest.raises(ResumeMismatchError, match=r"is complete with 120 passages \(its \*\.metadata\.json\), but "
                                                   r"the collection has 130: expected the collection it was built"):
        index_with(colbert_checkpoint, small_passages + small_passages[:10], tmp_path, overwrite="resume")
    assert hashes(dst) == before


# -- the search CLI's tap --------------------------------------------------------------------------------------

def test_search_cli_tap_names_artifacts_by_qid(small_index, tmp_path, clean_env, capsys):
    from colbert.tap import load_manifest

    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    folder = tmp_path / "tap"
    clean_env.setenv("COLBERT_TAP", f"save:{folder}")
    out = tmp_path / "ranking.tsv"
    assert cli_main(["search", "--index", small_index[0], "--queries", str(queries), "-k", "5", "--out", str(out),
                     "--no-progress"]) == 0
    m = load_manifest(str(folder))
    assert m["status"] == "complete" and m["source"] == "colbert-tap search"
    assert {e["location"]["qid"] for e in m["artifacts"].values()} == set(QUERIES)
    from colbert.evaluation import load_ranking

    ranking = load_ranking(str(out))
    for qid in QUERIES:
        ranked = torch.load(folder / f"ranked_pids_q{qid}.pt", weights_only=True)
        assert ranked[:5].tolist() == [int(p) for p, _, _ in ranking[qid]]
    # the swap round trip of the CLI's own tap reproduces the ranking file
    clean_env.setenv("COLBERT_TAP", f"swap:{folder}")
    out2 = tmp_path / "again.tsv"
    assert cli_main(["search", "--index", small_index[0], "--queries", str(queries), "-k", "5", "--out", str(out2),
                     "--no-progress"]) == 0
    assert out2.read_text() == out.read_text()
    capsys.readouterr()


# -- file modes and a full disk --------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_follow_the_umask(tmp_path, mask):
    from colbert.utils.io import atomic_torch_save, atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(str(tmp_path / "a.json"), "{}")
        atomic_torch_save(torch.zeros(2), str(tmp_path / "b.pt"))
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    plain = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert plain == 0o666 & ~mask
    for name in ("a.json", "b.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == plain, name
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.pt", "plain"]


def test_index_and_checkpoint_are_readable_by_others(small_index, colbert_checkpoint):
    mask = os.umask(0)
    os.umask(mask)
    path = small_index[0]
    for name in os.listdir(path):
        if os.path.isfile(os.path.join(path, name)):
            assert stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode) == 0o666 & ~mask, name
    assert stat.S_IMODE(os.stat(colbert_checkpoint).st_mode) == 0o777 & ~mask  # not mkdtemp's 0700


def test_disk_full_names_the_path_and_leaves_no_temp(tmp_path, monkeypatch):
    import colbert.utils.io as io

    target = tmp_path / "plan.json"
    target.write_text("old")

    def full(f, data):
        f.write(data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "_write_all", full)
    with pytest.raises(OSError) as e:
        io.write_json_pretty(str(target), {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert f"No space left on device: could not write {target}" in str(e.value)
    assert os.listdir(tmp_path) == ["plan.json"] and target.read_text() == "old"


@pytest.mark.parametrize("raised", [OSError(errno.ENOSPC, "No space left on device"),
                                    RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                                                 "failed writing file data/0: file write failed")])
def test_disk_full_in_torch_save_names_the_path_and_leaves_no_temp(tmp_path, monkeypatch, raised):
    import colbert.utils.io as io

    def save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"PK partial")
        raise raised

    monkeypatch.setattr(io.torch, "save", save)
    monkeypatch.setattr(io, "_low_space", lambda d: True)  # torch's RuntimeError carries no errno
    target = tmp_path / "0.codes.pt"
    with pytest.raises(OSError) as e:
        io.atomic_torch_save(torch.zeros(1), str(target))
    assert e.value.errno == errno.ENOSPC and str(target) in str(e.value)
    assert "No space left on device" in str(e.value)
    assert os.listdir(tmp_path) == []
