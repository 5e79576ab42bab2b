"""Search building blocks: StridedTensor, the index loader (incl. mmap, legacy ivf.pt, multi-chunk)
and its errors for folders that are not a complete index of this format."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from colbert.search.index_loader import IndexFormatError, load_index
from colbert.search.strided_tensor import StridedTensor


# ---- StridedTensor ------------------------------------------------------------------------------

def test_strided_lookup_and_padding():
    packed = torch.arange(24).reshape(12, 2)
    lengths = torch.tensor([3, 0, 2, 5])  # rows 0-2, none, 3-4, 5-9 (10, 11 unused padding)
    st = StridedTensor(packed, lengths)
    rows, lens = st.lookup(torch.tensor([3, 0, 1, 2], dtype=torch.int32))
    assert lens.tolist() == [5, 3, 0, 2]
    assert torch.equal(rows, packed[[5, 6, 7, 8, 9, 0, 1, 2, 3, 4]])
    padded, mask = st.as_padded_tensor()
    assert padded.shape == (4, 5, 2) and mask.shape == (4, 5, 1)
    assert mask.squeeze(-1).sum(1).tolist() == [3, 0, 2, 5]
    assert torch.equal(padded[3], packed[5:10]) and torch.equal(padded[0, :3], packed[:3])
    assert not padded[0, 3:].any()
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        st.lookup(torch.tensor([4]))
    with pytest.raises(IndexError):
        st.lookup(torch.tensor([-1]))
    with pytest.raises(ValueError, match="sum to 13"):
        StridedTensor(packed, torch.tensor([13]))


# ---- loader -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(small_index):
    return load_index(small_index[0])


def test_loaded_index_is_consistent(loaded, small_index):
    index_path, passages = small_index
    assert loaded.num_passages == len(passages) and loaded.num_chunks == 1
    assert loaded.offsets[-1] == loaded.num_embeddings == int(loaded.doclens.sum())
    assert loaded.codes.dtype == torch.int32 and loaded.residuals.shape == (loaded.num_embeddings, 96 * 2 // 8)
    # the ivf lists are exactly "which passages have an embedding in this centroid", sorted
    K = loaded.codec.centroids.size(0)
    pid_of = torch.repeat_interleave(torch.arange(loaded.num_passages), loaded.doclens)
    want = [set() for _ in range(K)]
    for pid, code in zip(pid_of.tolist(), loaded.codes.tolist()):
        want[code].add(pid)
    for c in range(K):
        got, _ = loaded.ivf.lookup(torch.tensor([c]))
        assert got.tolist() == sorted(want[c]), c


def test_mmap_reads_the_same_tensors(loaded, small_index):
    mm = load_index(small_index[0], mmap=True)
    assert mm.mmap and torch.equal(mm.codes, loaded.codes) and torch.equal(mm.residuals, loaded.residuals)
    with pytest.raises(ValueError, match="CPU only"):
        load_index(small_index[0], mmap=True, use_gpu=True)


def test_searcher_with_mmap_gives_the_same_ranking(small_index, colbert_checkpoint):
    from colbert import Searcher
    from colbert.infra import ColBERTConfig

    index_path, _ = small_index
    plain = Searcher(index=index_path, checkpoint=colbert_checkpoint, verbose=0)
    mapped = Searcher(index=index_path, checkpoint=colbert_checkpoint, verbose=0,
                      config=ColBERTConfig(load_index_with_mmap=True))
    assert mapped.ranker.index.mmap and not plain.ranker.index.mmap
    for q in ("dielectric constant", "filter design"):
        assert plain.search(q, k=10) == mapped.search(q, k=10)


@pytest.fixture
def copy(small_index, tmp_path):
    dst = tmp_path / "idx"
    shutil.copytree(small_index[0], dst, ignore=shutil.ignore_patterns("tap"))
    return dst


def _rewrite_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def test_split_into_two_chunks_loads_the_same(copy, loaded):
    doclens = json.load(open(copy / "doclens.0.json"))
    codes = torch.load(copy / "0.codes.pt", weights_only=True)
    residuals = torch.load(copy / "0.residuals.pt", weights_only=True)
    cut = sum(doclens[:60])
    json.dump(doclens[:60], open(copy / "doclens.0.json", "w"))
    json.dump(doclens[60:], open(copy / "doclens.1.json", "w"))
    torch.save(codes[:cut].clone(), copy / "0.codes.pt")
    torch.save(residuals[:cut].clone(), copy / "0.residuals.pt")
    torch.save(codes[cut:].clone(), copy / "1.codes.pt")
    torch.save(residuals[cut:].clone(), copy / "1.residuals.pt")
    _rewrite_json(copy / "metadata.json", num_chunks=2)
    two = load_index(str(copy))
    assert two.num_chunks == 2
    assert torch.equal(two.codes, loaded.codes) and torch.equal(two.residuals, loaded.residuals)
    assert torch.equal(two.doclens, loaded.doclens)
    with pytest.raises(ValueError, match="single-chunk index"):
        load_index(str(copy), mmap=True)


def test_legacy_ivf_pt_is_converted(copy, loaded):
    codes = torch.load(copy / "0.codes.pt", weights_only=True).long()
    values, ivf = codes.sort(stable=True)
    lengths = torch.bincount(values, minlength=loaded.codec.centroids.size(0))
    os.remove(copy / "ivf.pid.pt")
    torch.save((ivf, lengths), copy / "ivf.pt")
    legacy = load_index(str(copy))
    assert torch.equal(legacy.ivf.lengths, loaded.ivf.lengths)
    n = int(loaded.ivf.lengths.sum())
    assert torch.equal(legacy.ivf.tensor[:n], loaded.ivf.tensor[:n])
    assert not os.path.exists(copy / "ivf.pid.pt")  # loading never writes into the index


@pytest.mark.parametrize("name", ["0.residuals.pt", "0.codes.pt", "centroids.pt", "buckets.pt", "doclens.0.json",
                                  "ivf.pid.pt"])
def test_missing_file_is_named(copy, name):
    os.remove(copy / name)
    with pytest.raises(IndexFormatError, match=rf"{name.replace('.', '[.]')}.*(no such file|neither exists)"):
        load_index(str(copy))


def test_unfinished_and_foreign_folders(copy, tmp_path):
    os.remove(copy / "metadata.json")
    with pytest.raises(IndexFormatError, match="indexing did not finish"):
        load_index(str(copy))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(IndexFormatError, match="no metadata.json.*notes.txt"):
        load_index(str(empty))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_index(str(tmp_path / "absent"))


def test_metadata_of_another_format(copy):
    meta = copy / "metadata.json"
    original = meta.read_text()
    meta.write_text(json.dumps({"index_type": "something-else", "dim": 96}))
    with pytest.raises(IndexFormatError, match=r'metadata\.json: expected an object with a "config" object'):
        load_index(str(copy))
    meta.write_text("{not json")
    with pytest.raises(IndexFormatError, match="invalid JSON"):
        load_index(str(copy))
    meta.write_text(original)
    _rewrite_json(meta, num_chunks=0)
    with pytest.raises(IndexFormatError, match="num_chunks"):
        load_index(str(copy))


def test_inconsistent_files_are_refused(copy, loaded):
    K = loaded.codec.centroids.size(0)
    codes = torch.load(copy / "0.codes.pt", weights_only=True)
    bad = codes.clone()
    bad[5] = K + 3
    torch.save(bad, copy / "0.codes.pt")
    with pytest.raises(IndexFormatError, match=rf"0[.]codes[.]pt: expected centroid ids in \[0, {K}\)"):
        load_index(str(copy))
    torch.save(codes[:-1].clone(), copy / "0.codes.pt")
    with pytest.raises(IndexFormatError, match="0[.]codes[.]pt: expected .* codes"):
        load_index(str(copy))
    torch.save(codes, copy / "0.codes.pt")

    ivf, lengths = torch.load(copy / "ivf.pid.pt", weights_only=True)
    bad_ivf = ivf.clone()
    bad_ivf[0] = 10_000
    torch.save((bad_ivf, lengths), copy / "ivf.pid.pt")
    with pytest.raises(IndexFormatError, match=r"ivf[.]pid[.]pt: expected pids in \[0, 120\)"):
        load_index(str(copy))
    torch.save((ivf, lengths), copy / "ivf.pid.pt")

    _rewrite_json(copy / "metadata.json", config={**json.load(open(copy / "metadata.json"))["config"], "nbits": 4})
    with pytest.raises(IndexFormatError, match="buckets[.]pt: expected .* for nbits=4"):
        load_index(str(copy))


def test_garbage_pt_file(copy):
    (copy / "centroids.pt").write_bytes(b"not a torch file")
    with pytest.raises(IndexFormatError, match="centroids[.]pt: expected a torch.save file"):
        load_index(str(copy))
