"""Tap folders and compare are safe to share; signals and errors end cleanly.

Cases: a save folder holding an index, two writers on one index, two saves on one tap folder (and a
second save into a folder holding a previous one), compare on leftovers / tampered / empty folders,
`compare -o` into a new folder, SIGTERM and SIGINT during a tapped run, and tap errors at the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from colbert.cli import main
from colbert.tap import SaveTap, load_manifest, tap, use_tap
from colbert.tap.errors import TapConfigError, TapWriteError
from colbert.tap.session import tap_session
from colbert.utils.locks import INDEX_LOCK, TAP_LOCK, FolderLockedError, folder_lock
from conftest import clear_tap_env, file_hashes as hashes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
INDEX_FLAGS = ["--limit", "40", "--nbits", "2", "--dim", "96", "--doc-maxlen", "64", "--kmeans-niters", "2",
               "--index-bsize", "16"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    clear_tap_env(monkeypatch)
    monkeypatch.setenv("TQDM_DISABLE", "1")  # the index command's progress bar would share stderr


def fake_index(folder) -> str:
    """An index folder as colbert-ai lays it out (contents need not be real: the runs refuse first)."""
    os.makedirs(folder, exist_ok=True)
    for name, value in (("centroids.pt", torch.arange(6.0).reshape(2, 3)), ("avg_residual.pt", torch.tensor(0.5)),
                        ("0.codes.pt", torch.zeros(4, dtype=torch.int32))):
        torch.save(value, os.path.join(folder, name))
    for name in ("plan.json", "metadata.json"):
        with open(os.path.join(folder, name), "w") as f:
            json.dump({"config": {"nbits": 2}}, f)
    return str(folder)


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def save_run(folder, values: dict[str, torch.Tensor], index_path=None) -> None:
    """One SaveTap session, as the indexer drives it, writing `values` (stage -> tensor)."""
    t = SaveTap(str(folder), verbose=False)
    with use_tap(t):
        with tap_session(config_dict={"nbits": 2}, index_path=index_path):
            for stage, v in values.items():
                tap(stage, v, rank=0, nranks=1)


def lock_holder(folder, name: str) -> subprocess.Popen:
    """Another process holding `folder`'s lock until killed."""
    code = ("import sys, time\nfrom colbert.utils.locks import folder_lock\n"
            f"with folder_lock(sys.argv[1], {name!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout.readline().strip() == "held"
    return p


# -- save folders that hold an index -------------------------------------------------------------
def test_save_into_an_existing_index_is_refused(colbert_checkpoint, tmp_path, monkeypatch, capsys):
    victim = fake_index(tmp_path / "victim")
    before = hashes(victim)
    monkeypatch.setenv("COLBERT_TAP", f"save:{victim}")
    rc = main(["index", "--checkpoint", colbert_checkpoint, "--collection", COLLECTION, "--root",
               str(tmp_path / "exp"), "--name", "new", *INDEX_FLAGS])
    err = capsys.readouterr().err
    assert rc == 2
    assert stderr_lines(err) == [stderr_lines(err)[0]] and "Traceback" not in err
    assert f"tap save: {victim} holds an index" in err and "centroids.pt" in err
    assert hashes(victim) == before
    assert not (tmp_path / "exp").exists()  # refused before the run's own index folder was made


def test_search_or_bound_save_into_an_index_is_refused(tmp_path):
    victim = fake_index(tmp_path / "victim")
    before = hashes(victim)
    with pytest.raises(TapConfigError, match=f"tap save: {victim} holds an index"):
        save_run(victim, {"centroids": torch.zeros(2, 3)})
    assert hashes(victim) == before


def test_save_into_the_index_folder_being_written_is_refused(colbert_checkpoint, tmp_path, monkeypatch, capsys):
    index = tmp_path / "exp" / "default" / "indexes" / "own"
    monkeypatch.setenv("COLBERT_TAP", f"save:{index}")
    rc = main(["index", "--checkpoint", colbert_checkpoint, "--collection", COLLECTION, "--root",
               str(tmp_path / "exp"), "--name", "own", *INDEX_FLAGS])
    err = capsys.readouterr().err
    assert rc == 2 and len(stderr_lines(err)) == 1
    assert f"tap save: {index} is the index folder this run writes" in err
    assert not index.exists()


def test_save_into_the_swap_folder_is_refused(tmp_path):
    from colbert.tap import CompositeTap, SwapTap

    folder = tmp_path / "both"
    save_run(folder, {"num_passages": torch.tensor(3)})
    before = hashes(folder)
    both = CompositeTap(SwapTap(str(folder), verbose=False), SaveTap(str(folder), verbose=False))
    with pytest.raises(TapConfigError, match=f"{folder} is both the swap folder and the save folder"):
        with use_tap(both), tap_session(config_dict={}, index_path=None):
            pass
    assert hashes(folder) == before


# -- one writer per index folder ---------------------------------------------------------------------
def test_second_index_writer_gets_the_holder_and_erases_nothing(colbert_checkpoint, tmp_path, capsys):
    root = tmp_path / "exp"
    index = fake_index(root / "default" / "indexes" / "busy")
    holder = lock_holder(index, INDEX_LOCK)
    try:
        before = hashes(index)
        rc = main(["index", "--checkpoint", colbert_checkpoint, "--collection", COLLECTION, "--root", str(root),
                   "--name", "busy", "--overwrite", *INDEX_FLAGS])
        err = capsys.readouterr().err
        assert rc == 2 and len(stderr_lines(err)) == 1, err
        assert f"index: {index} is being written by another run (pid {holder.pid} " in err
        assert hashes(index) == before  # not erased, not half-written
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock, no stale lock can remain
        holder.wait()
    with folder_lock(index, INDEX_LOCK):  # free again at once
        assert os.path.exists(os.path.join(index, INDEX_LOCK))
    assert not os.path.exists(os.path.join(index, INDEX_LOCK))  # removed on release


def test_lock_is_reentrant_for_its_thread_only(tmp_path):
    got: list[BaseException] = []

    def other():
        try:
            with folder_lock(tmp_path):
                pass
        except BaseException as e:  # noqa: BLE001 - inspected below
            got.append(e)

    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # the indexer locks, then the session it runs asks again
            pass
        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert os.path.exists(tmp_path / INDEX_LOCK)
    assert len(got) == 1 and isinstance(got[0], FolderLockedError)
    assert f"{tmp_path} is being written by another thread of this process" in str(got[0])
    assert os.listdir(tmp_path) == []


def test_lock_file_is_invisible_to_erase_and_compare(tmp_path):
    from colbert.compare.layout import scan_run

    index = fake_index(tmp_path / "idx")
    with folder_lock(index):
        names = {a.path.name for a in scan_run(index).artifacts}
    assert INDEX_LOCK not in names and "centroids.pt" in names


# -- one save per tap folder ---------------------------------------------------------------------------
def test_concurrent_save_into_one_folder_is_refused(tmp_path):
    folder = tmp_path / "tap"
    save_run(folder, {"num_passages": torch.tensor(3)})
    before = hashes(folder)
    holder = lock_holder(folder, TAP_LOCK)
    try:
        with pytest.raises(FolderLockedError, match=f"tap save: {folder} is being written by another run "
                                                    f"\\(pid {holder.pid} "):
            save_run(folder, {"num_passages": torch.tensor(4)})
        assert hashes(folder) == {**before, TAP_LOCK: hashes(folder)[TAP_LOCK]}
    finally:
        holder.kill()
        holder.wait()


def test_second_save_leaves_no_leftovers_of_the_first(tmp_path):
    folder = tmp_path / "tap"
    save_run(folder, {"num_passages": torch.tensor(3), "codes": torch.zeros(5, dtype=torch.int32)})
    torch.save(torch.ones(2), folder / "embs_7.pt")  # what a killed run wrote after its last manifest update
    (folder / "notes.txt").write_text("mine")
    save_run(folder, {"num_passages": torch.tensor(4)})
    assert sorted(os.listdir(folder)) == ["manifest.json", "notes.txt", "num_passages.pt"]
    m = load_manifest(str(folder))
    assert m["status"] == "complete" and list(m["artifacts"]) == ["num_passages.pt"]
    assert torch.load(folder / "num_passages.pt", weights_only=True) == 4


def test_two_ranks_share_one_save_and_one_index_lock(colbert_checkpoint, small_passages, tmp_path, monkeypatch):
    from conftest import build_index

    folder = tmp_path / "tap"
    save_run(folder, {"num_passages": torch.tensor(3)})  # a previous save, to be cleared once
    torch.save(torch.zeros(5, dtype=torch.int32), folder / "codes_9.pt")  # and what a killed run left
    monkeypatch.setenv("COLBERT_TAP", f"save:{folder}")
    index = build_index(colbert_checkpoint, small_passages[:40], tmp_path / "exp", name="ranks", nranks=2,
                        doc_maxlen=64, kmeans_niters=2)
    m = load_manifest(str(folder))
    assert m["status"] == "complete" and m["rank_status"] == {0: "complete", 1: "complete"}
    assert "codes_9.pt" not in os.listdir(folder) and {"embs_0.pt", "embs_1.pt"} <= set(m["artifacts"])
    assert torch.load(folder / "num_passages.pt", weights_only=True) == 40  # this run's, not the previous save's
    assert not any(n.startswith(".colbert") for n in os.listdir(folder) + os.listdir(index))


def test_handmade_tap_folder_is_not_cleared(tmp_path):
    folder = tmp_path / "hand"
    folder.mkdir()
    torch.save(torch.arange(3), folder / "sample_pids.pt")
    before = hashes(folder)
    with pytest.raises(TapWriteError, match="holds tap artifacts not written by a save .*sample_pids.pt"):
        save_run(folder, {"num_passages": torch.tensor(4)})
    assert hashes(folder) == before


# -- compare reads only what a run's manifest lists ------------------------------------------------
def two_runs(tmp_path):
    values = {"num_passages": torch.tensor(3), "sample": torch.arange(12.0).reshape(4, 3)}
    a, b = tmp_path / "a", tmp_path / "b"
    save_run(a, values)
    save_run(b, values)
    return a, b


def test_compare_ignores_leftovers_not_in_the_manifest(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    torch.save(torch.ones(3), b / "centroids.pt")  # a leftover of some other run
    rc = main(["compare", str(a), str(b), "-f", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["first_divergence"] is None
    assert not any("centroids" in r["name"] for r in out["rows"])
    assert any("not listed in its manifest were ignored: centroids.pt" in n for n in out["notes"])


def test_compare_verifies_manifest_checksums(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    torch.save(torch.zeros(4, 3), b / "sample.pt")  # replaced after the run wrote it
    rc = main(["compare", str(a), str(b), "-f", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2
    bad = [r for r in out["rows"] if r["status"] == "error"]
    assert [r["name"] for r in bad] == ["sample.pt"]
    assert f"{b / 'sample.pt'}: sha256 " in bad[0]["error"] and "its manifest records" in bad[0]["error"]


def test_compare_reports_a_listed_file_that_is_gone(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    os.remove(b / "sample.pt")
    rc = main(["compare", str(a), str(b), "-f", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert any(r["status"] == "error" and "listed in the run's manifest but missing" in r["error"]
               for r in out["rows"])


@pytest.mark.parametrize("which", ["both", "b"])
def test_compare_refuses_folders_with_nothing_to_compare(tmp_path, capsys, which):
    a, _ = two_runs(tmp_path)
    empty_a, empty_b = tmp_path / "emptyA", tmp_path / "emptyB"
    empty_a.mkdir()
    empty_b.mkdir()
    (empty_b / "README").write_text("not a run")
    first = empty_a if which == "both" else a
    rc = main(["compare", str(first), str(empty_b)])
    cap = capsys.readouterr()
    label, folder = ("A", empty_a) if which == "both" else ("B", empty_b)
    assert rc == 2 and cap.out == ""
    assert stderr_lines(cap.err) == [f"colbert-tap compare: error: {label}: {folder} holds nothing to compare "
                                     "(no tap artifacts, no index files)"]


def test_compare_stages_matching_nothing_is_an_error(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    rc = main(["compare", str(a), str(b), "--stages", "codes"])
    err = capsys.readouterr().err
    assert rc == 2 and "--stages codes: neither" in err and len(stderr_lines(err)) == 1


def test_compare_output_creates_parent_folders(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    out = tmp_path / "missing" / "dir" / "x.md"
    rc = main(["compare", str(a), str(b), "-o", str(out), "-f", "markdown"])
    assert rc == 0 and capsys.readouterr().err == ""
    assert "match" in out.read_text()


# -- tap errors at the CLI: one line, exit 2, and the swap summary says why ---------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refused_swap_file_is_one_line_and_named_in_the_summary(colbert_checkpoint, tmp_path, monkeypatch,
                                                                capsys):
    swap = tmp_path / "swap"
    swap.mkdir()
    torch.save(_Evil(), swap / "sample_pids.pt")
    monkeypatch.setenv("COLBERT_TAP", f"swap:{swap}")
    monkeypatch.delenv("COLBERT_TAP_QUIET")
    rc = main(["index", "--checkpoint", colbert_checkpoint, "--collection", COLLECTION, "--root",
               str(tmp_path / "exp"), "--name", "x", *INDEX_FLAGS])
    cap = capsys.readouterr()
    assert rc == 2
    lines = [ln for ln in stderr_lines(cap.err) if ln.startswith("colbert-tap")]
    assert len(lines) == 1 and "Traceback" not in cap.err
    assert lines[0].startswith("colbert-tap index: error: tap swap: refused to load stage 'sample_pids'")
    assert "refused sample_pids.pt from" in cap.out and "TapUnsafeError" in cap.out
    assert "never asked for" not in cap.out


# -- signals --------------------------------------------------------------------------------------------
STALL = '''
import os, time
from colbert.tap import ArtifactTap

class Stall(ArtifactTap):
    """Parks the run at its first artifact, so a test can signal it mid-run."""
    def may_replace(self, stage):
        return False
    def on_artifact(self, stage, value, ctx):
        open(os.environ["STALL_MARKER"], "w").close()
        time.sleep(120)
        return value
'''

USER_SCRIPT = '''
import sys
from colbert import Indexer
from colbert.infra import ColBERTConfig, Run, RunConfig

if __name__ == "__main__":
    ckpt, root, collection = sys.argv[1:4]
    with Run().context(RunConfig(nranks=1, experiment="sig", root=root)):
        config = ColBERTConfig(checkpoint=ckpt, doc_maxlen=64, nbits=2, kmeans_niters=2, index_bsize=16)
        Indexer(checkpoint=ckpt, config=config).index(name="user", collection=collection, overwrite=True)
'''


def signalled_run(tmp_path, argv: list[str], sig: int) -> tuple[int, str, dict]:
    (tmp_path / "stall_tap.py").write_text(STALL)
    save = tmp_path / "saved"
    marker = tmp_path / "stalled"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_TAP")}
    env.update(COLBERT_TAP=f"save:{save},stall_tap:Stall", COLBERT_TAP_QUIET="1", STALL_MARKER=str(marker),
               PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]), TQDM_DISABLE="1", HF_HUB_OFFLINE="1",
               PYTHONWARNINGS="ignore")
    # A suite started as a background job of a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: the child gets SIGINT's default back, as in a terminal.
    p = subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline, "the run never reached its first artifact"
            time.sleep(0.05)
        assert load_manifest(str(save))["status"] == "running"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, err, load_manifest(str(save))


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                           (signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_cli_signal_marks_the_manifest_failed(colbert_checkpoint, tmp_path, sig, code, word):
    argv = [sys.executable, "-m", "colbert.cli", "index", "--checkpoint", colbert_checkpoint, "--collection",
            COLLECTION, "--root", str(tmp_path / "exp"), "--name", "sig", *INDEX_FLAGS]
    rc, err, manifest = signalled_run(tmp_path, argv, sig)
    assert rc == code, err
    assert stderr_lines(err) == [f"colbert-tap index: {word}; stopped"]
    assert manifest["status"] == "failed" and manifest["error"] == word
    assert not os.path.exists(tmp_path / "saved" / TAP_LOCK)


def test_user_script_sigterm_marks_the_manifest_failed(colbert_checkpoint, tmp_path):
    script = tmp_path / "index.py"
    script.write_text(USER_SCRIPT)
    tsv = tmp_path / "c.tsv"
    with open(COLLECTION) as f:
        tsv.write_text("".join(line for _, line in zip(range(40), f)))
    rc, err, manifest = signalled_run(tmp_path, [sys.executable, str(script), colbert_checkpoint,
                                                 str(tmp_path / "exp"), str(tsv)], signal.SIGTERM)
    assert rc == 143, err
    assert "Traceback" not in err
    assert manifest["status"] == "failed" and manifest["error"] == "terminated by SIGTERM"


def test_sigterm_handler_only_while_a_tap_session_is_on(tmp_path, monkeypatch):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with tap_session(config_dict={}, index_path=str(tmp_path)) as t:  # tap off: nothing installed
        assert t is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    seen = []
    with use_tap(SaveTap(str(tmp_path / "s"), verbose=False)):
        with tap_session(config_dict={}, index_path=None):
            seen.append(signal.getsignal(signal.SIGTERM))

        def in_thread():
            with tap_session(config_dict={}, index_path=None):
                seen.append(signal.getsignal(signal.SIGTERM))

        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
    assert callable(seen[0]) and seen[0] is not signal.SIG_DFL
    assert seen[1] is signal.SIG_DFL  # not the main thread: left alone
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
