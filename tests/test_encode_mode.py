"""Encode mode "exact" (colbert/indexing/encode_mode.py): each passage encoded at its own length, so the
index does not depend on index_bsize, the collection's order or the ranks; "parity" stays the default."""

import json
import os
import random

import pytest
import torch

from conftest import build_index, vaswani_passages

from colbert.indexing import index_files
from colbert.indexing.encode_mode import exact_batches, resolve_encode_mode
from colbert.infra import ColBERTConfig
from colbert.infra.validation import ConfigError

N = 300


def _load(path):
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    return torch.load(path, weights_only=True)


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return x == y


def _without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


@pytest.fixture(scope="module")
def exact_indexes(colbert_checkpoint, tmp_path_factory):
    passages = vaswani_passages(N)
    root = tmp_path_factory.mktemp("exact")
    return {bs: build_index(colbert_checkpoint, passages, root, name=f"exact.bs{bs}", index_bsize=bs,
                            encode_mode="exact") for bs in (4, 32, 128)}


def test_exact_index_is_the_same_for_every_index_bsize(exact_indexes):
    names = {bs: sorted(os.listdir(p)) for bs, p in exact_indexes.items()}
    assert names[4] == names[32] == names[128]
    assert "centroids.pt" in names[4] and "ivf.pid.pt" in names[4]
    ref = exact_indexes[4]
    for bs in (32, 128):
        for name in names[4]:
            a, b = _load(os.path.join(ref, name)), _load(os.path.join(exact_indexes[bs], name))
            if name in (index_files.PLAN, index_files.METADATA):  # the config names its own index_bsize
                assert a["config"]["index_bsize"] == 4 and b["config"]["index_bsize"] == bs
                a, b = dict(a, config=_without(a["config"], "index_bsize", "index_name", "index_path")), \
                    dict(b, config=_without(b["config"], "index_bsize", "index_name", "index_path"))
            assert _same(a, b), f"{name} differs between index_bsize 4 and {bs}"


def test_exact_mode_is_recorded(exact_indexes):
    for name in (index_files.PLAN, index_files.METADATA):
        assert _load(os.path.join(exact_indexes[4], name))["config"]["encode_mode"] == "exact"


def test_parity_stays_the_default_and_is_not_exported(small_index):
    path, _ = small_index
    for name in (index_files.PLAN, index_files.METADATA):
        assert "encode_mode" not in _load(os.path.join(path, name))["config"]  # upstream's keys exactly
    assert resolve_encode_mode(ColBERTConfig()) == "parity"


def test_mode_from_env_and_bad_values(monkeypatch):
    monkeypatch.setenv("COLBERT_ENCODE_MODE", "exact")
    assert resolve_encode_mode(ColBERTConfig()) == "exact"
    assert resolve_encode_mode(ColBERTConfig(encode_mode="parity")) == "parity"  # the config wins
    monkeypatch.setenv("COLBERT_ENCODE_MODE", "fast")
    with pytest.raises(ConfigError, match="COLBERT_ENCODE_MODE='fast': expected one of parity, exact"):
        resolve_encode_mode(ColBERTConfig(), error=ConfigError)
    with pytest.raises(ValueError, match="encode_mode='padded'"):
        resolve_encode_mode(ColBERTConfig(encode_mode="padded"))


def test_exact_batches_never_hold_one_row():
    lengths = [7, 9, 7, 7, 12, 9, 30]
    batches = exact_batches(lengths, budget=14)
    assert all(len(b) >= 2 for b in batches)
    assert all(len({lengths[i] for i in b}) == 1 for b in batches)  # one width per batch
    assert sorted({i for b in batches for i in b}) == list(range(len(lengths)))
    assert [len(b) * lengths[b[0]] <= max(14, 2 * lengths[b[0]]) for b in batches] == [True] * len(batches)
    # a floor of tokens per batch: short batches are filled up with copies of their own passages
    filled = exact_batches([5, 5, 5, 40], budget=1000, min_tokens=64)
    assert filled == [[0, 1, 2] * 4 + [0], [3, 3]]
    assert all(len(b) * lengths[b[0]] >= 20 for b in exact_batches(lengths, budget=1000, min_tokens=20))


def test_a_passage_depends_on_its_text_alone(colbert_checkpoint):
    """The same passages alone, in another order and among other passages: bit-identical embeddings."""
    from colbert.modeling.checkpoint import Checkpoint

    passages = vaswani_passages(160)
    ckpt = Checkpoint(colbert_checkpoint, colbert_config=ColBERTConfig(doc_maxlen=128, dim=96))

    def per_passage(texts, bsize):
        D, doclens = ckpt.docFromText(texts, bsize=bsize, keep_dims="flatten", exact_budget=2048)
        return dict(zip(texts, D.split(doclens)))

    whole = per_passage(passages, 32)
    shuffled = passages[40:120]
    random.Random(7).shuffle(shuffled)
    part = per_passage(shuffled, 3)
    assert all(torch.equal(part[t], whole[t]) for t in shuffled)
    for t in passages[:5]:  # each alone: a one-row batch is computed as two rows
        assert torch.equal(per_passage([t], 1)[t], whole[t])


def _per_passage(index_path, n):
    """{pid: (codes, residuals)} of an index, read through its chunk files."""
    from colbert.indexing.ivf import read_all_doclens

    doclens = read_all_doclens(index_path)
    codes = torch.cat([_load(os.path.join(index_path, index_files.chunk_file(index_files.CODES, c)))
                       for c in range(_load(os.path.join(index_path, index_files.METADATA))["num_chunks"])])
    residuals = torch.cat([_load(os.path.join(index_path, index_files.chunk_file(index_files.RESIDUALS, c)))
                           for c in range(_load(os.path.join(index_path, index_files.METADATA))["num_chunks"])])
    assert len(doclens) == n
    out, start = {}, 0
    for pid, d in enumerate(doclens):
        out[pid] = (codes[start:start + d], residuals[start:start + d])
        start += d
    return out


def test_exact_index_does_not_depend_on_order_or_ranks(exact_indexes, colbert_checkpoint, tmp_path_factory):
    passages = vaswani_passages(N)
    order = list(range(N))
    random.Random(11).shuffle(order)
    root = tmp_path_factory.mktemp("exact-order")
    shuffled = build_index(colbert_checkpoint, [passages[i] for i in order], root, name="exact.shuffled",
                           index_bsize=32, encode_mode="exact")
    two_ranks = build_index(colbert_checkpoint, passages, root, name="exact.nranks2", nranks=2, index_bsize=32,
                            encode_mode="exact")
    ref = exact_indexes[32]
    for name in index_files.CODEC_FILES:  # centroids, buckets, avg_residual: no pid in them
        assert _same(_load(os.path.join(ref, name)), _load(os.path.join(shuffled, name))), name
    a, b = _per_passage(ref, N), _per_passage(shuffled, N)
    assert all(_same(a[pid], b[new]) for new, pid in enumerate(order))
    # two ranks: every index file as one rank writes it (the config names its nranks)
    assert sorted(os.listdir(ref)) == sorted(os.listdir(two_ranks))
    for name in os.listdir(ref):
        x, y = _load(os.path.join(ref, name)), _load(os.path.join(two_ranks, name))
        if name in (index_files.PLAN, index_files.METADATA):
            x, y = (dict(v, config=_without(v["config"], "nranks", "index_name", "index_path", "root")) for v in (x, y))
        assert _same(x, y), f"{name} differs between 1 and 2 ranks"


def test_compare_shows_the_encode_mode(small_index, colbert_checkpoint, tmp_path, capsys):
    """Parity against exact on the same 120 passages: compare names both modes and finds the drift."""
    from colbert.cli import main
    from colbert.compare.engine import compare_runs

    parity, passages = small_index
    exact = build_index(colbert_checkpoint, passages, tmp_path, name="exact", encode_mode="exact")
    report = compare_runs(parity, exact)
    assert report.versions == {"A": {"encode mode": "parity"}, "B": {"encode mode": "exact"}}
    assert report.exit_code == 1 and report.first_divergence is not None  # padding moved the bits
    assert main(["compare", parity, exact, "--format", "markdown"]) == 1
    assert "encode mode: parity → exact" in capsys.readouterr().out


def test_cli_encode_mode(colbert_checkpoint, tmp_path, capsys):
    from colbert.cli import main

    tsv = tmp_path / "c.tsv"
    tsv.write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(vaswani_passages(40))))
    args = ["index", "--checkpoint", colbert_checkpoint, "--collection", str(tsv), "--root", str(tmp_path),
            "--name", "cli-exact", "--nbits", "2", "--doc-maxlen", "64", "--kmeans-niters", "2"]
    assert main(args + ["--encode-mode", "exact"]) == 0
    index = next(tmp_path.rglob("cli-exact"))
    assert _load(str(index / index_files.METADATA))["config"]["encode_mode"] == "exact"
    with pytest.raises(SystemExit) as e:
        main(args + ["--encode-mode", "padded"])
    assert e.value.code == 2 and "invalid choice: 'padded'" in capsys.readouterr().err
