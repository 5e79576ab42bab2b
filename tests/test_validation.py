"""Hostile and unlucky inputs fail in one validation pass, before the model loads and before anything
is erased or written: each gives one line naming the input, the CLI prints it and exits 2, and the
Python API raises the same message. An existing index is rebuilt over with overwrite and must come
out of every failed attempt byte for byte as it was."""

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from colbert import Indexer
from colbert.cli import main as cli_main
from colbert.infra import ColBERTConfig, Run, RunConfig
from colbert.infra.validation import ConfigError
from colbert.modeling.checkpoint_files import CheckpointError
from colbert.tap.errors import TapConfigError
from conftest import build_index, file_hashes as hashes

VASWANI_TSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colbert", "data", "vaswani",
                           "collection.tsv")


@pytest.fixture(scope="module")
def existing(colbert_checkpoint, small_passages, tmp_path_factory):
    """(root, index_path, file hashes, collection tsv) of an index the failed runs try to overwrite."""
    root = tmp_path_factory.mktemp("validation")
    passages = small_passages[:40]
    path = build_index(colbert_checkpoint, passages, root, name="old", kmeans_niters=2)
    tsv = root / "collection.tsv"
    tsv.write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(passages)))
    return str(root), path, hashes(path), str(tsv)


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the encoder starts to load: every case here must be refused before."""
    import colbert.modeling.colbert as colbert_module

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(colbert_module, "load_backbone", refuse)


def index_api(existing, checkpoint, nranks=1, **config):
    root, _, _, tsv = existing
    with Run().context(RunConfig(nranks=nranks, experiment="tests", root=root)):
        indexer = Indexer(checkpoint=checkpoint, config=ColBERTConfig(checkpoint=checkpoint, **config))
        return indexer.index(name="old", collection=tsv, overwrite=True)


def index_cli(existing, checkpoint, *flags):
    root, _, _, tsv = existing
    return cli_main(["index", "--checkpoint", checkpoint, "--collection", tsv, "--root", root, "--experiment", "tests",
                     "--name", "old", "--overwrite", *flags])


def assert_untouched(existing):
    _, path, before, _ = existing
    assert hashes(path) == before


# -- config numbers --------------------------------------------------------------------------------
CONFIG_CASES = [
    # (API kwargs, CLI flags, words of the message)
    (dict(nranks=0), ["--nranks", "0"], ["nranks=0", "expected a whole number >= 1"]),
    (dict(nranks=-2), ["--nranks", "-2"], ["nranks=-2", ">= 1"]),
    (dict(index_bsize=0), ["--index-bsize", "0"], ["index_bsize=0", ">= 1"]),
    (dict(doc_maxlen=0), ["--doc-maxlen", "0"], ["doc_maxlen=0", ">= 3"]),
    (dict(doc_maxlen=-5), ["--doc-maxlen", "-5"], ["doc_maxlen=-5"]),
    (dict(doc_maxlen=513), ["--doc-maxlen", "513"], ["doc_maxlen=513", "max_position_embeddings=512",
                                                     "doc_maxlen <= 512"]),
    (dict(kmeans_niters=-1), ["--kmeans-niters", "-1"], ["kmeans_niters=-1", ">= 0"]),
    (dict(nbits=3), ["--nbits", "3"], ["nbits=3", "1, 2, 4 or 8"]),
]


@pytest.mark.parametrize("kwargs, flags, words", CONFIG_CASES, ids=[" ".join(c[1]) for c in CONFIG_CASES])
def test_bad_config_numbers(existing, colbert_checkpoint, no_model, capsys, kwargs, flags, words):
    kwargs = dict(kwargs)
    nranks = kwargs.pop("nranks", 1)
    with pytest.raises(ValueError) as e:
        index_api(existing, colbert_checkpoint, nranks=nranks, **kwargs)
    for w in words:
        assert w in str(e.value)
    assert_untouched(existing)

    capsys.readouterr()
    assert index_cli(existing, colbert_checkpoint, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-tap index: error: ") and err.count("\n") == 1, err
    assert str(e.value) in err  # the CLI prints exactly what the API raises
    assert_untouched(existing)


def test_doc_maxlen_at_the_encoders_limit_is_accepted(colbert_checkpoint):
    from colbert.infra.validation import check_index_run

    config = ColBERTConfig(checkpoint=colbert_checkpoint, doc_maxlen=512, nbits=2)
    check_index_run(config, 1)  # max_position_embeddings itself is fine: only above it is refused
    with pytest.raises(ConfigError, match="doc_maxlen=513"):
        check_index_run(ColBERTConfig(checkpoint=colbert_checkpoint, doc_maxlen=513, nbits=2), 1)


@pytest.mark.parametrize("limit", ["-95", "-1"])
def test_negative_limit(existing, colbert_checkpoint, no_model, capsys, limit):
    root, _, _, _ = existing
    rc = cli_main(["index", "--checkpoint", colbert_checkpoint, "--collection", VASWANI_TSV, "--root", root,
                   "--experiment", "tests", "--name", "old", "--overwrite", "--limit", limit])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"colbert-tap index: error: --limit={limit}: expected a whole number >= 0 (passages to index; 0 = all)" \
        in err
    assert_untouched(existing)


def test_limit_help_says_zero_means_all(capsys):
    with pytest.raises(SystemExit):
        cli_main(["index", "--help"])
    assert "0 or unset: all" in " ".join(capsys.readouterr().out.split())


def test_missing_kmeans_backend_package(existing, colbert_checkpoint, no_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(ConfigError, match="kmeans_backend='faiss' needs the faiss-cpu package"):
        index_api(existing, colbert_checkpoint, kmeans_backend="faiss", nbits=2)
    assert_untouched(existing)


# -- tap settings ----------------------------------------------------------------------------------
def _empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    return f"swap:{tmp_path / 'empty'}"


TAP_CASES = [
    ({"COLBERT_TAP": "swap:/typo/no/such/folder"}, ["COLBERT_TAP=swap:/typo/no/such/folder", "does not exist"]),
    ("empty", ["holds neither a manifest.json nor any <stage>*.pt artifact"]),
    ({"COLBERT_TAP": "sawp:/tmp/x"}, ["unrecognised action 'sawp:/tmp/x'"]),
    ({"COLBERT_TAP": "save", "COLBERT_TAP_ONLY": "no_such_stage"}, ["COLBERT_TAP_ONLY"]),
    ({"COLBERT_TAP": "save", "COLBERT_TAP_LAYERS": "-1"}, ["COLBERT_TAP_LAYERS=-1"]),
    ({"COLBERT_TAP": "save", "COLBERT_TAP_QUIET": "maybe"}, ["COLBERT_TAP_QUIET='maybe'"]),
    ({"COLBERT_TAP": "no_such_module_xyz:Tap"}, ["cannot import module 'no_such_module_xyz'"]),
    ({"COLBERT_TAP": "colbert.tap:NoSuchTap"}, ["has no attribute 'NoSuchTap'"]),
]


@pytest.mark.parametrize("env, words", TAP_CASES, ids=[str(i) for i in range(len(TAP_CASES))])
def test_bad_tap_settings_before_erase(existing, colbert_checkpoint, no_model, monkeypatch, tmp_path, capsys,
                                       env, words):
    if env == "empty":
        env = {"COLBERT_TAP": _empty_dir(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(TapConfigError) as e:
        index_api(existing, colbert_checkpoint, nbits=2)
    for w in words:
        assert w in str(e.value)
    assert_untouched(existing)
    capsys.readouterr()
    assert index_cli(existing, colbert_checkpoint, "--nbits", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-tap index: error: ") and words[0] in err
    assert_untouched(existing)


def test_swap_folder_of_hand_made_artifacts_passes_the_check(tmp_path, monkeypatch):
    """A folder holding only <stage>.pt files (docs/tap.md) is a valid swap folder without a manifest."""
    import torch

    from colbert.tap.env import check_env

    (tmp_path / "a").mkdir()
    torch.save(torch.zeros(3), tmp_path / "a" / "local_sample_embs.pt")
    check_env({"COLBERT_TAP": f"swap:{tmp_path / 'a'}"})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an artifact")
    with pytest.raises(TapConfigError, match="holds neither"):
        check_env({"COLBERT_TAP": f"swap:{tmp_path / 'b'}"})


# -- checkpoints -----------------------------------------------------------------------------------
def _copy(colbert_checkpoint, dest, link_weights=True):
    """The checkpoint's files; weights linked, not copied, unless they are to be rewritten."""
    os.makedirs(dest)
    for name in os.listdir(colbert_checkpoint):
        src = os.path.join(colbert_checkpoint, name)
        if name == "model.safetensors" and link_weights:
            os.symlink(src, os.path.join(dest, name))
        else:
            shutil.copy(src, os.path.join(dest, name))
    return str(dest)


def _edit_config(path, **changes):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def renamed_keys(ckpt, d):
    d = _copy(ckpt, d, link_weights=False)
    state = load_file(os.path.join(d, "model.safetensors"))
    state = {("encoder_x." + k[len("bert."):] if k.startswith("bert.") else k): v for k, v in state.items()}
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return d


def gpt2_config(ckpt, d):
    d = _copy(ckpt, d)
    _edit_config(d, model_type="gpt2")
    return d


def t5_config(ckpt, d):
    d = _copy(ckpt, d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "t5", "d_model": 384, "architectures": ["HF_ColBERT"]}, f)
    return d


def fewer_layers(ckpt, d):
    d = _copy(ckpt, d)
    _edit_config(d, num_hidden_layers=4)
    return d


def no_tokenizer(ckpt, d):
    d = _copy(ckpt, d)
    for name in ("vocab.txt", "tokenizer.json"):
        os.remove(os.path.join(d, name))
    return d


def metadata_not_json(ckpt, d):
    d = _copy(ckpt, d)
    with open(os.path.join(d, "artifact.metadata"), "w") as f:
        f.write("{'dim': 96,")  # a Python dict, half written
    return d


def config_not_json(ckpt, d):
    d = _copy(ckpt, d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "bert",\n "hidden_size": 384\n')
    return d


CHECKPOINT_CASES = [
    (renamed_keys, CheckpointError, ["weights do not match its config.json", "101 missing",
                                     "embeddings.word_embeddings.weight"]),
    (gpt2_config, CheckpointError, ["model_type 'gpt2'", "missing", "h.0.attn.c_attn.weight"]),
    (fewer_layers, CheckpointError, ["not in the architecture", "bert.encoder.layer.4."]),
    (t5_config, CheckpointError, ["encoder-decoder model (model_type 't5')", "encoder-only"]),
    (no_tokenizer, CheckpointError, ["no tokenizer files", "vocab.txt"]),
    (metadata_not_json, ConfigError, ["artifact.metadata is not valid JSON"]),
    (config_not_json, CheckpointError, ["config.json is not valid JSON"]),
]


@pytest.mark.parametrize("make, error, words", CHECKPOINT_CASES, ids=[c[0].__name__ for c in CHECKPOINT_CASES])
def test_bad_checkpoints(existing, colbert_checkpoint, no_model, tmp_path, capsys, make, error, words):
    ckpt = make(colbert_checkpoint, tmp_path / "ckpt")
    with pytest.raises(error) as e:
        index_api(existing, ckpt, nbits=2)
    msg = str(e.value)
    for w in words:
        assert w in msg
    assert str(tmp_path / "ckpt") in msg  # names the checkpoint (or its file)
    assert "\n" not in msg
    assert_untouched(existing)
    capsys.readouterr()
    assert index_cli(existing, ckpt, "--nbits", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-tap index: error: ") and words[0] in err and err.count("\n") == 1
    assert_untouched(existing)


@pytest.mark.parametrize("make", [renamed_keys, gpt2_config, no_tokenizer],
                         ids=["renamed_keys", "gpt2_config", "no_tokenizer"])
def test_loading_a_bad_checkpoint_directly_is_refused_too(colbert_checkpoint, tmp_path, make):
    """Checkpoint(...) without the pre-check: the loader's own report is checked (no random encoder)."""
    from colbert.modeling.checkpoint import Checkpoint

    ckpt = make(colbert_checkpoint, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"weights do not match|no tokenizer files"):
        Checkpoint(ckpt, ColBERTConfig())


def test_made_checkpoints_pass_and_heads_and_pooler_are_tolerated(colbert_checkpoint, tmp_path):
    """What make-checkpoint writes passes; an MLM head or a missing pooler (unused by ColBERT) is no error."""
    import torch

    from colbert.modeling.checkpoint_files import check_encoder

    assert check_encoder(colbert_checkpoint).model_type == "bert"
    d = _copy(colbert_checkpoint, tmp_path / "extra", link_weights=False)
    state = load_file(os.path.join(d, "model.safetensors"))
    state = {k: v for k, v in state.items() if ".pooler." not in k}
    state["cls.predictions.bias"] = torch.zeros(8)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    check_encoder(d)


# -- make-checkpoint -------------------------------------------------------------------------------
@pytest.mark.parametrize("dim, words", [("0", ["dim=0", ">= 8"]), ("-96", ["dim=-96"]),
                                        ("12", ["dim=12", "multiple of 8"])])
def test_make_checkpoint_bad_dim(tmp_path, capsys, dim, words):
    out = tmp_path / "ckpt"
    assert cli_main(["make-checkpoint", "--from", "minilm", "--dim", dim, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-tap make-checkpoint: error: ")
    for w in words:
        assert w in err
    assert not out.exists() and os.listdir(tmp_path) == []  # nothing written, not even a temp folder


def test_make_checkpoint_from_a_bad_source(colbert_checkpoint, tmp_path, capsys):
    src = no_tokenizer(colbert_checkpoint, tmp_path / "src")
    out = tmp_path / "ckpt"
    assert cli_main(["make-checkpoint", "--from", src, str(out)]) == 2
    assert "no tokenizer files" in capsys.readouterr().err
    assert not out.exists()


# -- search ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def queries_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "queries.tsv"
    path.write_text("1\tdielectric constant of liquids\n2\ttransistor noise\n")
    return str(path)


@pytest.mark.parametrize("flags, words", [
    (["--ndocs", "-5"], ["ndocs=-5", ">= 1"]),
    (["--ndocs", "0"], ["ndocs=0"]),
    (["--ncells", "0"], ["ncells=0", ">= 1"]),
    (["-k", "0"], ["-k must be >= 1"]),
])
def test_search_cli_bad_settings(existing, queries_file, no_model, tmp_path, capsys, flags, words):
    _, index_path, _, _ = existing
    before = hashes(index_path)
    out = tmp_path / "ranking.tsv"
    assert cli_main(["search", "--index", index_path, "--queries", queries_file, "--out", str(out),
                     "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-tap search: error: ")
    for w in words:
        assert w in err
    assert not out.exists()
    assert hashes(index_path) == before


@pytest.mark.parametrize("settings, words", [(dict(ndocs=-5), ["ndocs=-5"]), (dict(ncells=0), ["ncells=0"]),
                                             (dict(centroid_score_threshold="high"), ["centroid_score_threshold"]),
                                             (dict(query_maxlen=600), ["query_maxlen=600", "512"])])
def test_searcher_refuses_bad_settings_before_loading(existing, no_model, settings, words):
    from colbert.searcher import Searcher

    _, index_path, _, _ = existing
    with pytest.raises(ConfigError) as e:
        Searcher(index=index_path, config=ColBERTConfig(**settings), verbose=0)
    for w in words:
        assert w in str(e.value)


def test_searcher_refuses_a_bad_checkpoint_before_loading(existing, colbert_checkpoint, no_model, tmp_path):
    from colbert.searcher import Searcher

    _, index_path, _, _ = existing
    with pytest.raises(CheckpointError, match="weights do not match"):
        Searcher(index=index_path, checkpoint=gpt2_config(colbert_checkpoint, tmp_path / "ckpt"), verbose=0)


def test_settings_changed_after_construction_are_checked_where_read(existing):
    from colbert.searcher import Searcher

    _, index_path, _, _ = existing
    searcher = Searcher(index=index_path, verbose=0)
    searcher.configure(ndocs=-5)
    with pytest.raises(ConfigError, match="ndocs=-5"):
        searcher.search("dielectric constant", k=3)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be >= 1"):
            searcher.search("dielectric constant", k=k)
    searcher.configure(ndocs=256)
    pids, ranks, scores = searcher.search("dielectric constant", k=3)
    assert len(pids) == 3 and ranks == [1, 2, 3]

    encoder = searcher.checkpoint
    for bsize in (-1, 1.5):
        with pytest.raises(ConfigError, match=f"bsize={bsize!r}"):
            encoder.docFromText(["a passage"], bsize=bsize, keep_dims="flatten")
        with pytest.raises(ConfigError, match=f"bsize={bsize!r}"):
            encoder.queryFromText(["a query"], bsize=bsize)
    D0 = encoder.docFromText(["a passage", "another one"], bsize=0)  # 0: one batch, as upstream
    (D1,) = encoder.docFromText(["a passage", "another one"], bsize=2)
    assert D0.shape == D1.shape


def test_searcher_refuses_bad_tap_settings_and_checkpoint_files_before_loading(existing, colbert_checkpoint,
                                                                               no_model, tmp_path, monkeypatch):
    from colbert.searcher import Searcher

    _, index_path, _, _ = existing
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        Searcher(index=index_path, checkpoint=config_not_json(colbert_checkpoint, tmp_path / "c1"), verbose=0)
    with pytest.raises(ConfigError, match="artifact.metadata is not valid JSON"):
        Searcher(index=index_path, checkpoint=metadata_not_json(colbert_checkpoint, tmp_path / "c2"), verbose=0)
    monkeypatch.setenv("COLBERT_TAP", f"swap:{tmp_path / 'typo'}")
    with pytest.raises(TapConfigError, match="does not exist"):
        Searcher(index=index_path, verbose=0)


def test_demo_negative_limit_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--limit", "-5"]) == 2
    assert "colbert-tap demo: error: --limit=-5: expected a whole number >= 0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name", [None, "", "  ", 5])
def test_bad_index_name(existing, colbert_checkpoint, no_model, name):
    root, _, _, tsv = existing
    with Run().context(RunConfig(nranks=1, experiment="tests", root=root)):
        with pytest.raises(ConfigError, match=f"index name {name!r}: expected a non-empty str"):
            Indexer(checkpoint=colbert_checkpoint).index(name=name, collection=tsv, overwrite=True)
    assert sorted(os.listdir(os.path.join(root, "tests", "indexes"))) == ["old"]
    assert_untouched(existing)


def test_release_freed_memory_runs_on_glibc():
    import platform

    from colbert.utils.memory import release_freed_memory

    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
