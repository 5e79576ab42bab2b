"""Each bad input to Indexer.index gets one clear error naming the thing and what was expected,
and leaves the disk as it was (no index directory created)."""

import os

import pytest

from colbert import Indexer
from colbert.indexing.collection import CollectionError
from colbert.infra import ColBERTConfig, Run, RunConfig
from colbert.modeling.checkpoint_files import CheckpointError


def attempt(root, checkpoint, collection, config=None):
    with Run().context(RunConfig(nranks=1, experiment="bad", root=str(root))):
        indexer = Indexer(checkpoint=checkpoint, config=config or ColBERTConfig(nbits=2))
        return indexer.index(name="bad", collection=collection)


def index_dir(root):
    return os.path.join(str(root), "bad", "indexes", "bad")


@pytest.mark.parametrize("collection, error, words", [
    ([], CollectionError, ["empty"]),
    (["fine", None], CollectionError, ["passage 1", "NoneType", "expected str"]),
    (["fine", b"bytes"], CollectionError, ["passage 1", "bytes"]),
    ({"0": "a dict"}, CollectionError, ["list of str"]),
])
def test_bad_collections(colbert_checkpoint, tmp_path, collection, error, words):
    with pytest.raises(error) as e:
        attempt(tmp_path, colbert_checkpoint, collection)
    for w in words:
        assert w in str(e.value)
    assert not os.path.exists(index_dir(tmp_path))


@pytest.mark.parametrize("text, words", [
    ("0\ta\n1\tb\n1\tc\n", ["line 3", "duplicate pid 1"]),
    ("0\ta\n5\tb\n", ["line 2", "not contiguous", "expected pid 1"]),
])
def test_bad_tsv(colbert_checkpoint, tmp_path, text, words):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text(text)
    with pytest.raises(CollectionError) as e:
        attempt(tmp_path, colbert_checkpoint, str(tsv))
    assert str(tsv) in str(e.value)
    for w in words:
        assert w in str(e.value)
    assert not os.path.exists(index_dir(tmp_path))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        attempt(tmp_path, str(tmp_path / "nope"), ["a passage"])
    assert not os.path.exists(index_dir(tmp_path))


def test_unrecognised_checkpoint(tmp_path):
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="not a recognised model directory"):
        attempt(tmp_path, str(tmp_path / "notamodel"), ["a passage"])
    assert not os.path.exists(index_dir(tmp_path))


def test_dim_that_does_not_match_the_projection(colbert_checkpoint, tmp_path):
    with pytest.raises(CheckpointError) as e:
        attempt(tmp_path, colbert_checkpoint, ["a passage"], ColBERTConfig(dim=128))
    assert "dim=128" in str(e.value) and "(96, 384)" in str(e.value)
    assert not os.path.exists(index_dir(tmp_path))


def test_bad_overwrite_mode(colbert_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="overwrite='yes'"):
        with Run().context(RunConfig(experiment="bad", root=str(tmp_path))):
            Indexer(checkpoint=colbert_checkpoint).index(name="bad", collection=["a"], overwrite="yes")


def test_nbits_that_does_not_divide_dim(colbert_checkpoint, tmp_path, small_passages):
    with pytest.raises(ValueError, match="dim=96 must be a multiple of 8 \\* nbits = 64"):
        attempt(tmp_path, colbert_checkpoint, small_passages, ColBERTConfig(nbits=8))
    assert not os.path.exists(index_dir(tmp_path))
