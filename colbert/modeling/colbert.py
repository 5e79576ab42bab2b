"""The ColBERT encoder: a Hugging Face backbone, a bias-free linear projection, a keep-mask and L2
normalisation. Numerics follow upstream op for op (same modules, same order) because indexes must
be bit-identical."""

from __future__ import annotations

import logging
import string

import torch
import torch.nn.functional as F
from torch import nn

from colbert.infra.config import ColBERTConfig
from colbert.modeling.checkpoint_files import (CheckpointError, check_checkpoint, dim_from_config, find_projection,
                                               load_backbone, load_tokenizer, model_dir)

log = logging.getLogger(__name__)


def resolve_dim(config: ColBERTConfig, weight: torch.Tensor | None, directory: str, origin: str | None) -> int:
    if weight is not None:
        if weight.dim() != 2:
            raise CheckpointError(f"projection {origin} has shape {tuple(weight.shape)}; expected (dim, hidden)")
        if "dim" in config.assigned and config.dim != weight.shape[0]:
            raise CheckpointError(
                f"dim={config.dim} does not match the checkpoint's projection {origin}, whose shape "
                f"{tuple(weight.shape)} gives dim={weight.shape[0]}")
        return weight.shape[0]
    if "dim" in config.assigned:
        return config.dim
    return dim_from_config(directory) or config.dim


class ColBERT(nn.Module):
    def __init__(self, name_or_path: str = "bert-base-uncased", colbert_config: ColBERTConfig | None = None):
        super().__init__()
        check_checkpoint(name_or_path)
        self.name = name_or_path
        self.colbert_config = ColBERTConfig.from_existing(ColBERTConfig.load_from_checkpoint(name_or_path),
                                                          colbert_config)
        self.use_gpu = ColBERTConfig.total_visible_gpus > 0
        directory = model_dir(name_or_path)

        weight, origin = find_projection(directory)
        backbone = load_backbone(directory)
        hidden = backbone.config.hidden_size
        dim = resolve_dim(self.colbert_config, weight, directory, origin)
        from colbert.infra.validation import check_whole

        check_whole("dim", dim, 1, "ColBERT embedding size")
        self.colbert_config.dim = dim
        if colbert_config is not None:
            colbert_config.dim = dim  # the caller's config is exported to plan.json; keep it truthful

        # skip_init: nn.Linear's own init would draw from the global RNG and shift the held-out split.
        self.linear = torch.nn.utils.skip_init(nn.Linear, hidden, dim, bias=False)
        with torch.no_grad():
            if weight is not None:
                if weight.shape[1] != hidden:
                    raise CheckpointError(f"projection {origin} has shape {tuple(weight.shape)}; the backbone's "
                                          f"hidden size is {hidden}")
                self.linear.weight.copy_(weight.float())
            else:
                # Upstream's HF model initialises a missing projection with normal_(0, initializer_range)
                # from the global RNG after set_seed(12345); the held-out split depends on that draw.
                std = getattr(backbone.config, "initializer_range", 0.02)
                self.linear.weight.copy_(torch.empty(dim, hidden).normal_(0.0, std))
                log.info("#> Note: %s has no ColBERT projection; initialised a random (%d, %d) linear layer from "
                         "the seeded RNG.", name_or_path, dim, hidden)
        self.model = backbone
        self.raw_tokenizer = load_tokenizer(name_or_path)
        self.pad_token = self.raw_tokenizer.pad_token_id
        self.skiplist = {}
        if self.colbert_config.mask_punctuation:
            for symbol in string.punctuation:
                self.skiplist[symbol] = True
                ids = self.raw_tokenizer.encode(symbol, add_special_tokens=False)
                if ids:
                    self.skiplist[ids[0]] = True
        self._skip_ids = torch.tensor(sorted(k for k in self.skiplist if isinstance(k, int)), dtype=torch.long)
        self.to(self.device_name)
        self.eval()

    @property
    def device_name(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def device(self):
        return self.linear.weight.device

    @property
    def bert(self):
        return self.model

    def _encode(self, input_ids, attention_mask, hidden_states: bool = False):
        out = self.model(input_ids, attention_mask=attention_mask, output_hidden_states=hidden_states)
        H = out[0]
        return self.linear(H), (out.hidden_states if hidden_states else None)

    def query(self, input_ids, attention_mask):
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        Q, _ = self._encode(input_ids, attention_mask)
        mask = (input_ids != self.pad_token).unsqueeze(2).float()
        Q = Q * mask
        return F.normalize(Q, p=2, dim=2)

    def doc_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        keep = input_ids != self.pad_token
        if self._skip_ids.numel():
            keep &= ~torch.isin(input_ids, self._skip_ids.to(input_ids.device))
        return keep

    def doc(self, input_ids, attention_mask, keep_dims=True, layers_out: list | None = None):
        assert keep_dims in [True, False, "return_mask"]
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        D, hidden = self._encode(input_ids, attention_mask, hidden_states=layers_out is not None)
        if layers_out is not None:
            layers_out.extend(hidden)
            layers_out.append(D)
        mask = self.doc_mask(input_ids).unsqueeze(2).float()
        D = D * mask
        D = F.normalize(D, p=2, dim=2)
        if self.use_gpu:
            D = D.half()
        if keep_dims is False:
            D, mask = D.cpu(), mask.bool().cpu().squeeze(-1)
            return [d[mask[idx]] for idx, d in enumerate(D)]
        if keep_dims == "return_mask":
            return D, mask.bool()
        return D
