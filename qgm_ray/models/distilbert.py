"""DistilBERT sequence classifier (Sanh et al., 2019) on token-id inputs: the paper's AG News model.

    make_model("distilbert", input_shape=(128,), num_classes=4)               # distilbert-base-uncased
    make_model("distilbert", (16,), 4, pretrained=None, config={"dim": 32, "n_layers": 2, ...})

`transformers` is an optional dependency (requirements-nlp.txt), imported when the model is
built. Pretrained weights come from the Hugging Face cache under `cache_dir` and are fetched
only with `download=True` (the runner passes data.download and data.root/hf). With
`pretrained: null` the model is randomly initialised from a DistilBertConfig made of the
defaults plus `config` (tests, ablations).

The input is (B, L) int64 token ids padded with 0. The attention mask is built here as a
4-D additive mask and handed to the model ready-made: the library's own mask construction
branches on the data (`mask.all()`), which torch.func.vmap cannot trace, so a 2-D mask would
rule out the packed (vmapped) client step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qgm_ray import errors
from qgm_ray.errors import ConfigError
from qgm_ray.data.text import PAD_ID, require

DEFAULT_PRETRAINED = "distilbert-base-uncased"


class DistilBertClassifier(nn.Module):
    def __init__(self, hf_model: nn.Module, max_length: int):
        super().__init__()
        self.bert = hf_model
        self.max_length = max_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        keep = x != PAD_ID
        dtype = self.bert.dtype
        mask = torch.zeros(keep.shape, dtype=dtype, device=x.device).masked_fill(~keep, torch.finfo(dtype).min)
        return self.bert(input_ids=x, attention_mask=mask[:, None, None, :]).logits


def distilbert(input_shape, num_classes, pretrained=DEFAULT_PRETRAINED, config=None, dropout=None,
               download=False, cache_dir="data/hf"):
    """pretrained: hub name or saved folder, or null for random init from `config` (a dict of
    DistilBertConfig fields); dropout: overrides the classifier head's dropout (0.2 there)."""
    if len(input_shape) != 1:
        raise ConfigError(f"distilbert needs token-id input (max_length,), got input_shape {tuple(input_shape)} "
                          f"(use it with data.name=agnews)")
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"distilbert option config must be a mapping of DistilBertConfig fields, got {config!r}")
    if pretrained is not None and config:
        raise ConfigError("distilbert: option config only applies to a random init; set model.options.pretrained=null")
    transformers = require("transformers")
    head = {} if dropout is None else {"seq_classif_dropout": float(dropout)}
    if pretrained is None:
        fields = dict(config or {})
        unknown = sorted(set(fields) - set(transformers.DistilBertConfig().to_dict()))
        if unknown:
            raise ConfigError(f"distilbert option config: unknown DistilBertConfig field(s) {', '.join(unknown)}")
        try:
            cfg = transformers.DistilBertConfig(**fields, **head, num_labels=int(num_classes), pad_token_id=PAD_ID)
            model = transformers.DistilBertForSequenceClassification(cfg)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"distilbert option config is not a valid DistilBertConfig: {errors.first_line(e)}") from None
    else:
        try:
            model = transformers.DistilBertForSequenceClassification.from_pretrained(
                pretrained, num_labels=int(num_classes), cache_dir=cache_dir, local_files_only=not download, **head
            )
        except (OSError, ValueError) as e:
            if download:
                raise ConfigError(f"distilbert: download of {pretrained!r} into {cache_dir} failed "
                                  f"({errors.first_line(e)})") from None
            raise ConfigError(
                f"distilbert: pretrained weights {pretrained!r} not found in {cache_dir} (nothing is fetched unless "
                f"asked); fix: run once with --set data.download=true, or set model.options.pretrained to a saved folder"
            ) from None
    max_positions = model.config.max_position_embeddings
    if input_shape[0] > max_positions:
        raise ConfigError(f"distilbert: sequences of {input_shape[0]} tokens exceed the model's "
                          f"{max_positions} positions; lower data.options.max_length")
    return DistilBertClassifier(model, int(input_shape[0]))


__all__ = ["DistilBertClassifier", "distilbert"]
