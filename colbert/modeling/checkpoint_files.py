"""Finding and reading a checkpoint's files: upstream HF_ColBERT directories, hub names through the
Hugging Face cache, and PyLate / sentence-transformers layouts whose projection lives in 1_Dense/.

Local directories never touch the network. Hub names are tried from the cache first, so a cached
model works offline without HF_HUB_OFFLINE (upstream's hub probe can stall without it).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager

import torch
from colbert.utils.torch_load import safe_load

PROJECTION_NAMES = ("linear.weight", "colbert_linear.weight")
PREFIXES = ("bert.", "model.", "roberta.")
DIM_KEYS = ("colbert_dim", "dim", "projection_dim")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    pass


def is_local(name_or_path: str) -> bool:
    return os.path.isdir(name_or_path)


def resolve_file(name_or_path: str, filename: str) -> str | None:
    """Local path of `filename` inside a checkpoint directory or a hub repo, or None."""
    if is_local(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    if os.path.exists(name_or_path) or name_or_path.endswith(".dnn"):
        return None
    if name_or_path.count("/") > 1 or name_or_path.startswith((".", "/", "~")):
        return None  # a missing local path, not a hub id
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    for local_only in (True, False):
        try:
            return hf_hub_download(repo_id=name_or_path, filename=filename, local_files_only=local_only)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                break
            continue
    return None


def find_artifact_metadata(name_or_path: str) -> str | None:
    return resolve_file(name_or_path, "artifact.metadata")


def check_checkpoint(name_or_path) -> None:
    """Fail early, naming the checkpoint, when it is neither a model directory nor a cached hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint must be a path or a hub name (str), got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if name_or_path.endswith(".dnn"):
        raise CheckpointError(f"checkpoint {name_or_path}: legacy .dnn checkpoints are not supported; "
                              "convert it to an HF_ColBERT directory")
    if is_local(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise CheckpointError(f"checkpoint {name_or_path}: not a recognised model directory (expected "
                                  "config.json with model.safetensors or pytorch_model.bin; found "
                                  f"{sorted(os.listdir(name_or_path))[:10]})")
        if not any(os.path.isfile(os.path.join(name_or_path, w)) for w in WEIGHT_FILES):
            raise CheckpointError(f"checkpoint {name_or_path}: no weights (expected one of {', '.join(WEIGHT_FILES)})")
        return
    if resolve_file(name_or_path, "config.json") is None:
        raise CheckpointError(f"checkpoint {name_or_path!r} not found: it is not a directory, and not a Hugging "
                              "Face hub model available in the local cache (or reachable online)")


def model_dir(name_or_path: str) -> str:
    """A local directory holding the checkpoint's files (the hub snapshot folder for hub names)."""
    if is_local(name_or_path):
        return name_or_path
    path = resolve_file(name_or_path, "config.json")
    if path is None:
        check_checkpoint(name_or_path)
    return os.path.dirname(path)


def read_config_json(directory: str, sub: str = "") -> dict:
    path = os.path.join(directory, sub, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_state_dict(directory: str, sub: str = "") -> dict[str, torch.Tensor] | None:
    for fname in WEIGHT_FILES:
        path = os.path.join(directory, sub, fname)
        if not os.path.isfile(path):
            continue
        if fname.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return safe_load(path)
    return None


def _strip(key: str) -> str:
    for p in PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def _projection_in(directory: str, sub: str = "") -> tuple[torch.Tensor | None, str | None, bool]:
    """(weight, key, has_bias) of a projection stored in directory/sub, reading only that tensor
    from safetensors files (models can be large; the projection is small)."""
    path = os.path.join(directory, sub, "model.safetensors")
    if os.path.isfile(path):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                if _strip(key) in PROJECTION_NAMES:
                    return f.get_tensor(key), key, any(k.endswith("bias") for k in keys)
        return None, None, False
    state = load_state_dict(directory, sub) or {}
    for key, value in state.items():
        if _strip(key) in PROJECTION_NAMES:
            return value, key, any(k.endswith("bias") for k in state)
    return None, None, False


def find_projection(directory: str) -> tuple[torch.Tensor | None, str | None]:
    """The ColBERT projection weight `(dim, hidden)` and where it came from, or (None, None)."""
    weight, key, _ = _projection_in(directory)
    if weight is not None:
        return weight, f"{directory}:{key}"
    dense = os.path.join(directory, "1_Dense")
    if os.path.isdir(dense):
        weight, key, has_bias = _projection_in(directory, "1_Dense")
        if weight is not None:
            if has_bias:
                raise CheckpointError(f"checkpoint {directory}: 1_Dense has a bias; ColBERT projections have none")
            return weight, f"{dense}:{key}"
    return None, None


def dim_from_config(directory: str) -> int | None:
    cfg = read_config_json(directory)
    for key in DIM_KEYS:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


@contextmanager
def quiet_transformers():
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(directory: str):
    """The encoder (BertModel, XLMRobertaModel, ModernBertModel, ...) in float32.

    Loading runs inside fork_rng so that it never consumes the global torch RNG whatever the
    transformers version does on load: the only draw allowed before randperm is the projection's.
    """
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]), quiet_transformers():
        try:
            model = AutoModel.from_pretrained(directory, dtype=torch.float32)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = AutoModel.from_pretrained(directory, torch_dtype=torch.float32)
    return model


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    if name_or_path is None:
        raise CheckpointError("config.checkpoint is not set; the tokenizer comes from the checkpoint")
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(model_dir(name_or_path))
