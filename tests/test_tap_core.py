"""ArtifactTap machinery driven directly with synthetic values (no model, no indexer)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap

import pytest
import torch

from colbert.tap import (ArtifactTap, CompositeTap, SaveTap, SwapTap, TapConfigError, TapError, TapLoadError,
                         TapMismatchError, TapUnsafeError, TapWriteError, active_tap, load_manifest, tap,
                         tap_from_env, tap_session, tap_wants, use_tap)
from colbert.tap.stages import STAGE_NAMES, get_stage

R1 = {"rank": 0, "nranks": 1}
CONFIG = {"nbits": 2, "dim": 8, "doc_maxlen": 32, "checkpoint": "/ckpt"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("COLBERT_TAP"):
            monkeypatch.delenv(k)


def session(tmp_path, **kw):
    args = {"config_dict": CONFIG, "index_path": str(tmp_path / "index"), "rank": 0, "nranks": 1}
    args.update(kw)
    return tap_session(**args)


def pipeline(seed: int = 0, nchunks: int = 2, ctx: dict | None = None) -> dict:
    """A miniature indexing run: each stage is computed from what the previous tap returned, so an
    injected value visibly flows downstream."""
    ctx = dict(R1 if ctx is None else ctx)
    g = torch.Generator().manual_seed(seed)
    out: dict = {}
    out["num_passages"] = n = tap("num_passages", 12, **ctx)
    out["sample_pids"] = pids = tap("sample_pids", set(range(0, n, 2)), **ctx)
    out["tensorize_output"] = tap("tensorize_output", ([(torch.ones(2, 4, dtype=torch.long),
                                                         torch.ones(2, 4, dtype=torch.long))],
                                                       torch.arange(2)), site="sample", group=0, **ctx)
    s = tap("local_sample_embs", torch.randn(len(pids) * 3, 8, generator=g), **ctx)
    out["local_sample_embs"] = s
    out["avg_doclen_est"] = tap("avg_doclen_est", 3.0, **ctx)
    c = tap("postnorm_centroids", torch.nn.functional.normalize(s[:4], dim=-1), **ctx)
    out["postnorm_centroids"] = c
    out["bucket_cutoffs"] = tap("bucket_cutoffs", torch.tensor([-0.1, 0.0, 0.1]), **ctx)
    for chunk in range(nchunks):
        e = tap("embs", torch.randn(5, 8, generator=g).half(), chunk=chunk, **ctx)
        out[f"doclens_{chunk}"] = tap("doclens", [2, 3], chunk=chunk, **ctx)
        codes = tap("codes", (e.float() @ c.T).argmax(1).int(), chunk=chunk, **ctx)
        out[f"embs_{chunk}"], out[f"codes_{chunk}"] = e, codes
    return out


def test_no_tap_is_identity():
    x = torch.zeros(3)
    assert active_tap() is None
    assert tap("embs", x, chunk=0, **R1) is x
    assert tap_wants("encoder_layers") is False
    assert tap_wants("encoder_layers", site="sample", group=0, batch=0) is False


def test_session_off_binds_nothing(tmp_path, monkeypatch):
    for value in (None, "off", "OFF", ""):
        if value is None:
            monkeypatch.delenv("COLBERT_TAP", raising=False)
        else:
            monkeypatch.setenv("COLBERT_TAP", value)
        with session(tmp_path) as t:
            assert t is None and active_tap() is None
            pipeline()
    assert not (tmp_path / "index").exists()


def test_use_tap_restores_previous():
    outer, inner = ArtifactTap(), ArtifactTap()
    with use_tap(outer):
        with use_tap(inner):
            assert active_tap() is inner
        assert active_tap() is outer
        with pytest.raises(KeyError):
            with use_tap(inner):
                raise KeyError("boom")
        assert active_tap() is outer
        with use_tap(None):
            assert active_tap() is None
        assert active_tap() is outer
    assert active_tap() is None


def test_save_writes_files_and_manifest(tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "A"
    monkeypatch.setenv("COLBERT_TAP", f"save:{out_dir}")
    with session(tmp_path) as t:
        assert isinstance(t, SaveTap) and active_tap() is t
        vals = pipeline()
    assert active_tap() is None
    assert f"saving artifacts to {out_dir}" in capsys.readouterr().out
    names = sorted(os.listdir(out_dir))
    expected = {"num_passages.pt", "sample_pids.pt", "tensorize_output_sample_0.pt", "local_sample_embs.pt",
                "avg_doclen_est.pt", "postnorm_centroids.pt", "bucket_cutoffs.pt", "manifest.json",
                "embs_0.pt", "embs_1.pt", "doclens_0.pt", "doclens_1.pt", "codes_0.pt", "codes_1.pt"}
    assert set(names) == expected, names  # no temp files left behind
    for name in expected - {"manifest.json"}:
        stored = torch.load(out_dir / name, weights_only=True)
        key = name[:-3]
        live = vals.get(key, vals.get(key.rsplit("_", 2)[0] if key.startswith("tensorize") else key))
        if name == "sample_pids.pt":  # stored as a sorted list: every torch reads it (sets need 2.7+)
            assert stored == sorted(live), name
        else:
            assert _same(stored, live), name
    assert type(torch.load(out_dir / "sample_pids.pt", weights_only=True)) is list
    assert type(torch.load(out_dir / "num_passages.pt", weights_only=True)) is int
    assert type(torch.load(out_dir / "avg_doclen_est.pt", weights_only=True)) is float
    assert type(torch.load(out_dir / "doclens_0.pt", weights_only=True)) is list

    m = json.loads((out_dir / "manifest.json").read_text())
    assert m["status"] == "complete"
    assert m["config"] == CONFIG
    assert m["versions"]["torch"] == torch.__version__ and "python" in m["versions"] and "numpy" in m["versions"]
    assert m["device"]["device"] in ("cpu", "cuda") and m["device"]["cpu"]
    assert m["threads"]["torch_num_threads"] == torch.get_num_threads()
    assert m["argv"] == sys.argv and "git_revision" in m
    assert set(m["artifacts"]) == expected - {"manifest.json"}
    e = m["artifacts"]["embs_1.pt"]
    assert (e["stage"], e["kind"], e["dtype"], e["shape"], e["location"]["chunk"]) == ("embs", "tensor", "float16",
                                                                                       [5, 8], 1)
    assert e["sha256"] == hashlib.sha256((out_dir / "embs_1.pt").read_bytes()).hexdigest()
    assert e["source"] == "computed"
    assert m["artifacts"]["sample_pids.pt"]["kind"] == "set"
    assert m["artifacts"]["num_passages.pt"]["value"] == 12
    assert load_manifest(str(out_dir))["artifacts"].keys() == m["artifacts"].keys()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_save_default_folder_and_tap_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLBERT_TAP", "save")
    with session(tmp_path):
        tap("num_passages", 3, **R1)
    assert (tmp_path / "index" / "tap" / "num_passages.pt").exists()
    assert (tmp_path / "index" / "tap" / "manifest.json").exists()
    monkeypatch.setenv("COLBERT_TAP_DIR", str(tmp_path / "elsewhere"))
    with session(tmp_path):
        tap("num_passages", 3, **R1)
    assert (tmp_path / "elsewhere" / "num_passages.pt").exists()
    assert str(tmp_path / "elsewhere") in capsys.readouterr().out


def test_save_snapshots_contiguous_clone(tmp_path):
    big = torch.arange(10000.0).reshape(100, 100)
    view = big[::10, :3]  # non-contiguous view into a large storage
    with use_tap(SaveTap(str(tmp_path / "S"))) as t, session(tmp_path):
        got = tap("local_sample_embs", view, **R1)
        assert got is view  # saving never changes the live value
        view.add_(1)  # the pipeline mutating it afterwards must not change the file
    stored = torch.load(tmp_path / "S" / "local_sample_embs.pt", weights_only=True)
    assert torch.equal(stored, big[::10, :3] - 1) and stored.is_contiguous()
    assert os.path.getsize(tmp_path / "S" / "local_sample_embs.pt") < 10000  # not the whole 40 kB storage
    assert t.manifest is None  # ended by the session


def test_swap_replaces_values_and_lists_missing(tmp_path, monkeypatch, capsys):
    a = tmp_path / "A"
    monkeypatch.setenv("COLBERT_TAP", f"save:{a}")
    with session(tmp_path):
        va = pipeline(seed=0)
    os.remove(a / "bucket_cutoffs.pt")
    monkeypatch.setenv("COLBERT_TAP", f"swap:{a}")
    capsys.readouterr()
    with session(tmp_path) as t:
        assert isinstance(t, SwapTap)
        vb = pipeline(seed=1, nchunks=3)
    for k in ("local_sample_embs", "postnorm_centroids", "embs_0", "embs_1", "codes_0", "codes_1"):
        assert torch.equal(vb[k], va[k]), k
    assert vb["num_passages"] == va["num_passages"] and vb["sample_pids"] == va["sample_pids"]
    assert t.not_found == {"bucket_cutoffs": ["bucket_cutoffs.pt"], "embs": ["embs_2.pt"],
                           "doclens": ["doclens_2.pt"], "codes": ["codes_2.pt"]}
    out = capsys.readouterr().out
    assert f"injecting artifacts from {a}" in out
    assert "ran normally: bucket_cutoffs, embs, doclens, codes" in out


def test_swap_single_stage_flows_downstream(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    emb = torch.randn(18, 8)
    torch.save(emb, a / "local_sample_embs.pt")  # a maintainer's hand-made file
    base = pipeline(seed=0)
    with use_tap(SwapTap(str(a), verbose=False)) as t:
        got = pipeline(seed=0)
    assert torch.equal(got["local_sample_embs"], emb)
    assert not torch.equal(got["postnorm_centroids"], base["postnorm_centroids"])  # computed from the swap
    assert torch.equal(got["embs_0"], base["embs_0"]) and got["sample_pids"] == base["sample_pids"]
    assert t.injected == {"local_sample_embs": ["local_sample_embs.pt"]}
    assert "codes" in t.not_found


def test_composite_swap_then_save_records_used_values(tmp_path, monkeypatch):
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    monkeypatch.setenv("COLBERT_TAP", f"save:{a}")
    with session(tmp_path):
        va = pipeline(seed=0)
    for spec, out in ((f"swap:{a},save:{b}", b), (f"save:{c},swap:{a}", c)):  # order written does not matter
        monkeypatch.setenv("COLBERT_TAP", spec)
        with session(tmp_path) as t:
            assert isinstance(t, CompositeTap)
            pipeline(seed=5)
        for name in os.listdir(a):
            if name.endswith(".pt"):
                assert _same(torch.load(out / name, weights_only=True), torch.load(a / name, weights_only=True)), name
        m = load_manifest(str(out))
        assert m["artifacts"]["embs_0.pt"]["source"] == f"swap:{a / 'embs_0.pt'}"
    assert torch.equal(torch.load(b / "local_sample_embs.pt", weights_only=True), va["local_sample_embs"])


def test_only_and_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_TAP", f"save:{tmp_path / 'O'}")
    monkeypatch.setenv("COLBERT_TAP_ONLY", "embs*,num_passages")
    with session(tmp_path) as t:
        assert t.wants("embs") and not t.wants("codes")
        pipeline()
    assert sorted(f for f in os.listdir(tmp_path / "O") if f.endswith(".pt")) == ["embs_0.pt", "embs_1.pt",
                                                                                   "num_passages.pt"]
    monkeypatch.delenv("COLBERT_TAP_ONLY")
    monkeypatch.setenv("COLBERT_TAP", f"save:{tmp_path / 'S'}")
    monkeypatch.setenv("COLBERT_TAP_SKIP", "codes,embs*,*centroids")
    with session(tmp_path):
        pipeline()
    files = set(os.listdir(tmp_path / "S"))
    assert "doclens_0.pt" in files and not any(f.startswith(("codes", "embs", "postnorm")) for f in files)


def test_only_restricts_swap(tmp_path, monkeypatch):
    a = tmp_path / "A"
    with use_tap(SaveTap(str(a), verbose=False)) as s:
        va = pipeline(seed=0)
        s.end()
    monkeypatch.setenv("COLBERT_TAP", f"swap:{a}")
    monkeypatch.setenv("COLBERT_TAP_ONLY", "local_sample_embs")
    with session(tmp_path):
        vb = pipeline(seed=1)
    assert torch.equal(vb["local_sample_embs"], va["local_sample_embs"])
    assert not torch.equal(vb["embs_0"], va["embs_0"])


def test_unknown_stage_in_only_lists_valid_names(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_TAP", "save")
    monkeypatch.setenv("COLBERT_TAP_ONLY", "embs,not_a_stage")
    with pytest.raises(TapConfigError) as ei:
        with session(tmp_path):
            pass
    msg = str(ei.value)
    assert "COLBERT_TAP_ONLY" in msg and "'not_a_stage'" in msg
    assert all(name in msg for name in STAGE_NAMES)
    assert active_tap() is None
    monkeypatch.delenv("COLBERT_TAP_ONLY")
    monkeypatch.setenv("COLBERT_TAP_SKIP", "nope*")
    with pytest.raises(TapConfigError, match="COLBERT_TAP_SKIP.*valid stages"):
        tap_from_env()


@pytest.mark.parametrize("spec,match", [("bogus", "unrecognised action 'bogus'"), ("swap", "swap needs a folder"),
                                        ("save:", "save needs a folder"),
                                        ("nosuchmodule_xyz:Tap", "cannot import module 'nosuchmodule_xyz'")])
def test_bad_tap_spec(monkeypatch, spec, match):
    monkeypatch.setenv("COLBERT_TAP", spec)
    with pytest.raises(TapConfigError, match=match):
        tap_from_env()


def test_bad_layers_and_cast_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_TAP", "save")
    monkeypatch.setenv("COLBERT_TAP_LAYERS", "two")
    with pytest.raises(TapConfigError, match="COLBERT_TAP_LAYERS='two'"):
        tap_from_env()
    monkeypatch.setenv("COLBERT_TAP_LAYERS", "-1")
    with pytest.raises(TapConfigError, match="0 or more"):
        tap_from_env()
    monkeypatch.setenv("COLBERT_TAP_LAYERS", "1")
    monkeypatch.setenv("COLBERT_TAP_CAST", "maybe")
    with pytest.raises(TapConfigError, match="COLBERT_TAP_CAST"):
        tap_from_env()


def test_layers_gating(tmp_path, monkeypatch):
    out = tmp_path / "L"
    monkeypatch.setenv("COLBERT_TAP", f"save:{out}")
    with session(tmp_path):
        assert not tap_wants("encoder_layers", site="sample", group=0, batch=0, **R1)  # off without LAYERS
    monkeypatch.setenv("COLBERT_TAP_LAYERS", "2")
    monkeypatch.setenv("COLBERT_TAP_ONLY", "embs")  # layers are asked for explicitly: ONLY need not list them
    with session(tmp_path):
        asked = {}
        for site, groups in (("sample", [(0, 0), (0, 1), (1, 0)]), ("chunk0", [(0, 0), (0, 1), (0, 2)]),
                             ("chunk1", [(0, 0)])):
            for group, batch in groups:
                loc = dict(site=site, group=group, batch=batch, **R1)
                asked[(site, group, batch)] = w = tap_wants("encoder_layers", **loc)
                assert tap_wants("encoder_layers", **loc) == w  # asking twice gives the same answer
                if w:
                    for layer in range(3):
                        tap("encoder_layers", torch.full((2, 4, 6), float(layer)), layer=layer, **loc)
        # the caller may also tap without asking; the gate still holds
        tap("encoder_layers", torch.zeros(2, 4, 6), site="chunk0", group=0, batch=3, layer=0, **R1)
    assert asked == {("sample", 0, 0): True, ("sample", 0, 1): True, ("sample", 1, 0): False,
                     ("chunk0", 0, 0): True, ("chunk0", 0, 1): True, ("chunk0", 0, 2): False,
                     ("chunk1", 0, 0): True}
    files = sorted(f for f in os.listdir(out) if f.startswith("encoder_layers"))
    assert len(files) == 5 * 3
    assert "encoder_layers_chunk0_0_b1_l2.pt" in files and "encoder_layers_sample_1_b0_l0.pt" not in files
    assert torch.equal(torch.load(out / "encoder_layers_sample_0_b1_l2.pt", weights_only=True),
                       torch.full((2, 4, 6), 2.0))
    monkeypatch.setenv("COLBERT_TAP_SKIP", "encoder_layers")
    with session(tmp_path):
        assert not tap_wants("encoder_layers", site="sample", group=0, batch=0, **R1)


def test_swap_never_touches_capture_only_stage(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    torch.save(torch.ones(2, 4, 6), a / "encoder_layers_sample_0_b0_l0.pt")
    live = torch.zeros(2, 4, 6)
    with use_tap(SwapTap(str(a))):
        assert tap("encoder_layers", live, site="sample", group=0, batch=0, layer=0, **R1) is live


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    marker = tmp_path / "PWNED"
    torch.save(Evil(marker), a / "local_sample_embs.pt")
    with pytest.raises(TapUnsafeError) as ei:
        with use_tap(SwapTap(str(a))):
            tap("local_sample_embs", torch.zeros(3, 8), **R1)
    msg = str(ei.value)
    assert "refused" in msg and "local_sample_embs" in msg and str(a / "local_sample_embs.pt") in msg
    assert "system" in msg  # names what it would have called
    assert not marker.exists()


def test_wrong_shape_refused(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    torch.save(torch.zeros(4, 8, dtype=torch.float16), a / "embs_3.pt")
    with pytest.raises(TapMismatchError) as ei, use_tap(SwapTap(str(a))):
        tap("embs", torch.zeros(5, 8, dtype=torch.float16), chunk=3, **R1)
    msg = str(ei.value)
    assert "'embs'" in msg and str(a / "embs_3.pt") in msg and "(5, 8)" in msg and "(4, 8)" in msg


def test_wrong_dtype_refused_unless_cast(tmp_path, monkeypatch):
    a = tmp_path / "A"
    a.mkdir()
    stored = torch.randn(5, 8)
    torch.save(stored, a / "embs_0.pt")
    live = torch.zeros(5, 8, dtype=torch.float16)
    monkeypatch.setenv("COLBERT_TAP", f"swap:{a}")
    with pytest.raises(TapMismatchError) as ei:
        with session(tmp_path):
            tap("embs", live, chunk=0, **R1)
    msg = str(ei.value)
    assert "'embs'" in msg and "embs_0.pt" in msg and "float16" in msg and "float32" in msg
    assert "COLBERT_TAP_CAST=1" in msg
    monkeypatch.setenv("COLBERT_TAP_CAST", "1")
    with session(tmp_path):
        got = tap("embs", live, chunk=0, **R1)
    assert got.dtype == torch.float16 and torch.equal(got, stored.half())


@pytest.mark.parametrize("stage,stored,live,ctx", [
    ("num_passages", torch.zeros(3), 5, {}),
    ("sample_pids", 7, {1, 2}, {}),
    ("sample_pids", {1, 2, 3}, {1, 2}, {}),
    ("doclens", [1, 2, 3], [1, 2], {"chunk": 0}),
    ("tensorize_output", (torch.zeros(2, dtype=torch.long),), (torch.zeros(2, dtype=torch.long), torch.ones(1)),
     {"site": "sample", "group": 0}),
    ("codes", [1, 2], torch.zeros(2, dtype=torch.int32), {"chunk": 0}),
])
def test_wrong_kind_or_length_refused(tmp_path, stage, stored, live, ctx):
    from colbert.tap.stages import artifact_filename
    a = tmp_path / "A"
    a.mkdir()
    fname = artifact_filename(stage, **ctx)
    torch.save(stored, a / fname)
    with pytest.raises(TapMismatchError, match=f"stage '{stage}'.*{fname}.*expected .*found"):
        with use_tap(SwapTap(str(a))):
            tap(stage, live, **ctx, **R1)


def test_hand_made_artifacts_accepted(tmp_path):
    """Raw torch.save files as the maintainer's hand-made taps wrote them."""
    a = tmp_path / "A"
    a.mkdir()
    torch.save({3, 1, 2}, a / "sample_pids.pt")
    torch.save(7, a / "num_passages.pt")
    torch.save([4, 5], a / "doclens_0.pt")
    torch.save(torch.arange(6.0).reshape(3, 2), a / "local_sample_embs.pt")
    torch.save((torch.arange(4), torch.tensor([2, 2])), a / "tensorize_output_sample_0.pt")
    torch.save([torch.tensor([1, 2]), torch.tensor([3])], a / "tensorize_output_sample_1.pt")  # list for a tuple
    torch.save(torch.tensor(2.5), a / "avg_doclen_est.pt")  # a 0-dim tensor where a float lives
    with use_tap(SwapTap(str(a))):
        assert tap("sample_pids", {7, 8, 9}, **R1) == {1, 2, 3}
        assert tap("num_passages", 5, **R1) == 7
        assert tap("doclens", [1, 1], chunk=0, **R1) == [4, 5]
        assert torch.equal(tap("local_sample_embs", torch.zeros(3, 2), **R1), torch.arange(6.0).reshape(3, 2))
        t = tap("tensorize_output", (torch.zeros(4, dtype=torch.long), torch.zeros(2, dtype=torch.long)),
                site="sample", group=0, **R1)
        assert isinstance(t, tuple) and torch.equal(t[0], torch.arange(4))
        b = tap("tensorize_output", (torch.zeros(2, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
                site="sample", group=1, **R1)
        assert isinstance(b, tuple) and torch.equal(b[1], torch.tensor([3]))
        f = tap("avg_doclen_est", 1.0, **R1)
        assert type(f) is float and f == 2.5
    # sets stored as lists (some hand-made taps did list(sample_pids))
    torch.save([5, 6, 7], a / "sample_pids.pt")
    with use_tap(SwapTap(str(a))):
        assert tap("sample_pids", {1, 2, 3}, **R1) == {5, 6, 7}


def test_corrupt_file(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    (a / "codes_0.pt").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(TapLoadError, match=r"stage 'codes'.*codes_0\.pt is corrupt"), use_tap(SwapTap(str(a))):
        tap("codes", torch.zeros(3, dtype=torch.int32), chunk=0, **R1)
    full = a / "codes_1.pt"
    torch.save(torch.zeros(100, dtype=torch.int32), full)
    full.write_bytes(full.read_bytes()[:200])  # truncated mid-write by something that was not atomic
    with pytest.raises(TapLoadError, match="corrupt"), use_tap(SwapTap(str(a))):
        tap("codes", torch.zeros(100, dtype=torch.int32), chunk=1, **R1)


def test_missing_swap_folder(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("COLBERT_TAP", f"swap:{missing}")
    with pytest.raises(TapLoadError, match=f"folder {missing} does not exist"):
        with session(tmp_path):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(TapLoadError, match="is not a folder"):
        SwapTap(str(tmp_path / "file"))


def test_unwritable_save_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "regular_file"
    blocker.write_text("I am a file")
    target = blocker / "sub" / "tap"
    monkeypatch.setenv("COLBERT_TAP", f"save:{target}")
    with pytest.raises(TapWriteError, match=f"cannot create folder {target}"):
        with session(tmp_path):
            pass
    monkeypatch.setenv("COLBERT_TAP", f"save:{blocker}")
    with pytest.raises(TapWriteError, match="not a folder"):
        with session(tmp_path):
            pass
    assert isinstance(TapWriteError("x"), TapError)


def test_unsaveable_value(tmp_path):
    with pytest.raises(TapWriteError, match="stage 'num_passages'.*weights_only"):
        with use_tap(SaveTap(str(tmp_path / "S"), verbose=False)):
            tap("num_passages", object(), **R1)


USER_TAP = '''
import torch
from colbert.tap import ArtifactTap

EVENTS = []

class Doubler(ArtifactTap):
    def begin(self, info):
        EVENTS.append(("begin", info["index_path"], info["rank"]))
    def on_artifact(self, stage, value, ctx):
        EVENTS.append((stage, ctx.get("chunk")))
        return value * 2 if isinstance(value, torch.Tensor) else value
    def end(self):
        EVENTS.append(("end",))

class Duck:
    def on_artifact(self, stage, value, ctx):
        EVENTS.append(("duck", stage))
        return value

class NotATap:
    pass
'''


def test_user_tap_from_module_class(tmp_path, monkeypatch):
    (tmp_path / "my_taps_mod.py").write_text(textwrap.dedent(USER_TAP))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_taps_mod

    monkeypatch.setenv("COLBERT_TAP", f"my_taps_mod:Doubler,save:{tmp_path / 'S'}")
    monkeypatch.setenv("COLBERT_TAP_SKIP", "codes")
    with session(tmp_path):
        x = tap("embs", torch.ones(2, 2), chunk=4, **R1)
        y = tap("codes", torch.ones(2, dtype=torch.int32), chunk=4, **R1)
    assert torch.equal(x, torch.full((2, 2), 2.0)) and torch.equal(y, torch.ones(2, dtype=torch.int32))
    assert my_taps_mod.EVENTS == [("begin", str(tmp_path / "index"), 0), ("embs", 4), ("end",)]
    # the saver runs after the user's tap, so it records the doubled value that was used
    assert torch.equal(torch.load(tmp_path / "S" / "embs_4.pt", weights_only=True), x)

    monkeypatch.setenv("COLBERT_TAP", "my_taps_mod:Duck")
    with session(tmp_path):
        tap("num_passages", 1, **R1)
    assert my_taps_mod.EVENTS[-1] == ("duck", "num_passages")
    monkeypatch.setenv("COLBERT_TAP", "my_taps_mod:NotATap")
    with pytest.raises(TapConfigError, match="not an ArtifactTap"):
        tap_from_env()
    monkeypatch.setenv("COLBERT_TAP", "my_taps_mod:Missing")
    with pytest.raises(TapConfigError, match="no attribute 'Missing'"):
        tap_from_env()


def test_bound_tap_wins_over_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_TAP", f"save:{tmp_path / 'env'}")
    mine = SaveTap(str(tmp_path / "mine"), verbose=False)
    with use_tap(mine):
        with session(tmp_path) as t:
            assert t is mine
            tap("num_passages", 1, **R1)
        assert active_tap() is mine  # the session does not unbind a tap it did not bind
    assert (tmp_path / "mine" / "num_passages.pt").exists() and not (tmp_path / "env").exists()


def test_failed_run_marks_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_TAP", f"save:{tmp_path / 'S'}")
    with pytest.raises(ZeroDivisionError):
        with session(tmp_path):
            tap("num_passages", 1, **R1)
            1 / 0
    m = load_manifest(str(tmp_path / "S"))
    assert m["status"] == "failed" and "num_passages.pt" in m["artifacts"]
    assert active_tap() is None


def test_multi_rank_no_clobber(tmp_path, monkeypatch):
    out = tmp_path / "MR"
    monkeypatch.setenv("COLBERT_TAP", f"save:{out}")
    for rank in (1, 0):  # rank 1 finishing first must not lose rank 0's part, nor the reverse
        ctx = {"rank": rank, "nranks": 2}
        with session(tmp_path, rank=rank, nranks=2):
            tap("num_passages", 10, **ctx)
            tap("local_sample_embs", torch.full((2, 3), float(rank)), **ctx)
            tap("D", torch.full((4, 3), float(rank)), site="sample", group=0, **ctx)
            tap("embs", torch.zeros(2, 3, dtype=torch.float16), chunk=rank, **ctx)
    files = set(os.listdir(out))
    assert {"num_passages.pt", "local_sample_embs.rank0.pt", "local_sample_embs.rank1.pt", "D_sample_0.rank0.pt",
            "D_sample_0.rank1.pt", "embs_0.pt", "embs_1.pt", "manifest.rank0.json", "manifest.rank1.json",
            "manifest.json"} <= files
    assert torch.equal(torch.load(out / "local_sample_embs.rank1.pt", weights_only=True), torch.ones(2, 3))
    merged = json.loads((out / "manifest.json").read_text())
    assert merged["status"] == "complete" and len(merged["artifacts"]) == 7
    assert merged["artifacts"]["embs_1.pt"]["rank"] == 1
    assert load_manifest(str(out))["artifacts"].keys() == merged["artifacts"].keys()
    # and swapping per rank picks each rank's own file
    with use_tap(SwapTap(str(out), verbose=False)):
        got = tap("local_sample_embs", torch.zeros(2, 3), rank=1, nranks=2)
    assert torch.equal(got, torch.ones(2, 3))


def test_registry_sanity():
    for name in STAGE_NAMES:
        s = get_stage(name)
        assert s.scope in ("global", "rank", "chunk", "group", "layer", "query")
        assert s.phase in ("index", "search") and (s.scope == "query") == (s.phase == "search"), name
        assert s.kind in ("tensor", "tuple", "int", "float", "list", "set")
        assert (s.dtype is not None) == (s.kind == "tensor"), name
        for c in s.consumers:
            get_stage(c)


def test_swap_wants_only_stages_it_holds(tmp_path):
    from colbert.tap.swap import stage_of_file

    assert [stage_of_file(f) for f in ("sample_pids.pt", "sample.pt", "sample_heldout.pt", "ivf_lengths.pt",
                                       "pid_ivf.pt", "D_chunk3_0.rank1.pt", "embs_12.pt", "local_sample_embs.pt",
                                       "manifest.json", "notes.pt", "encoder_layers_sample_0_b1_l3.pt")] == [
        "sample_pids", "sample", "sample_heldout", "ivf_lengths", "pid_ivf", "D", "embs", "local_sample_embs",
        None, None, "encoder_layers"]
    a = tmp_path / "A"
    a.mkdir()
    torch.save([1, 2], a / "doclens_0.pt")
    torch.save(torch.zeros(2), a / "sample_heldout.pt")
    t = SwapTap(str(a), verbose=False)
    assert {s for s in STAGE_NAMES if t.wants(s)} == {"doclens", "sample_heldout"}
    with use_tap(t):
        assert tap_wants("doclens") and not tap_wants("D", site="chunk0", group=0, **R1)
        tap("doclens", [3, 4], chunk=1, **R1)  # absent file: still listed as run normally
    assert t.not_found == {"doclens": ["doclens_1.pt"]}
    assert t.unused_files() == ["doclens_0.pt", "sample_heldout.pt"]
