"""The two towers of an mm_hub model: the image encoder and the text encoder (a transformer or a BiLSTM) built from
their configs, and the pretrained towers `from_vision_text_pretrained` loads into them, checked to fit and
fingerprinted (`tower_sha256`) so that a LoRA adapter finds the same weights again (`adapter_mm_hub`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel

from .configuration_mm_hub import MMHubConfig


def vision_feature_size(vision_config: Any) -> int:
    """Channels of a vision encoder's ``last_hidden_state``: ``hidden_sizes[-1]`` (CNNs) or ``hidden_size`` (ViTs)."""
    hidden_sizes = getattr(vision_config, "hidden_sizes", None)
    if hidden_sizes:
        return int(hidden_sizes[-1])
    if getattr(vision_config, "hidden_size", None):
        return int(vision_config.hidden_size)
    raise ValueError(
        f"Cannot tell the feature size of vision encoder {type(vision_config).__name__}: "
        "its config has neither `hidden_sizes` nor `hidden_size`."
    )


def _model_from_config(config: Any) -> PreTrainedModel:
    """``AutoModel.from_config`` without the pooler head where the family has one we would never train."""
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # families without a pooler option (ResNet, ConvNeXt, DistilBERT, ...)
        return AutoModel.from_config(config)


# --------------------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------------------


class _CheckpointedTower(nn.Module):
    """A tower that runs as one checkpointed segment under ``model.activation_checkpointing_enable()`` when its model
    has no checkpointing of its own (ResNet, the BiLSTM): transformers sets ``gradient_checkpointing`` and
    ``_gradient_checkpointing_func`` on every module that has the attribute. A frozen tower keeps nothing for the
    backward pass anyway, and runs as it is."""

    gradient_checkpointing = False

    def _checkpointed(self, forward: Any, *inputs: torch.Tensor) -> Any:
        inner = getattr(self, "model", None)
        if (self.gradient_checkpointing and self.training and torch.is_grad_enabled()
                and not getattr(inner, "supports_gradient_checkpointing", False)
                and any(parameter.requires_grad for parameter in self.parameters())):
            return self._gradient_checkpointing_func(forward, *inputs)
        return forward(*inputs)


class MMHubVisionEncoder(_CheckpointedTower):
    """Any ``AutoModel`` vision backbone, returning its output as a token sequence."""

    def __init__(self, config: MMHubConfig):
        super().__init__()
        self.model = _model_from_config(config.vision_config)
        self.hidden_size = vision_feature_size(config.vision_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, N, C) image tokens (the grid's H'W' cells, or the ViT's patch tokens)."""
        hidden = self._checkpointed(lambda pixels: self.model(pixel_values=pixels).last_hidden_state, pixel_values)
        if hidden.dim() == 4:  # CNN grid (B, C, H', W') -> (B, H'W', C)
            hidden = hidden.flatten(2).transpose(1, 2)
        return hidden


class MMHubTransformerTextEncoder(nn.Module):
    """A (pretrained) transformer text encoder from ``config.text_config``."""

    def __init__(self, config: MMHubConfig):
        super().__init__()
        self.model = _model_from_config(config.text_config)
        self.hidden_size = config.text_config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, D) contextual token states."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class MMHubLSTMTextEncoder(_CheckpointedTower):
    """Token embeddings (optionally copied from a pretrained transformer) followed by a bidirectional LSTM."""

    def __init__(self, config: MMHubConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.lstm_embedding_size, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(
            config.lstm_embedding_size,
            config.lstm_hidden_size,
            num_layers=config.lstm_num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.dropout if config.lstm_num_layers > 1 else 0.0,
        )
        self.hidden_size = 2 * config.lstm_hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, 2 * lstm_hidden_size); padded positions are zeros."""
        return self._checkpointed(self._encode, input_ids, attention_mask)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedded = self.embeddings(input_ids)  # (B, T, E)
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        # Packing keeps the backward direction from reading the padding first.
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=input_ids.shape[1])
        return output  # (B, T, 2H)


TEXT_ENCODERS = {"transformer": MMHubTransformerTextEncoder, "lstm": MMHubLSTMTextEncoder}


# --------------------------------------------------------------------------------------------------------------
# Pretrained towers
# --------------------------------------------------------------------------------------------------------------


def _as_config(config: PreTrainedConfig | dict, model_type: str, **defaults: Any) -> PreTrainedConfig:
    """A tower's config from a config or a dict (``model_type`` defaulting to ``model_type``)."""
    from transformers import AutoConfig

    if isinstance(config, PreTrainedConfig):
        return config
    return AutoConfig.for_model(**{"model_type": model_type, **defaults, **config})


def _pretrained_tower(name_or_path: str | os.PathLike, name: str, hub_kwargs: dict[str, Any]) -> PreTrainedModel:
    """A pretrained tower whose checkpoint holds every weight its config describes (transformers would quietly
    initialise the missing ones at random); a ValueError names the keys that do not fit."""
    tower, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True, **hub_kwargs)
    _check_fit(name, name_or_path, info.get("missing_keys", []),
               [key for key, *_ in info.get("mismatched_keys", [])], info.get("unexpected_keys", []))
    return tower


def _check_fit(name: str, source: Any, missing: Any, mismatched: Any, unexpected: Any) -> None:
    """ValueError naming the keys when pretrained ``name`` weights do not fit (a dropped pooler may be left over)."""
    unexpected = sorted(key for key in unexpected if not key.startswith("pooler."))
    missing, mismatched = sorted(missing), sorted(mismatched)
    if missing or mismatched or unexpected:
        raise ValueError(
            f"The pretrained {name} weights of {source} do not fit the {name} encoder: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, of another shape {mismatched[:5]}."
        )


def tower_sha256(tower: nn.Module) -> str:
    """SHA-256 of a tower's weights and buffers (names, dtypes and bytes, in name order): which pretrained weights a
    model was built on, checked when an adapter is loaded on them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tower.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_tower(module: nn.Module, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """Copy a pretrained tower's weights into an encoder; only the dropped pooler may be left over."""
    result = module.load_state_dict(state_dict, strict=False)
    _check_fit(name, "the pretrained model", result.missing_keys, [], result.unexpected_keys)


__all__ = ["TEXT_ENCODERS", "MMHubLSTMTextEncoder", "MMHubTransformerTextEncoder", "MMHubVisionEncoder",
           "tower_sha256", "vision_feature_size"]
