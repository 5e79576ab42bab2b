"""Finding and reading a checkpoint's files: upstream HF_ColBERT directories, hub names through the
Hugging Face cache, and PyLate / sentence-transformers layouts whose projection lives in 1_Dense/.

Local directories never touch the network. Hub names are tried from the cache first, so a cached
model works offline without HF_HUB_OFFLINE (upstream's hub probe can stall without it).
"""

from __future__ import annotations

import contextlib
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
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"checkpoint config {path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"checkpoint config {path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


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
        # the loading report is ours to check: quiet_transformers hides transformers' own warning
        try:
            model, info = AutoModel.from_pretrained(directory, dtype=torch.float32, output_loading_info=True)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model, info = AutoModel.from_pretrained(directory, torch_dtype=torch.float32, output_loading_info=True)
    _raise_on_weight_mismatch(directory, model, info.get("missing_keys", ()), info.get("unexpected_keys", ()),
                              [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())])
    return model


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    if name_or_path is None:
        raise CheckpointError("config.checkpoint is not set; the tokenizer comes from the checkpoint")
    directory = model_dir(name_or_path)
    if is_local(name_or_path):  # a hub snapshot may not hold them yet; transformers fetches them
        _check_tokenizer_files(directory, name_or_path)
    with quiet_transformers():
        try:
            return AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError, ImportError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {name_or_path}: its tokenizer could not be loaded: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


# -- validation of a checkpoint's files, before its model loads ---------------------------------
# One of these is needed to build a tokenizer (tokenizer_config.json alone names a class, no vocabulary).
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                         "tokenizer.model")
# ColBERT reads only the last hidden state: a missing pooler changes no output.
UNUSED_MODULES = ("pooler",)


def check_encoder(name_or_path):
    """Checks what would otherwise fail (or silently go wrong) only once the model loads: config.json
    parses and names an encoder-only architecture transformers knows, the tokenizer files are there,
    and the stored weight names and shapes are the ones that architecture expects (else transformers
    would initialise the missing ones at random). Returns the transformers config.

    Reads file headers and key names only; builds the architecture on the meta device (no memory,
    no random numbers).
    """
    check_checkpoint(name_or_path)
    name_or_path = os.fspath(name_or_path)
    directory = model_dir(name_or_path)
    hf_config = _auto_config(directory, name_or_path)
    if getattr(hf_config, "is_encoder_decoder", False):
        raise CheckpointError(f"checkpoint {name_or_path}: config.json describes an encoder-decoder model "
                              f"(model_type {hf_config.model_type!r}); ColBERT needs an encoder-only (BERT-family) "
                              "model such as bert, roberta, xlm-roberta, electra, deberta-v2 or modernbert")
    if is_local(name_or_path):  # a hub snapshot holds only the files fetched so far: loading checks those
        _check_tokenizer_files(directory, name_or_path)
    stored = _stored_shapes(directory)
    if stored is not None:
        from transformers import AutoModel

        # torch < 2.0 has no device context: the architecture is then built on the CPU once
        device = torch.device("meta") if hasattr(torch.device, "__enter__") else contextlib.nullcontext()
        try:
            with torch.random.fork_rng(devices=[]), device, quiet_transformers():
                model = AutoModel.from_config(hf_config)
        except Exception as e:  # noqa: BLE001 - an architecture that cannot be built on meta: load_backbone checks
            logging.getLogger(__name__).debug("checkpoint %s: weight names not pre-checked (%s: %s)", name_or_path,
                                              type(e).__name__, e)
            return hf_config
        missing, unexpected, mismatched = _compare_keys(model, stored)
        _raise_on_weight_mismatch(directory, model, missing, unexpected, mismatched)
    return hf_config


def max_positions(hf_config) -> int | None:
    value = getattr(hf_config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _auto_config(directory: str, name_or_path: str):
    from transformers import AutoConfig

    read_config_json(directory)  # a JSON error names the file, not transformers' internals
    with quiet_transformers():
        try:
            return AutoConfig.from_pretrained(directory)
        except (OSError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {name_or_path}: config.json {os.path.join(directory, 'config.json')} "
                                  f"is not a transformers model config: {first}") from None


def _check_tokenizer_files(directory: str, name_or_path: str) -> None:
    if not os.path.isdir(directory) or any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_VOCAB_FILES):
        return
    raise CheckpointError(f"checkpoint {name_or_path}: no tokenizer files (expected one of "
                          f"{', '.join(TOKENIZER_VOCAB_FILES)}); copy them from the model it was made from")


def _stored_shapes(directory: str) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of the main weights file, reading only safetensors headers; None without one."""
    path = os.path.join(directory, "model.safetensors")
    if os.path.isfile(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - any parse failure of the file is the same bad input
            raise CheckpointError(f"checkpoint weights {path} cannot be read: {type(e).__name__}: {e}") from None
    path = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(path):
        return {k: tuple(v.shape) for k, v in (safe_load(path) or {}).items() if hasattr(v, "shape")}
    return None


def _legacy_name(key: str) -> str:
    # transformers still renames TF-era LayerNorm names on load
    if key.endswith(".gamma"):
        return key[:-len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[:-len("beta")] + "bias"
    return key


def _compare_keys(model, stored: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mismatched) as transformers' loader would report them for this model."""
    import re

    prefix = (getattr(model, "base_model_prefix", "") or "") + "."
    names = {}
    for key, shape in stored.items():
        name = key[len(prefix):] if prefix != "." and key.startswith(prefix) else key
        names[_legacy_name(name)] = (key, shape)
    expected = dict(model.named_parameters())
    ignore_missing = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or ())]
    ignore_unexpected = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())]
    ignore_unexpected.append(re.compile(r"(^|\.)(position_ids|rotary_emb\.inv_freq)$"))
    buffers = {n for n, _ in model.named_buffers()}
    missing = [n for n in expected if n not in names and not any(r.search(n) for r in ignore_missing)]
    unexpected = [key for n, (key, _) in names.items()
                  if n not in expected and n not in buffers and not any(r.search(n) for r in ignore_unexpected)]
    mismatched = [names[n][0] for n, p in expected.items() if n in names and tuple(p.shape) != names[n][1]]
    return missing, unexpected, mismatched


def _raise_on_weight_mismatch(directory: str, model, missing, unexpected, mismatched) -> None:
    """Missing encoder weights would be initialised at random and unexpected ones dropped: an encoder
    that is not the one saved. Heads (e.g. an MLM head) and the ColBERT projection are not encoder
    weights; a missing pooler is harmless (ColBERT never reads it)."""
    modules = {n for n, _ in model.named_children()}
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."

    def top(key: str) -> str:
        key = key[len(prefix):] if prefix != "." and key.startswith(prefix) else key
        return key.split(".", 1)[0]

    missing = sorted(k for k in missing if top(k) not in UNUSED_MODULES)
    unexpected = sorted(k for k in unexpected if top(k) in modules and top(k) not in UNUSED_MODULES
                        and _strip(k) not in PROJECTION_NAMES)
    mismatched = sorted(mismatched)
    if not (missing or unexpected or mismatched):
        return

    def some(keys):
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (transformers would initialise them at random): {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the architecture: {some(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} with another shape: {some(mismatched)}")
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    raise CheckpointError(f"checkpoint {directory}: its weights do not match its config.json (model_type "
                          f"{model_type!r}, {type(model).__name__}); encoder weights " + "; ".join(parts))
