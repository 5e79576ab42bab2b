"""Checkpoint layouts and bad checkpoints: HF_ColBERT dirs, PyLate 1_Dense, key variants, dim
resolution, hub names from the cache, XLM-R / ModernBERT backbones, and the seeded-RNG rule."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from colbert.infra import ColBERTConfig
from colbert.modeling.checkpoint import Checkpoint
from colbert.modeling.checkpoint_files import CheckpointError
from colbert.modeling.make_checkpoint import bundled_minilm_path, make_checkpoint

TEXTS = ["hello, world!", "the dielectric constant of liquids measured with microwaves"]
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def plain_bert_dir(tmp_path, extra_config=None):
    """all-MiniLM-L6-v2 as a plain HF BERT directory (keys without prefix, no projection)."""
    src = bundled_minilm_path()
    d = tmp_path / "plain"
    d.mkdir()
    for name in TOKENIZER_FILES + ("model.safetensors",):
        shutil.copy(os.path.join(src, name), d / name)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.update(extra_config or {})
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_made_checkpoint_has_upstream_layout(colbert_checkpoint):
    keys = load_file(os.path.join(colbert_checkpoint, "model.safetensors")).keys()
    assert "linear.weight" in keys and "bert.embeddings.word_embeddings.weight" in keys
    assert "bert.pooler.dense.weight" in keys  # every key HF_ColBERT expects: loading draws no random numbers
    meta = json.load(open(os.path.join(colbert_checkpoint, "artifact.metadata")))
    assert meta["dim"] == 96 and meta["meta"]["version"] == "colbert-v0.4"
    assert json.load(open(os.path.join(colbert_checkpoint, "config.json")))["architectures"] == ["HF_ColBERT"]


def test_loading_a_full_checkpoint_consumes_no_rng(colbert_checkpoint):
    torch.manual_seed(12345)
    before = torch.get_rng_state()
    Checkpoint(colbert_checkpoint, ColBERTConfig())
    assert torch.equal(before, torch.get_rng_state())


def test_plain_bert_gets_upstreams_seeded_projection(tmp_path):
    d = plain_bert_dir(tmp_path)
    torch.manual_seed(12345)
    ckpt = Checkpoint(str(d), ColBERTConfig(dim=64))
    after = torch.get_rng_state()
    torch.manual_seed(12345)
    expected = torch.empty(64, 384).normal_(0.0, 0.02)
    assert torch.equal(ckpt.linear.weight.detach(), expected)
    assert torch.equal(after, torch.get_rng_state())  # exactly that draw, nothing else


def test_dim_from_config_keys(tmp_path):
    d = plain_bert_dir(tmp_path, {"colbert_dim": 48})
    ckpt = Checkpoint(str(d), ColBERTConfig())
    assert ckpt.linear.weight.shape == (48, 384) and ckpt.colbert_config.dim == 48


def test_pylate_layout_with_1_dense(tmp_path):
    d = plain_bert_dir(tmp_path)
    (d / "1_Dense").mkdir()
    w = torch.randn(80, 384)
    save_file({"linear.weight": w}, str(d / "1_Dense" / "model.safetensors"))
    (d / "1_Dense" / "config.json").write_text(json.dumps({"in_features": 384, "out_features": 80, "bias": False}))
    config = ColBERTConfig()
    ckpt = Checkpoint(str(d), config)
    assert torch.equal(ckpt.linear.weight.detach(), w)
    assert config.dim == 80  # the caller's config (exported to plan.json) learns the real dim
    D, doclens = ckpt.docFromText(TEXTS, bsize=2, keep_dims="flatten")
    assert D.shape == (sum(doclens), 80)


@pytest.mark.parametrize("key", ["colbert_linear.weight", "bert.linear.weight", "model.colbert_linear.weight",
                                 "roberta.linear.weight"])
def test_projection_key_variants(colbert_checkpoint, tmp_path, key):
    d = tmp_path / "variant"
    shutil.copytree(colbert_checkpoint, d)
    state = load_file(str(d / "model.safetensors"))
    w = state.pop("linear.weight")
    state[key] = w
    save_file(state, str(d / "model.safetensors"))
    assert torch.equal(Checkpoint(str(d)).linear.weight.detach(), w)


def test_dim_mismatch_is_an_error(colbert_checkpoint):
    with pytest.raises(CheckpointError) as e:
        Checkpoint(colbert_checkpoint, ColBERTConfig(dim=128))
    msg = str(e.value)
    assert "dim=128" in msg and "(96, 384)" in msg and "linear.weight" in msg


@pytest.mark.parametrize("make, words", [
    (lambda p: str(p / "does-not-exist"), ["not found", "not a directory"]),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), ["not a recognised model directory", "config.json"]),
    (lambda p: ((p / "noweights").mkdir(), (p / "noweights" / "config.json").write_text("{}"))
     and str(p / "noweights"), ["no weights"]),
    (lambda p: "some-org/model-that-is-not-cached", ["not found", "hub"]),
])
def test_missing_or_unrecognised_checkpoint(tmp_path, make, words):
    name = make(tmp_path)
    with pytest.raises(CheckpointError) as e:
        Checkpoint(name)
    for w in words:
        assert w in str(e.value)
    assert os.fspath(name) in str(e.value)


def test_hub_name_from_the_local_cache(colbert_checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--answerdotai--answerai-colbert-small-v1" / "snapshots" / ("0" * 40)
    shutil.copytree(colbert_checkpoint, snap)
    (cache / "models--answerdotai--answerai-colbert-small-v1" / "refs").mkdir()
    (cache / "models--answerdotai--answerai-colbert-small-v1" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    ckpt = Checkpoint("answerdotai/answerai-colbert-small-v1")
    assert ckpt.linear.weight.shape == (96, 384)
    assert ckpt.colbert_config.dim == 96  # from the cached artifact.metadata
    Q = ckpt.queryFromText(["dielectric constant"])
    assert Q.shape == (1, 32, 96)


def _tiny_backbone(tmp_path, kind):
    from transformers import AutoModel, ModernBertConfig, XLMRobertaConfig

    src = bundled_minilm_path()
    d = tmp_path / kind
    d.mkdir()
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, pad_token_id=0)
    cfg = XLMRobertaConfig(**common) if kind == "xlm-roberta" else ModernBertConfig(**common)
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(str(d))
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(src, name), d / name)
    return d


@pytest.mark.parametrize("kind", ["xlm-roberta", "modernbert"])
def test_other_backbones(tmp_path, kind):
    src = _tiny_backbone(tmp_path, kind)
    out = make_checkpoint(str(src), str(tmp_path / "ckpt"), dim=16, seed=1)
    keys = load_file(os.path.join(out, "model.safetensors")).keys()
    prefix = {"xlm-roberta": "roberta.", "modernbert": "model."}[kind]
    assert all(k.startswith(prefix) or k == "linear.weight" for k in keys)
    ckpt = Checkpoint(out)
    ref = load_file(os.path.join(out, "model.safetensors"))
    assert torch.equal(ckpt.linear.weight.detach(), ref["linear.weight"])
    emb_key = next(k for k in ref if "word_embeddings" in k or "tok_embeddings" in k)
    assert torch.equal(ckpt.model.get_input_embeddings().weight.detach(), ref[emb_key])  # weights really loaded
    D, doclens = ckpt.docFromText(TEXTS, bsize=2, keep_dims="flatten")
    assert D.shape == (sum(doclens), 16)


def test_make_checkpoint_refuses_a_colbert_checkpoint_and_existing_output(colbert_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="already has a ColBERT projection"):
        make_checkpoint(colbert_checkpoint, str(tmp_path / "x"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_checkpoint("minilm", str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "f").read_text() == "keep me"
