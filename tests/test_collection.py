import pytest

from colbert.indexing.collection import Collection, CollectionError


def write(tmp_path, text, name="c.tsv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_tsv_with_title_column_and_empty_passage(tmp_path):
    c = Collection.cast(write(tmp_path, "0\thello world\tGreeting\n1\t\n2\tlast  \n"))
    assert list(c) == ["Greeting | hello world", "", "last"]
    assert c.provenance().endswith("c.tsv")


def test_header_line_is_taken_as_a_passage_like_upstream(tmp_path):
    c = Collection.cast(write(tmp_path, "id\ttext\n1\tfirst\n"))
    assert list(c) == ["text", "first"]


@pytest.mark.parametrize("text, words", [
    ("0\ta\n0\tb\n", ["line 2", "duplicate pid 0", "first seen on line 1"]),
    ("0\ta\n2\tb\n", ["line 2", "pid 2 is not contiguous", "expected pid 1"]),
    ("0\ta\nx\tb\n", ["line 2", "'x' is not an integer"]),
    ("0\ta\njusttext\n", ["line 2", "expected 'pid<TAB>passage'"]),
    ("", ["is empty"]),
])
def test_bad_tsv_is_named(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(CollectionError) as e:
        Collection.cast(path)
    for w in words:
        assert w in str(e.value)
    assert path in str(e.value)


def test_bad_in_memory_collections():
    with pytest.raises(CollectionError, match="is empty"):
        Collection.cast([])
    with pytest.raises(CollectionError, match="passage 1 is a int, expected str"):
        Collection.cast(["ok", 3])
    with pytest.raises(CollectionError, match="only .tsv"):
        Collection.cast("collection.jsonl")
    with pytest.raises(CollectionError, match="list of str"):
        Collection.cast(42)


def test_sequence_like_column_is_accepted():
    class Column:  # what datasets' dataset["text"] looks like: len + iter, no list
        def __init__(self, data):
            self.data = data

        def __len__(self):
            return len(self.data)

        def __iter__(self):
            return iter(self.data)

    assert list(Collection.cast(Column(["a", "b"]))) == ["a", "b"]


def test_chunking_follows_upstream():
    c = Collection(data=[str(i) for i in range(10)])
    assert c.get_chunksize(1) == 11  # min(25000, 1 + N // nranks)
    assert [(i, o, len(p)) for i, o, p in c.enumerate_batches(0, 1)] == [(0, 0, 10)]
    assert c.get_chunksize(3) == 4
    assert [(i, o) for i, o, _ in c.enumerate_batches(1, 3)] == [(1, 4)]
    assert [(i, o) for i, o, _ in c.enumerate_batches(0, 3)] == [(0, 0)]
    assert [(i, o, len(p)) for i, o, p in c.enumerate_batches(2, 3)] == [(2, 8, 2)]
