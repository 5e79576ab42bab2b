"""Tap folders holding only what the module level reads (tensorize_output, config, interpreter), for
tests/test_explain_modules.py and tests/parity/test_explain_modules_torch.py."""

from __future__ import annotations

import json
import os
import shutil
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tokenized_batches(checkpoint: str, passages: list[str], bsize: int = 8, doc_maxlen: int = 64):
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint_files import load_tokenizer
    from colbert.modeling.tokenization import DocTokenizer

    config = ColBERTConfig(checkpoint=checkpoint, doc_maxlen=doc_maxlen)
    return DocTokenizer(config, raw_tokenizer=load_tokenizer(checkpoint)).tensorize(passages, bsize=bsize)


def probe_run(folder: str, checkpoint: str, batches, python: str = sys.executable) -> str:
    """A tap folder as COLBERT_TAP=save writes it, reduced to the module level's inputs."""
    os.makedirs(folder, exist_ok=True)
    name = "tensorize_output_sample_0.pt"
    torch.save(batches, os.path.join(folder, name))
    manifest = {"status": "complete", "config": {"checkpoint": checkpoint, "mask_punctuation": True},
                "artifacts": {name: {"stage": "tensorize_output", "file": name, "order": 0}},
                "replay": {"executable": python, "argv": [], "cwd": folder, "env": {"PYTHONPATH": REPO}}}
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return folder


def nudged_checkpoint(checkpoint: str, out: str, key: str) -> str:
    """A copy of checkpoint whose weight `key` has its first element moved by one ulp."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out)
    path = os.path.join(out, "model.safetensors")
    weights = load_file(path)
    w = weights[key].clone()
    flat = w.view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    weights[key] = w
    save_file(weights, path, metadata={"format": "pt"})
    return out
