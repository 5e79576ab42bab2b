"""colbert-tap compare, on tap folders and index folders the tests build with torch.save."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colbert.compare import Options, compare_runs, main, resolve_profiles
from colbert.compare.layout import parse_tap_name, scan_run
from colbert.compare.render import render_markdown
from colbert.compare.semantic import unpack_buckets
from colbert.compare.tolerances import PROFILES
from colbert.tap.stages import STAGES, artifact_filename

REPO = Path(__file__).resolve().parents[1]


# ---- builders -------------------------------------------------------------------------------------

def pack_residuals(buckets: np.ndarray, nbits: int) -> torch.Tensor:
    """Upstream's layout, written independently of the code under test: bits of each bucket LSB
    first, then numpy packbits (first bit into the most significant position)."""
    e, _ = buckets.shape
    bits = ((buckets[..., None] >> np.arange(nbits)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(bits.reshape(e, -1), axis=1))


def build_pid_ivf(codes: torch.Tensor, doclens: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    emb2pid = torch.repeat_interleave(torch.arange(len(doclens)), torch.tensor(doclens))
    lists = [sorted(set(emb2pid[codes == c].tolist())) for c in range(k)]
    lengths = torch.tensor([len(x) for x in lists], dtype=torch.int64)
    flat = [p for x in lists for p in x]
    offsets = [0] + torch.cumsum(lengths, 0).tolist()
    max_stride = int(lengths.max())
    if offsets[-2] + max_stride > len(flat):
        flat += [0] * max_stride
    return torch.tensor(flat, dtype=torch.int32), lengths


def make_index(root: Path, *, seed: int = 0, k: int = 8, dim: int = 16, nbits: int = 2, chunks: int = 2,
               passages_per_chunk: int = 10, edit=None) -> dict:
    """A small index in the colbert-ai 0.2.22 layout. `edit(state)` may change the state before saving."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    st = {
        "centroids": torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=-1).half(),
        "cutoffs": torch.tensor([-0.1, 0.0, 0.1] if nbits == 2 else list(np.linspace(-0.1, 0.1, 2 ** nbits - 1)),
                                dtype=torch.float32),
        "weights": torch.linspace(-0.15, 0.15, 2 ** nbits, dtype=torch.float32),
        "avg_residual": torch.tensor(0.0421, dtype=torch.float32),
        "doclens": [], "codes": [], "buckets": [],
        "config": {"nbits": nbits, "dim": dim, "index_bsize": 64, "kmeans_niters": 4,
                   "index_path": str(root), "root": str(root.parent), "experiment": "default",
                   "checkpoint": "/models/colbertv2.0", "collection": "/data/collection.tsv", "name": "idx"},
    }
    for _ in range(chunks):
        dl = [int(x) for x in rng.integers(2, 7, passages_per_chunk)]
        e = sum(dl)
        st["doclens"].append(dl)
        st["codes"].append(torch.randint(0, k, (e,), generator=g, dtype=torch.int32))
        st["buckets"].append(rng.integers(0, 2 ** nbits, (e, dim)))
    if edit is not None:
        edit(st)
    torch.save(st["centroids"], root / "centroids.pt")
    torch.save((st["cutoffs"], st["weights"]), root / "buckets.pt")
    torch.save(st["avg_residual"], root / "avg_residual.pt")
    offset = 0
    for i in range(chunks):
        torch.save(st["codes"][i], root / f"{i}.codes.pt")
        torch.save(pack_residuals(st["buckets"][i], nbits), root / f"{i}.residuals.pt")
        (root / f"doclens.{i}.json").write_text(json.dumps(st["doclens"][i]))
        (root / f"{i}.metadata.json").write_text(json.dumps({
            "passage_offset": offset, "num_passages": len(st["doclens"][i]),
            "num_embeddings": len(st["codes"][i]), "embedding_offset": sum(len(c) for c in st["codes"][:i])}, indent=4))
        offset += len(st["doclens"][i])
    all_codes = torch.cat(st["codes"])
    all_doclens = [d for dl in st["doclens"] for d in dl]
    torch.save(build_pid_ivf(all_codes, all_doclens, k), root / "ivf.pid.pt")
    plan = {"config": st["config"], "num_chunks": chunks, "num_partitions": k, "num_embeddings_est": 123.5,
            "avg_doclen_est": 4.25}
    (root / "plan.json").write_text(json.dumps(plan, indent=4))
    meta = {"config": st["config"], "num_chunks": chunks, "num_partitions": k, "num_embeddings": len(all_codes),
            "avg_doclen": len(all_codes) / len(all_doclens)}
    (root / "metadata.json").write_text(json.dumps(meta, indent=4))
    return st


def make_tap(root: Path, *, seed: int = 0, edit=None, layers: int = 0, batches: int = 2) -> dict:
    """A tap folder with registry file names; values are random but seeded."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    d = torch.randn(40, 16, generator=g)
    codes = torch.randint(0, 8, (40,), generator=g, dtype=torch.int32)
    ivf = torch.sort(codes.to(torch.int64), stable=True)
    st = {
        "num_passages": 20,
        "sample_pids": {3, 1, 4, 15, 9, 2, 6},
        "D_sample_0": d,
        "local_sample_embs": d.clone(),
        "sample": d[:36].half(),
        "embs_0": d.half(),
        "codes_0": codes,
        "ivf": ivf.indices,
        "ivf_lengths": torch.bincount(ivf.values, minlength=8),
        "batches_sample_0": [(d[:20].reshape(4, 5, 16), torch.ones(4, 5, 1, dtype=torch.bool)),
                             (d[20:].reshape(4, 5, 16), torch.ones(4, 5, 1, dtype=torch.bool))],
    }
    for b in range(batches if layers else 0):
        for l in range(layers):
            st[f"encoder_layers_sample_0_b{b}_l{l}"] = torch.randn(2, 5, 32, generator=g)
    if edit is not None:
        edit(st)
    for name, v in st.items():
        torch.save(v, root / f"{name}.pt")
    manifest = {"versions": {"torch": "2.13.0+cpu", "colbert": "0.0.1"}, "config": {"nbits": 2},
                "created": "2026-01-01T00:00:00", "tap_dir": str(root),
                "artifacts": {n: {"file": f"{n}.pt", "sha256": "x"} for n in st}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return st


def run_json(a: Path, b: Path, *extra: str, capsys) -> tuple[int, dict]:
    code = main([str(a), str(b), "--format", "json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def rows_by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["rows"]}


# ---- whole runs -----------------------------------------------------------------------------------

def test_identical_index_folders_all_match(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    assert code == 0
    assert rep["matched"] == rep["total"] > 0
    assert rep["first_divergence"] is None and rep["errors"] == 0
    stages = [r["stage"] for r in rep["rows"] if r["stage"]]
    assert stages[:3] == ["bucket_cutoffs", "bucket_weights", "avg_residual"]  # registry order, not file order
    assert stages.index("centroids") < stages.index("doclens") < stages.index("codes") < stages.index("pid_ivf")
    names = [r["name"] for r in rep["rows"]]
    assert {"buckets.pt[0]", "buckets.pt[1]", "ivf.pid.pt[0]", "ivf.pid.pt[1]", "0.residuals.pt", "plan.json",
            "metadata.json", "1.metadata.json", "doclens.1.json"} <= set(names)
    assert all(r["verdicts"] == {"default": True, "bnb": True} for r in rep["rows"])


def test_identical_tap_folders_all_match_table(tmp_path, capsys):
    make_tap(tmp_path / "a", layers=2)
    make_tap(tmp_path / "b", layers=2)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "match (profile default)" in out and "no divergence" in out
    for stage in ("sample_pids", "D", "encoder_layers", "batches"):
        assert stage in out


def test_perturbed_float_fails_default_passes_bnb(tmp_path, capsys):
    def bump(st):  # 1e-7 of the tensor's scale on an element that sits at zero: atol decides
        d = st["D_sample_0"].clone()
        d[3, 5] = 1e-7 * float(d.abs().max())
        st["D_sample_0"] = d

    def zero(st):
        d = st["D_sample_0"].clone()
        d[3, 5] = 0.0
        st["D_sample_0"] = d

    make_tap(tmp_path / "a", edit=zero)
    make_tap(tmp_path / "b", edit=bump)
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["D_sample_0.pt"]
    assert row["verdicts"] == {"default": False, "bnb": True}
    assert row["status"] == "differs" and code == 1
    assert row["n_diff"] == 1 and row["frac_outside"]["default"] == pytest.approx(1 / row["n_total"])
    assert 1e-8 < row["max_abs"] < 1e-6
    assert rep["first_divergence"] == "D"
    code, rep = run_json(tmp_path / "a", tmp_path / "b", "--profile", "bnb", capsys=capsys)
    assert code == 0 and rep["profile"] == "bnb"
    code, rep = run_json(tmp_path / "a", tmp_path / "b", "--atol", "1e-9", capsys=capsys)
    assert code == 1 and rep["profile"] == "custom"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--profile", "exact,torch"]) == 1


def test_perturbed_int_fails_with_count(tmp_path, capsys):
    make_index(tmp_path / "a")

    def flip(st):
        c = st["codes"][0].clone()
        for i in (0, 5, 9):
            c[i] = (c[i] + 1) % 8
        st["codes"][0] = c

    make_index(tmp_path / "b", edit=flip)
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["0.codes.pt"]
    assert code == 1 and row["status"] == "differs"
    assert row["n_diff"] == 3 and row["kind"] == "tensor" and row["dtype_a"] == "int32"
    assert f"3/{row['n_total']} embeddings assigned to another centroid" in row["semantic"]
    md = render_markdown(compare_runs(tmp_path / "a", tmp_path / "b"))
    assert f"✗ 3/{row['n_total']}" in md


def test_reordered_codes_with_identical_ivf_sets(tmp_path, capsys):
    make_index(tmp_path / "a", seed=3)

    def reorder(st):  # reverse the embeddings of every passage: same centroids per passage, other order
        out = []
        for codes, dl in zip(st["codes"], st["doclens"]):
            parts = torch.split(codes, dl)
            out.append(torch.cat([p.flip(0) for p in parts]))
        st["codes"] = out

    make_index(tmp_path / "b", seed=3, edit=reorder)
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    rows = rows_by_name(rep)
    codes = rows["0.codes.pt"]
    assert codes["status"] == "differs" and codes["n_diff"] > 0
    assert "reordered within passages" in codes["semantic"]
    ivf = rows["ivf.pid.pt[0]"]
    assert ivf["status"] == "match" and ivf["stage"] == "pid_ivf"
    assert "per-centroid pid sets identical" in ivf["semantic"]
    assert any("same set of pids" in n for n in rep["notes"])
    assert code == 1


def test_ivf_compared_per_centroid_as_sets(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def shuffle_within_centroids(st):  # what an unstable sort may do to ties
        ivf, lengths = st["ivf"].clone(), st["ivf_lengths"]
        off = 0
        for n in lengths.tolist():
            ivf[off:off + n] = ivf[off:off + n].flip(0)
            off += n
        st["ivf"] = ivf

    make_tap(tmp_path / "b", edit=shuffle_within_centroids)
    _, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["ivf.pt"]
    assert row["status"] == "match" and row["n_diff"] > 0
    assert "order/padding" in row["semantic"]

    def move_one(st):  # one embedding id swapped between two centroids
        ivf = st["ivf"].clone()
        ivf[0], ivf[-1] = ivf[-1].clone(), ivf[0].clone()
        st["ivf"] = ivf

    make_tap(tmp_path / "c", edit=move_one)
    _, rep = run_json(tmp_path / "a", tmp_path / "c", capsys=capsys)
    row = rows_by_name(rep)["ivf.pt"]
    assert row["status"] == "differs"
    assert row["details"]["centroids_differ"] == 2
    assert "2/8 centroids hold a different embedding id set" in row["semantic"]


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_residuals_one_bucket_fraction(tmp_path, capsys, nbits):
    st = make_index(tmp_path / "a", nbits=nbits)

    def one_bucket(s):
        s["buckets"][1] = s["buckets"][1].copy()
        s["buckets"][1][4, 7] = (s["buckets"][1][4, 7] + 1) % (2 ** nbits)

    make_index(tmp_path / "b", nbits=nbits, edit=one_bucket)
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["1.residuals.pt"]
    e, dim = st["buckets"][1].shape
    assert code == 1 and row["status"] == "differs"
    assert row["details"]["buckets_differ"] == 1
    assert row["details"]["fraction_buckets_differ"] == pytest.approx(1 / (e * dim))
    assert row["details"]["nbits"] == nbits and row["details"]["embeddings_differ"] == 1
    assert f"1/{e * dim} buckets differ" in row["semantic"]
    assert rows_by_name(rep)["0.residuals.pt"]["status"] == "match"


def test_unpack_buckets_inverts_upstream_packing():
    rng = np.random.default_rng(7)
    for nbits in (1, 2, 4, 8):
        b = rng.integers(0, 2 ** nbits, (5, 32))
        assert torch.equal(unpack_buckets(pack_residuals(b, nbits), nbits), torch.from_numpy(b).to(torch.int32))


def test_one_sided_files(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    (tmp_path / "b" / "1.codes.pt").unlink()
    torch.save(torch.arange(4), tmp_path / "b" / "extra_thing.pt")
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    rows = rows_by_name(rep)
    assert code == 1
    assert rows["1.codes.pt"]["status"] == "only_a" and rows["1.codes.pt"]["status_text"] == "only in A"
    assert rows["1.codes.pt"]["dtype_a"] == "int32"
    assert rows["extra_thing.pt"]["status"] == "only_b" and rows["extra_thing.pt"]["stage"] is None
    assert rows["0.codes.pt"]["status"] == "match"
    assert rep["first_divergence"] == "codes"


def test_tuple_elements_and_structure_mismatch(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def extra_batch(st):
        st["batches_sample_0"] = st["batches_sample_0"] + [(torch.zeros(1, 5, 16), torch.ones(1, 5, 1, dtype=torch.bool))]

    make_tap(tmp_path / "b", edit=extra_batch)
    _, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    rows = rows_by_name(rep)
    assert rows["batches_sample_0.pt[0][0]"]["kind"] == "tuple element"
    assert rows["batches_sample_0.pt[0][1]"]["dtype_a"] == "bool"
    assert rows["batches_sample_0.pt[1][0]"]["status"] == "match"
    assert rows["batches_sample_0.pt[2][0]"]["status"] == "only_b"


def test_markdown_gives_one_row_per_artifact_unless_detail(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def drift(st):  # one of batches' four tensors moves; an extra (D, mask) pair only B has
        b = [list(p) for p in st["batches_sample_0"]]
        b[1][0] = b[1][0] + 1e-2
        st["batches_sample_0"] = [tuple(p) for p in b] + [(torch.zeros(1, 5, 16), torch.ones(1, 5, 1, dtype=torch.bool))]

    make_tap(tmp_path / "b", edit=drift)
    report = compare_runs(tmp_path / "a", tmp_path / "b")
    element_rows = [r for r in report.rows if r.name.startswith("batches_sample_0.pt[")]
    assert len(element_rows) == 6
    summary = render_markdown(report)
    batch_lines = [line for line in summary.splitlines() if line.startswith("| ") and "batches_sample_0.pt" in line]
    assert len(batch_lines) == 1
    cells = [c.strip() for c in _cells(batch_lines[0])]
    assert cells[1:4] == ["batches", "batches_sample_0.pt", "list"]
    assert cells[5:7] == ["4 elements", "6 elements"]
    assert "3/6 elements match" in cells[-1] and "first: [1][0]" in cells[-1]
    assert cells[7] == "✗ 3/6"  # the default profile: the drifted tensor and B's extra pair fail it
    # every other artifact is one file with one value: the same row either way
    table_rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(table_rows) == len(report.rows) - len(element_rows) + 1
    detail = render_markdown(report, detail=True)
    assert len([line for line in detail.splitlines() if line.startswith("| ") and "batches_sample_0.pt[" in line]) == 6
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--format", "markdown", "--detail"])
    assert capsys.readouterr().out == detail


def test_corrupt_file_is_an_error_row_and_the_rest_continues(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    bad = tmp_path / "b" / "0.residuals.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch file")
    (tmp_path / "b" / "plan.json").write_text("{not json")
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    rows = rows_by_name(rep)
    assert code == 2
    assert rows["0.residuals.pt"]["status"] == "error" and str(bad) in rows["0.residuals.pt"]["error"]
    assert rows["plan.json"]["status"] == "error" and "plan.json" in rows["plan.json"]["error"]
    assert rows["1.residuals.pt"]["status"] == "match" and rows["0.codes.pt"]["status"] == "match"
    assert rep["errors"] == 2 and rep["first_divergence"] is None
    md = render_markdown(compare_runs(tmp_path / "a", tmp_path / "b"))
    assert "error" in md and "0.residuals.pt" in md


class _NotAWeight:
    pass


def test_weights_only_refusal_is_an_error_row(tmp_path, capsys):
    make_tap(tmp_path / "a")
    make_tap(tmp_path / "b")
    torch.save({"obj": _NotAWeight()}, tmp_path / "b" / "sample.pt")
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["sample.pt"]
    assert code == 2 and row["status"] == "error" and "weights_only" in row["error"]


def test_legacy_format_and_mmap(tmp_path, capsys, monkeypatch):
    make_tap(tmp_path / "a")
    make_tap(tmp_path / "b")
    d = torch.load(tmp_path / "b" / "D_sample_0.pt", weights_only=True)
    torch.save(d, tmp_path / "b" / "D_sample_0.pt", _use_new_zipfile_serialization=False)
    calls = []
    real = torch.load

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    code, _ = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    assert code == 0
    assert all(kw.get("weights_only") is True for kw in calls)
    assert sum(kw.get("mmap") is True for kw in calls) >= len(calls) // 2


# ---- verdict, formats -----------------------------------------------------------------------------

def test_first_divergence_and_downstream_marking(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def drift(st):  # the encoder drifts: D and everything made from it
        st["sample_pids"] = sorted(st["sample_pids"], reverse=True)  # a list, same set: still a match
        for k in ("D_sample_0", "local_sample_embs"):
            st[k] = st[k] + 1e-3
        st["sample"] = (st["sample"].float() + 1e-2).half()
        st["embs_0"] = (st["embs_0"].float() + 1e-2).half()

    make_tap(tmp_path / "b", edit=drift)
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    rows = rows_by_name(rep)
    assert code == 1
    assert rep["first_divergence"] == "D" and rep["first_divergence_row"] == "D_sample_0.pt"
    assert rows["sample_pids.pt"]["status"] == "match" and "same set of 7" in rows["sample_pids.pt"]["semantic"]
    for name in ("local_sample_embs.pt", "sample.pt", "embs_0.pt", "codes_0.pt"):
        assert rows[name]["downstream"], name
        assert "downstream of first divergence" in rows[name]["notes"]
    for name in ("num_passages.pt", "sample_pids.pt", "D_sample_0.pt", "batches_sample_0.pt[0][0]"):
        assert not rows[name]["downstream"], name
    assert set(rep["downstream"]) >= {"local_sample_embs.pt", "embs_0.pt"}
    assert "first divergence: D (D_sample_0.pt, differs)" in rep["verdict"]
    order = [r["name"] for r in rep["rows"]]
    assert order.index("num_passages.pt") < order.index("sample_pids.pt") < order.index("batches_sample_0.pt[0][0]") \
        < order.index("D_sample_0.pt") < order.index("local_sample_embs.pt") < order.index("embs_0.pt") \
        < order.index("codes_0.pt") < order.index("ivf.pt") < order.index("manifest.json")


def test_json_output_keys(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    _, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    assert {"first_divergence", "first_divergence_row", "rows", "matched", "total", "errors", "profile", "profiles",
            "verdict", "exit_code", "downstream", "versions", "notes"} <= set(rep)
    assert len(rep["rows"]) == rep["total"]
    for r in rep["rows"]:
        assert {"name", "stage", "kind", "dtype_a", "dtype_b", "shape_a", "shape_b", "status", "verdicts", "max_abs",
                "mean_abs", "n_diff", "n_total", "frac_outside", "semantic", "error", "downstream",
                "file_a", "file_b"} <= set(r)
    assert [p["name"] for p in rep["profiles"]] == ["default", "bnb"]
    assert rep["profiles"][1]["tolerances"]["bfloat16"] == {"atol": 1e-3, "rtol": 1e-2}


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


def test_markdown_is_a_valid_pipe_table(tmp_path, capsys):
    make_tap(tmp_path / "a", layers=3)

    def drift(st):
        st["D_sample_0"] = st["D_sample_0"] + 1e-3
        st["sample_pids"] = set(list(st["sample_pids"])[:-1]) | {999}

    make_tap(tmp_path / "b", edit=drift, layers=3)
    out = tmp_path / "cmp.md"
    code = main([str(tmp_path / "a"), str(tmp_path / "b"), "--format", "markdown", "-o", str(out), "--layers",
                 "--detail"])
    assert code == 1
    text = out.read_text()
    lines = text.splitlines()
    tables, cur = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    assert len(tables) == 2  # the rows and the per-layer table
    for t in tables:
        width = len(_cells(t[0]))
        assert all(len(_cells(x)) == width for x in t)
        assert all(re.fullmatch(r"\s*-{3,}:?\s*", c) for c in _cells(t[1]))
    header = [c.strip() for c in _cells(tables[0][0])]
    assert header[:7] == ["#", "stage", "artifact", "kind", "dtype", "shape A", "shape B"]
    assert "default" in header and "bnb" in header
    assert len(tables[0]) - 2 == len(compare_runs(tmp_path / "a", tmp_path / "b").rows)
    assert "**" in text and "first divergence: sample_pids" in text


def test_layers_table_and_plot(tmp_path, capsys):
    make_tap(tmp_path / "a", layers=4)

    def drift(st):  # grows with depth, as numeric noise does through a transformer
        for k in list(st):
            m = re.fullmatch(r"encoder_layers_sample_0_b(\d+)_l(\d+)", k)
            if m and int(m.group(2)) > 0:
                st[k] = st[k] + 10.0 ** (-8 + int(m.group(2)))

    make_tap(tmp_path / "b", edit=drift, layers=4)
    png = tmp_path / "layers.png"
    code, rep = run_json(tmp_path / "a", tmp_path / "b", "--plot", str(png), capsys=capsys)
    assert code == 1
    layers = rep["layers"]
    assert [e["layer"] for e in layers] == [0, 1, 2, 3]
    assert [e["tensors"] for e in layers] == [2, 2, 2, 2]
    assert layers[0]["mean_abs"] == 0 and layers[0]["match"] and layers[0]["label"] == "emb"
    assert layers[3]["label"] == "proj"
    means = [e["mean_abs"] for e in layers]
    assert means[1] < means[2] < means[3]
    assert layers[3]["max_abs"] == pytest.approx(1e-5, rel=1e-2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--layers"]) == 1
    assert "per-layer" in capsys.readouterr().out


def test_json_files_ignore_paths_and_timestamps(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "elsewhere" / "b")  # other index_path, root
    code, rep = run_json(tmp_path / "a", tmp_path / "elsewhere" / "b", capsys=capsys)
    rows = rows_by_name(rep)
    assert code == 0 and rows["plan.json"]["status"] == "match"
    assert "config.index_path" in rows["plan.json"]["details"]["ignored"]

    def niters(st):
        st["config"] = dict(st["config"], kmeans_niters=20)

    make_index(tmp_path / "c", edit=niters)
    code, rep = run_json(tmp_path / "a", tmp_path / "c", capsys=capsys)
    row = rows_by_name(rep)["plan.json"]
    assert code == 1 and row["status"] == "differs"
    assert row["details"]["fields_differ"] == [{"field": "config.kmeans_niters", "a": 4, "b": 20}]
    assert rep["first_divergence"] == "plan.json"  # no stage differs, so the file is named


def test_manifest_versions_reported_not_judged(tmp_path, capsys):
    make_tap(tmp_path / "a")
    make_tap(tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["versions"]["torch"] = "2.5.0"
    m["created"] = "2027-01-01"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    assert code == 0 and rep["versions"]["B"]["torch"] == "2.5.0"
    assert "torch: 2.13.0+cpu → 2.5.0" in render_markdown(compare_runs(tmp_path / "a", tmp_path / "b"))


def test_index_with_tap_folder_and_cross_source_pairing(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_tap(tmp_path / "a" / "tap")
    make_index(tmp_path / "b")
    make_tap(tmp_path / "b" / "tap")
    code, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    names = [r["name"] for r in rep["rows"]]
    assert code == 0 and "tap/codes_0.pt" in names and "0.codes.pt" in names
    # a tap folder against an index folder: codes_0.pt pairs with 0.codes.pt
    tap = tmp_path / "t"
    tap.mkdir()
    shutil.copy(tmp_path / "a" / "0.codes.pt", tap / "codes_0.pt")
    make_index(tmp_path / "c")
    _, rep = run_json(tap, tmp_path / "c", capsys=capsys)
    row = rows_by_name(rep)["codes_0.pt"]
    assert row["status"] == "match" and row["file_b"].endswith("0.codes.pt")


def test_chunked_comparison_gives_the_same_figures(tmp_path, capsys):
    def noisy(st):
        g = torch.Generator().manual_seed(1)
        st["D_sample_0"] = st["D_sample_0"] + 1e-6 * torch.randn(st["D_sample_0"].shape, generator=g)

    make_tap(tmp_path / "a")
    make_tap(tmp_path / "b", edit=noisy)
    whole = compare_runs(tmp_path / "a", tmp_path / "b")
    small = compare_runs(tmp_path / "a", tmp_path / "b", Options(chunk_elems=7))
    for x, y in zip(whole.rows, small.rows):
        assert (x.name, x.status, x.n_diff, x.frac_outside, x.max_abs) == (y.name, y.status, y.n_diff, y.frac_outside,
                                                                          y.max_abs)
        assert x.mean_abs == pytest.approx(y.mean_abs) if x.mean_abs is not None else y.mean_abs is None


def test_stage_filter(tmp_path, capsys):
    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    _, rep = run_json(tmp_path / "a", tmp_path / "b", "--stages", "codes,pid_ivf*", capsys=capsys)
    assert {r["stage"] for r in rep["rows"]} == {"codes", "pid_ivf", "pid_ivf_lengths"}
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--stages", "nope"]) == 2


def test_errors_exit_2(tmp_path, capsys):
    make_tap(tmp_path / "a")
    assert main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), str(tmp_path / "a"), "--profile", "custom"]) == 2
    assert main([str(tmp_path / "a")]) == 2  # usage error


def test_module_entry_point(tmp_path):
    make_tap(tmp_path / "a")
    make_tap(tmp_path / "b")
    p = subprocess.run([sys.executable, "-m", "colbert.compare", str(tmp_path / "a"), str(tmp_path / "b"),
                        "--format", "json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["first_divergence"] is None


# ---- units --------------------------------------------------------------------------------------

def test_every_registry_name_parses_back():
    for s in STAGES:
        for nranks in (1, 3):
            name = artifact_filename(s.name, rank=2, nranks=nranks, chunk=4, site="chunk1", group=5, batch=6, layer=7,
                                     qid=8)
            parsed = parse_tap_name(name)
            assert parsed is not None and parsed[0] == s.name, name
            if s.scope == "layer":
                assert parsed[1]["layer"] == 7 and parsed[1]["batch"] == 6 and parsed[1]["site"] == "chunk1"
    assert parse_tap_name("sampled_pids.pt")[0] == "sample_pids"
    assert parse_tap_name("whatever.pt") is None
    assert parse_tap_name("ivf_lengths.pt")[0] == "ivf_lengths"


def test_scan_orders_sites_and_groups(tmp_path):
    for n in ("D_chunk10_0.pt", "D_chunk2_1.pt", "D_chunk2_0.pt", "D_sample_0.pt", "embs_1.pt", "embs_0.pt"):
        torch.save(torch.zeros(1), tmp_path / n)
    names = [a.display for a in scan_run(tmp_path).artifacts]
    assert names == ["D_sample_0.pt", "D_chunk2_0.pt", "D_chunk2_1.pt", "D_chunk10_0.pt", "embs_0.pt", "embs_1.pt"]


def test_torch_profile_matches_assert_close_defaults():
    precisions = getattr(getattr(torch.testing, "_comparison", None), "_DTYPE_PRECISIONS", None)
    if precisions is None:
        pytest.skip("torch no longer exposes its assert_close tolerance table")
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        rtol, atol = precisions[dt]
        assert PROFILES["torch"].tol(str(dt).removeprefix("torch.")) == (atol, rtol)


def test_profile_resolution():
    assert [p.name for p in resolve_profiles(None)] == ["default", "bnb"]
    assert [p.name for p in resolve_profiles(None, atol=1e-3)] == ["custom"]
    assert [p.name for p in resolve_profiles(["bnb,exact"], rtol=1e-2)] == ["bnb", "exact", "custom"]
    assert PROFILES["bnb"].tol("float16") == (1e-4, 1e-3) and PROFILES["default"].tol("bfloat16") == (1e-8, 1e-5)
    with pytest.raises(ValueError):
        resolve_profiles(["nope"])


def test_float16_judged_with_float16_tolerance(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def nudge(st):  # one float16 ulp at 1.0 is ~1e-3: inside bnb's float16 rtol, outside default
        s = st["sample"].clone()
        s[0, 0] = 1.0
        st["sample"] = s

    def nudge_b(st):
        s = st["sample"].clone()
        s[0, 0] = 1.0009765625
        st["sample"] = s

    make_tap(tmp_path / "a", edit=nudge)
    make_tap(tmp_path / "b", edit=nudge_b)
    _, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    assert rows_by_name(rep)["sample.pt"]["verdicts"] == {"default": False, "bnb": True}


def test_nan_inf_and_dtype_mismatch():
    from colbert.compare.numeric import compare_tensors

    profiles = resolve_profiles(["default", "bnb"])
    a = torch.tensor([1.0, float("nan"), float("inf"), 2.0, 0.0])
    st = compare_tensors(a, a.clone(), profiles)
    assert st.n_diff == 0 and st.n_out == {"default": 0, "bnb": 0} and st.max_abs == 0 and st.n_finite == 3
    b = torch.tensor([1.0, 0.0, float("-inf"), 2.0, 0.0])
    st = compare_tensors(a, b, profiles, chunk_elems=2)
    assert st.n_diff == 2 and st.n_out["default"] == 2 and st.max_abs == float("inf")
    # a float16 side against a float32 side is judged with float16's tolerance, computed in float64
    x = torch.tensor([1.0, 2.0])
    st = compare_tensors(x.half(), x + 1e-4, profiles)
    assert st.tol["bnb"] == PROFILES["bnb"].tol("float16") and st.n_out["bnb"] == 0 and st.n_out["default"] == 2


def test_dtype_mismatch_is_a_difference(tmp_path, capsys):
    make_tap(tmp_path / "a")

    def widen(st):
        st["codes_0"] = st["codes_0"].to(torch.int64)

    make_tap(tmp_path / "b", edit=widen)
    _, rep = run_json(tmp_path / "a", tmp_path / "b", capsys=capsys)
    row = rows_by_name(rep)["codes_0.pt"]
    assert row["status"] == "differs" and row["n_diff"] == 0 and "dtype int32 vs int64" in row["notes"]


def test_progress_bar_and_subcommand_wiring(tmp_path, capsys):
    import argparse

    from colbert.compare import add_arguments, run

    make_index(tmp_path / "a")
    make_index(tmp_path / "b")
    parser = argparse.ArgumentParser(prog="colbert-tap")
    sub = parser.add_subparsers(dest="cmd")
    add_arguments(sub.add_parser("compare"))
    args = parser.parse_args(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--progress", "-f", "json"])
    assert run(args) == 0
    captured = capsys.readouterr()
    assert "compare" in captured.err and "B" in captured.err  # tqdm, in bytes
    assert json.loads(captured.out)["exit_code"] == 0


def test_first_value_divergence_skips_structural_and_manifest_rows():
    from colbert.compare.report import DIFFERS, MATCH, Report, Row

    rows = [
        Row(name="tap/manifest.json", key="manifest", stage=None, kind="json", status=DIFFERS),
        Row(name="tap/num_passages.pt", key="n", stage="num_passages", kind="int", status=MATCH),
        Row(name="tap/tensorize_output_sample_0.pt[0][0][0]", key="t", stage="tensorize_output",
            kind="tuple element", shape_a="(32, 155)", shape_b="(4, 155)", status=DIFFERS),
        Row(name="tap/local_sample_embs.pt", key="l", stage="local_sample_embs", kind="tensor",
            shape_a="(100, 96)", shape_b="(100, 96)", status=DIFFERS),
    ]
    report = Report(a="A", b="B", profiles=[{"name": "default"}], rows=rows)
    assert report.first_divergence == "tensorize_output"
    assert report.first_value_divergent_row.stage == "local_sample_embs"
    assert "first difference in values: local_sample_embs" in report.verdict_line()
    assert report.to_json()["first_value_divergence"] == "local_sample_embs"

    only_manifest = Report(a="A", b="B", profiles=[{"name": "default"}], rows=rows[:2])
    assert only_manifest.first_divergence == "tap/manifest.json"
    assert only_manifest.first_value_divergent_row is None


def test_environment_in_manifest_is_shown_not_judged(tmp_path):
    import json

    from colbert.compare.engine import compare_runs

    def run(root, threads, config_nbits):
        tap = root / "tap"
        tap.mkdir(parents=True)
        manifest = {"format": "colbert-tap-manifest/1", "versions": {"torch": "2.13.0+cpu"},
                    "device": {"cpu": "Some CPU", "device": "cpu", "cuda_available": False},
                    "threads": {"torch_num_threads": threads}, "argv": ["x", str(threads)],
                    "config": {"nbits": config_nbits}, "artifacts": {}}
        (tap / "manifest.json").write_text(json.dumps(manifest))
        return root

    a = run(tmp_path / "a", 1, 2)
    report = compare_runs(str(a), str(run(tmp_path / "b", 2, 2)))
    assert report.exit_code == 0, report.verdict_line()
    assert report.versions["A"]["torch threads"] == 1 and report.versions["B"]["torch threads"] == 2
    assert report.versions["A"]["device"] == "Some CPU"
    # a different config is a cause, not an environment: still judged
    assert compare_runs(str(a), str(run(tmp_path / "c", 1, 4))).exit_code == 1
