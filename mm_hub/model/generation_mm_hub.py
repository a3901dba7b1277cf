"""`MMHubForConditionalGeneration`: describe an image, or answer a question about it, in words.

The encoder is the one of the other heads: the image encoder's grid cells, and the prompt (a question; empty for a
caption) read by the text encoder, joined by the fusion module. Their projected states, one fused token + the image
cells + the prompt tokens, are the *memory* an autoregressive transformer decoder attends to while it writes.

The decoder reads the prompt too, as the prefix of what it writes, the way a `transformers` text model continues a
prompt: ``[CLS] question [SEP] answer [SEP]`` (``[CLS] [SEP] caption [SEP]`` without a question). So `generate`
returns the prompt followed by the new text, and ``pipeline("image-text-to-text")`` strips the prompt as it does for
any model. Its token embeddings are also its output layer (tied), and start from the pretrained text model's word
embeddings when their sizes match.

`generate` works through `GenerationMixin` (greedy, beam search, sampling) with a key/value cache: self-attention
keys of past tokens and the memory's cross-attention keys are computed once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.utils import ModelOutput, logging

from .configuration_mm_hub import MMHubConfig, MMHubDecoderConfig
from .fusion_mm_hub import FeedForward
from .modeling_mm_hub import MMHubModel, MMHubPreTrainedModel

logger = logging.get_logger(__name__)
IGNORE_INDEX = -100  # labels of positions the loss leaves out (the prompt, the padding)


def new_cache() -> EncoderDecoderCache:
    """An empty key/value cache of the decoder: self-attention and cross-attention, a layer added per layer used."""
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def right_padded(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask with each row's real tokens moved to the front, in order (left-padded prompts become
    right-padded: the BiLSTM text encoder reads a row from its first position). Scattered to their new places
    rather than sorted, which ONNX export cannot trace."""
    real = (mask != 0).long()
    place = torch.where(real == 1, real.cumsum(1) - 1, real.sum(1, keepdim=True) + (1 - real).cumsum(1) - 1)  # (B, T)
    return ids.scatter(1, place, ids), mask.scatter(1, place, mask)


def left_padded(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask with each row's real tokens moved to the end, in order (a batch of prompts of different
    lengths is continued from their last tokens, which must line up)."""
    order = torch.argsort((mask != 0).to(torch.int8), dim=1, stable=True)
    return ids.gather(1, order), mask.gather(1, order)


@dataclass
class MMHubEncoderOutput(ModelOutput):
    """What the encoder gives the decoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, memory_length, decoder_hidden_size)`):
            The memory: one fused token, the image grid cells, the prompt tokens.
        attention_mask (`torch.LongTensor` of shape `(batch_size, memory_length)`):
            1 at the memory positions the decoder may attend to (the prompt's padding is 0).
        num_image_tokens (`int`): how many image cells the memory holds (after the fused token).
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    num_image_tokens: int | None = None


class DecoderAttention(nn.Module):
    """Multi-head attention of the decoder, with its part of the key/value cache: self-attention appends the new
    tokens' keys, cross-attention computes the memory's keys once and reuses them."""

    def __init__(self, config: MMHubDecoderConfig, layer_idx: int, cross: bool):
        super().__init__()
        size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = size // self.num_heads
        self.layer_idx = layer_idx
        self.cross = cross
        self.dropout = config.dropout
        self.q_proj = nn.Linear(size, size)
        self.k_proj = nn.Linear(size, size)
        self.v_proj = nn.Linear(size, size)
        self.out_proj = nn.Linear(size, size)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, d)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Tq, D) attends to itself and the cached past (self) or to the memory (B, M, D) (cross); ``mask``
        (B, 1, Tq, Tk) is True where a query may look. Returns (B, Tq, D) and, with ``output_attentions``, the
        weights (B, heads, Tq, Tk)."""
        query = self._heads(self.q_proj(x))
        if self.cross and cache is not None and cache.is_updated.get(self.layer_idx):
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            key, value = layer.keys, layer.values
        else:
            source = memory if self.cross else x
            key, value = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
            if cache is not None and self.cross:
                key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
                cache.is_updated[self.layer_idx] = True
            elif cache is not None:
                key, value = cache.self_attention_cache.update(key, value, self.layer_idx)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(self.head_dim)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            attended = F.dropout(weights, dropout, self.training) @ value
        else:
            weights = None
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
        attended = attended.transpose(1, 2).reshape(*x.shape[:2], -1)  # (B, Tq, D)
        return self.out_proj(attended), weights


class MMHubDecoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm decoder layer: causal self-attention, cross-attention to the memory, MLP (recomputed in the
    backward pass under ``model.activation_checkpointing_enable()``)."""

    def __init__(self, config: MMHubDecoderConfig, layer_idx: int):
        super().__init__()
        size = config.hidden_size
        self.self_norm = nn.LayerNorm(size)
        self.self_attention = DecoderAttention(config, layer_idx, cross=False)
        self.cross_norm = nn.LayerNorm(size)
        self.cross_attention = DecoderAttention(config, layer_idx, cross=True)
        self.mlp_norm = nn.LayerNorm(size)
        self.mlp = FeedForward(size, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: EncoderDecoderCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, Tq, D) -> (B, Tq, D), and the cross-attention weights (B, heads, Tq, M) with ``output_attentions``."""
        attended, _ = self.self_attention(self.self_norm(x), self_mask, cache=cache)
        x = x + self.dropout(attended)
        attended, weights = self.cross_attention(self.cross_norm(x), memory_mask, memory, cache, output_attentions)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), weights


class MMHubTextDecoder(nn.Module):
    """Token + position embeddings, decoder layers and a final norm (its own config: `MMHubDecoderConfig`)."""

    def __init__(self, config: MMHubDecoderConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("MMHubForConditionalGeneration needs vocab_size (the tokenizer's vocabulary size).")
        size = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, size, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, size)
        self.layers = nn.ModuleList(MMHubDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(B, Tq) new token ids, after the cache's past tokens -> (B, Tq, D) states and, with
        ``output_attentions``, each layer's cross-attention weights (B, heads, Tq, M).

        ``attention_mask`` (B, past + Tq) is 0 at padding (left padding of batched prompts); positions count only
        real tokens.
        """
        batch, length = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        total = past + length
        if attention_mask is None:
            attention_mask = torch.ones(batch, total, dtype=torch.long, device=input_ids.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, Tq)
        if total > self.embed_positions.num_embeddings:
            raise ValueError(
                f"The text would be {total} tokens long, but this decoder writes at most "
                f"{self.embed_positions.num_embeddings} (decoder_max_positions); ask for fewer new tokens or a "
                "shorter prompt."
            )
        x = self.dropout(self.embed_tokens(input_ids) + self.embed_positions(positions))  # (B, Tq, D)
        query_at = torch.arange(past, total, device=x.device)
        causal = torch.arange(total, device=x.device)[None, :] <= query_at[:, None]  # (Tq, Tk)
        self_mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
        self_mask = self_mask | (torch.arange(total, device=x.device)[None, :] == query_at[:, None])  # never empty
        cross_mask = memory_mask.bool()[:, None, None, :]  # (B, 1, 1, M)
        weights = []
        for layer in self.layers:
            x, layer_weights = layer(x, self_mask, memory, cross_mask, cache, output_attentions)
            weights.append(layer_weights)
        return self.norm(x), (tuple(weights) if output_attentions else None)


class _Encoder:
    """What `GenerationMixin` runs once before decoding (``model.get_encoder()``): `MMHubForConditionalGeneration.
    encode` under the name and signature it expects."""

    def __init__(self, model: MMHubForConditionalGeneration):
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> MMHubEncoderOutput:
        return self.model.encode(pixel_values, input_ids, attention_mask)

    __call__ = forward


class MMHubForConditionalGeneration(MMHubPreTrainedModel, GenerationMixin):
    """Image (+ prompt) -> text: captions without a prompt, free-form answers to a question as the prompt.
    transformers' ``image-text-to-text`` pipeline serves it."""

    auto_classes = ("AutoModelForImageTextToText",)
    # The output layer is the decoder's token embeddings (`config.tie_word_embeddings`): one table, which
    # `resize_token_embeddings` and PEFT see through `get_output_embeddings`.
    _tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}

    def __init__(self, config: MMHubConfig):
        config = copy.deepcopy(config)  # the caller's config is left as it was given
        config.is_encoder_decoder = True  # the memory is encoded once; `generate` then runs the decoder alone
        super().__init__(config)
        self.mm_hub = MMHubModel(config)
        decoder = config.decoder_config
        fusion_size, size = config.fusion_hidden_size, decoder.hidden_size
        # Where each memory token comes from (fused, image cell, prompt) and, for cells, where in the grid it lies:
        # captions say "on the left".
        self.memory_types = nn.Embedding(3, fusion_size)
        self.memory_positions = nn.Embedding(config.fusion_max_positions, fusion_size)
        self.memory_projection = nn.Sequential(nn.Linear(fusion_size, size), nn.LayerNorm(size))
        self.decoder = MMHubTextDecoder(decoder)
        # Tied, its weight is the token table (post_init ties them): made without a weight of its own, so that
        # building it draws no random numbers and the other layers start as they always did.
        self.lm_head = nn.Linear(size, decoder.vocab_size, bias=False,
                                 device="meta" if config.tie_word_embeddings else None)
        self.post_init()

    def _written_ids(self, device: torch.device) -> torch.Tensor | None:
        """`config.decoder_vocab` as a tensor on ``device`` (None: the whole vocabulary), made once."""
        if self.config.decoder_vocab is None:
            return None
        cached = getattr(self, "_vocab_ids", None)
        if cached is None or cached.device != device or len(cached) != len(self.config.decoder_vocab):
            self._vocab_ids = cached = torch.tensor(self.config.decoder_vocab, dtype=torch.long, device=device)
        return cached

    def written_scores(self, states: torch.Tensor) -> torch.Tensor:
        """(..., D) decoder states -> (..., written tokens) next-token scores over the tokens the decoder writes
        (``decoder_vocab``, in its order; the whole vocabulary without one). The exported decoder graph gives these."""
        vocab = self._written_ids(states.device)
        weight = self.lm_head.weight  # the token embeddings, tied
        return F.linear(states, weight if vocab is None else weight[vocab])

    def full_vocabulary(self, scores: torch.Tensor) -> torch.Tensor:
        """(..., written tokens) scores (`written_scores`) -> (..., vocab) logits: tokens the decoder never writes
        get -inf, no probability (without a ``decoder_vocab``, the scores as they are)."""
        vocab = self._written_ids(scores.device)
        if vocab is None:
            return scores
        logits = scores.new_full((*scores.shape[:-1], self.lm_head.weight.shape[0]), float("-inf"))
        logits[..., vocab] = scores
        return logits

    def get_encoder(self, modality: str | None = None) -> _Encoder:
        """The encoder `generate` runs once (images and prompt -> memory)."""
        return _Encoder(self)

    def get_input_embeddings(self) -> nn.Embedding:
        """The decoder's token embeddings (the text encoder's are its own: ``model.mm_hub.text_encoder``)."""
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the decoder's token embeddings."""
        self.decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        """The output layer, tied to the decoder's token embeddings."""
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Replace the output layer."""
        self.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """`PreTrainedModel.resize_token_embeddings` of the decoder: its token table and its tied output layer, with
        ``config.decoder_vocab_size`` following; the text encoder keeps its own table (and its config its size)."""
        encoder_side = self.config.get_text_config()
        encoder_vocab = encoder_side.vocab_size
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        encoder_side.vocab_size = encoder_vocab  # transformers writes the new size into the encoder's config
        self.config.decoder_vocab_size = embeddings.weight.shape[0]
        return embeddings

    def empty_prompt(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        """(B, 2) ``[CLS] [SEP]``: the prompt of a caption."""
        start, end = self.config.decoder_start_token_id, self.config.eos_token_id
        if start is None or end is None:
            raise ValueError("This model's config has no decoder_start_token_id / eos_token_id: build it with "
                             "from_vision_text_pretrained or set them from the tokenizer ([CLS] and [SEP]).")
        return torch.tensor([[start, end]] * batch_size, device=device)

    def encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ) -> MMHubEncoderOutput:
        """(B, 3, H, W) images and (B, T) prompt ids (None: the empty prompt) -> the memory the decoder reads."""
        if input_ids is None:
            input_ids = self.empty_prompt(len(pixel_values), pixel_values.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if len(input_ids) != len(pixel_values):
            raise ValueError(f"Got {len(pixel_values)} images but {len(input_ids)} prompts; give one prompt per image.")
        input_ids, attention_mask = right_padded(input_ids, attention_mask)
        base = self.mm_hub
        image_tokens = base.image_projection(base.encode_image(pixel_values)[0])  # (B, N, F)
        text_tokens = base.text_projection(base.encode_text(input_ids, attention_mask)[0])  # (B, T, F)
        fused, _ = base.fusion(image_tokens, text_tokens, attention_mask)  # (B, F)
        num_image = image_tokens.shape[1]
        if num_image > self.memory_positions.num_embeddings:
            raise ValueError(f"The image gives {num_image} cells but fusion_max_positions is "
                             f"{self.memory_positions.num_embeddings}; use smaller images.")
        kinds = self.memory_types.weight
        cells = torch.arange(num_image, device=image_tokens.device)
        memory = torch.cat(
            [(fused + kinds[0])[:, None], image_tokens + kinds[1] + self.memory_positions(cells), text_tokens + kinds[2]],
            dim=1,
        )  # (B, 1 + N + T, F)
        ones = torch.ones_like(attention_mask[:, :1]).expand(-1, 1 + num_image)  # (B, 1 + N): the batch stays symbolic
        return MMHubEncoderOutput(
            last_hidden_state=self.memory_projection(memory),
            attention_mask=torch.cat([ones, attention_mask], dim=1),
            num_image_tokens=num_image,
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: MMHubEncoderOutput | None = None,
        labels: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        """Next-token logits of the decoder over the text so far.

        Args:
            pixel_values: (B, 3, H, W); input_ids, attention_mask: (B, T) the prompt (None: the empty prompt).
            decoder_input_ids: (B, L) what the decoder has read: the prompt, then the text so far (the processor's
                ``text_target`` gives it); with a cache, only the tokens after it.
            decoder_attention_mask: (B, past + L), 0 at padding.
            encoder_outputs: the memory (`encode`), instead of ``pixel_values`` / ``input_ids``.
            labels: (B, L) the token each position should predict next, `IGNORE_INDEX` (-100) where no loss is wanted
                (the prompt, padding); the loss is their mean cross-entropy.
            cache: the `EncoderDecoderCache` of earlier steps (generation); ``use_cache`` creates one.
            output_attentions: return each decoder layer's cross-attention weights (B, heads, L, memory length).

        Returns:
            `Seq2SeqLMOutput` with ``loss``, ``logits`` (B, L, vocab; -inf for tokens outside ``decoder_vocab``, and
            None in training mode with a ``decoder_vocab`` and labels, where only the loss is needed), ``cache``,
            ``cross_attentions``, and the memory as ``encoder_last_hidden_state``.
        """
        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("Give `pixel_values` (or `encoder_outputs` from `encode`).")
            encoder_outputs = self.encode(pixel_values, input_ids, attention_mask)
        if decoder_input_ids is None:
            raise ValueError("Give `decoder_input_ids` (the processor's `text_target` makes them), or call "
                             "`generate` to write text.")
        memory_mask = encoder_outputs.attention_mask
        if memory_mask is None:
            memory = encoder_outputs.last_hidden_state
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.long, device=memory.device)
        if use_cache and cache is None:
            cache = new_cache()
        if self.training and labels is not None and self.config.decoder_token_dropout > 0:
            # read some of the words written so far as padding (never the prompt: a question must be read whole)
            written = torch.zeros_like(decoder_input_ids, dtype=torch.bool)
            written[:, 1:] = labels[:, :-1] != IGNORE_INDEX  # the input at t is the target word predicted at t - 1
            dropped = written & (torch.rand(written.shape, device=written.device) < self.config.decoder_token_dropout)
            decoder_input_ids = decoder_input_ids.masked_fill(dropped, self.config.pad_token_id or 0)
        states, cross_attentions = self.decoder(
            decoder_input_ids, encoder_outputs.last_hidden_state, memory_mask, decoder_attention_mask,
            cache if use_cache or cache is not None else None, output_attentions,
        )
        vocab = self._written_ids(states.device)
        scores = self.written_scores(states)  # (B, L, written tokens)
        loss = None
        if labels is not None:
            labels = labels.to(scores.device)
            if vocab is not None:  # token ids -> rows of the written vocabulary (ids it cannot write are ignored)
                rows = torch.full((self.lm_head.weight.shape[0],), IGNORE_INDEX, dtype=torch.long,
                                  device=scores.device)
                rows[vocab] = torch.arange(len(vocab), device=scores.device)
                labels = torch.where(labels == IGNORE_INDEX, labels, rows[labels.clamp(min=0)])
            loss = F.cross_entropy(scores.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        if vocab is not None and labels is not None and self.training:
            logits = None  # training needs only the loss; the full-vocabulary logits would cost more than the step
        else:
            logits = self.full_vocabulary(scores)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=cache,
            cross_attentions=cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        )

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """`GenerationMixin.generate` (greedy, beam search, sampling, ``max_new_tokens``, ...; the defaults are in
        ``generation_config``): the prompt ``input_ids`` (a question; None for a caption) followed by the new text.

        A batch of prompts may be padded on either side: they are aligned on their last token, as continuing them
        needs.
        """
        if pixel_values is None and "encoder_outputs" not in kwargs:
            raise ValueError("Give `pixel_values`: the images to describe.")
        if input_ids is None:
            images = pixel_values if pixel_values is not None else kwargs["encoder_outputs"].last_hidden_state
            input_ids = self.empty_prompt(len(images), images.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = left_padded(input_ids, attention_mask)
        if not attention_mask.all():
            kwargs.setdefault("decoder_attention_mask", attention_mask)
        self._fit_length(input_ids.shape[1], kwargs)
        return super().generate(
            pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, **kwargs
        )

    def _fit_length(self, prompt_length: int, kwargs: dict[str, Any]) -> None:
        """Cap the new tokens asked of `generate` (``max_new_tokens``, else ``max_length``) at what the decoder's
        ``decoder_max_positions`` leave after the prompt, with a warning; a prompt that leaves no room is an error."""
        limit = self.config.decoder_max_positions
        room = limit - prompt_length
        if room < 1:
            raise ValueError(f"The prompt is {prompt_length} tokens long, but this decoder reads and writes at most "
                             f"{limit} (decoder_max_positions); shorten the question.")
        config = kwargs.get("generation_config") or self.generation_config
        new = kwargs.get("max_new_tokens", config.max_new_tokens)
        if new is None and kwargs.get("max_length", config.max_length) is not None:
            new = kwargs.get("max_length", config.max_length) - prompt_length
        if new is None:  # nothing asked: transformers' default of 20 new tokens, as far as the decoder reaches
            kwargs["max_new_tokens"] = min(20, room)
        elif new > room:
            logger.warning_once(f"Asked for {new} new tokens after a {prompt_length}-token prompt, but this decoder "
                                f"writes at most {limit} tokens in all (decoder_max_positions): writing at most {room}.")
            kwargs["max_new_tokens"] = room

    def _pretrained_text_setup(self, tokenizer: Any, text_model: nn.Module) -> None:
        """After `from_vision_text_pretrained`: start the token embeddings from the text model's when their sizes
        match (the output layer shares them)."""
        pretrained = text_model.get_input_embeddings().weight
        if tuple(pretrained.shape) == tuple(self.decoder.embed_tokens.weight.shape):
            with torch.no_grad():
                self.decoder.embed_tokens.weight.copy_(pretrained)

    @classmethod
    def _pretrained_config_defaults(cls, tokenizer: Any) -> dict[str, Any]:
        """Config values `from_vision_text_pretrained` takes from the tokenizer: vocabulary and special tokens."""
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        return {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id or 0,
            "bos_token_id": start,
            "decoder_start_token_id": start,
            "eos_token_id": end,
        }


__all__ = ["IGNORE_INDEX", "MMHubEncoderOutput", "MMHubForConditionalGeneration"]
