import json

import ujson

from colbert.infra import ColBERTConfig, Run, RunConfig

UPSTREAM_KEY_ORDER = (
    "query_token_id doc_token_id query_token doc_token ncells centroid_score_threshold ndocs load_index_with_mmap "
    "index_path index_bsize nbits kmeans_niters resume pool_factor clustering_mode protected_tokens similarity bsize "
    "accumsteps lr maxsteps save_every warmup warmup_bert relu nway use_ib_negatives reranker distillation_alpha "
    "ignore_scores model_name query_maxlen attend_to_mask_tokens interaction dim doc_maxlen mask_punctuation "
    "checkpoint triples collection queries index_name overwrite root experiment index_root name rank nranks amp "
    "gpus avoid_fork_if_possible").split()


def test_export_keys_in_upstream_order():
    assert list(ColBERTConfig().export().keys()) == UPSTREAM_KEY_ORDER


def test_kmeans_backend_exported_only_when_not_upstream():
    assert "kmeans_backend" not in ColBERTConfig(kmeans_backend="faiss").export()
    assert ColBERTConfig(kmeans_backend="torch").export()["kmeans_backend"] == "torch"


def test_assigned_semantics_and_merge_order():
    ckpt = ColBERTConfig(doc_maxlen=64, nbits=2)
    user = ColBERTConfig(doc_maxlen=180, dim=None)  # explicit None marks assigned, with the default
    assert user.assigned.keys() == {"doc_maxlen", "dim"} and user.dim == 128
    merged = ColBERTConfig.from_existing(ckpt, user)
    assert merged.doc_maxlen == 180 and merged.nbits == 2


def test_run_context_overrides_run_settings_of_user_config(tmp_path):
    user = ColBERTConfig(nranks=4, experiment="ignored")
    with Run().context(RunConfig(nranks=1, experiment="demo", root=str(tmp_path))):
        merged = ColBERTConfig.from_existing(user, Run().config)
        assert merged.nranks == 1 and merged.experiment == "demo"
        merged.configure(index_name="x")
        assert merged.index_path_ == str(tmp_path / "demo" / "indexes" / "x")
    assert Run().config.experiment == "default"


def test_long_lists_are_summarised_like_upstream():
    c = ColBERTConfig(collection=[f"p{i}" for i in range(101)])
    assert c.export()["collection"] == ["list with 101 elements starting with...", ["p0", "p1", "p2"]]
    c = ColBERTConfig(collection=["a", "b"])
    assert c.export()["collection"] == ["a", "b"]


def test_from_path_round_trip(tmp_path):
    c = ColBERTConfig(nbits=4, dim=96, checkpoint="/x/y")
    p = tmp_path / "plan.json"
    p.write_text(ujson.dumps({"config": c.export(), "num_chunks": 1}, indent=4) + "\n")
    back = ColBERTConfig.from_path(str(p))
    assert back.nbits == 4 and back.dim == 96 and back.checkpoint == "/x/y"
    assert "\\/x\\/y" in p.read_text()  # ujson escapes '/', as upstream's files do
    assert json.loads(p.read_text())["config"]["checkpoint"] == "/x/y"
