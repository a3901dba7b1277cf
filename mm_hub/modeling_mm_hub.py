"""mm_hub models: image encoder + text encoder + fusion module, with classification and retrieval heads.

This file travels with pushed models (``trust_remote_code``): it may import only third-party packages and
same-folder relative modules (``from .configuration_mm_hub import ...``).

Layout: encoders -> fusion modules (+ registry) -> outputs -> pre-trained base -> base model -> heads.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mm_hub import MMHubConfig

# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of ``tokens`` (B, T, D), counting only positions where ``mask`` (B, T) is 1."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of a square similarity matrix against its diagonal (the matching pair)."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def symmetric_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: the mean of the text->image and image->text contrastive losses."""
    return (contrastive_loss(logits_per_text) + contrastive_loss(logits_per_text.t())) / 2.0


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


class MMHubVisionEncoder(nn.Module):
    """Any ``AutoModel`` vision backbone, returning its output as a token sequence."""

    def __init__(self, config: MMHubConfig):
        super().__init__()
        self.model = _model_from_config(config.vision_config)
        self.hidden_size = vision_feature_size(config.vision_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, N, C) image tokens (the grid's H'W' cells, or the ViT's patch tokens)."""
        hidden = self.model(pixel_values=pixel_values).last_hidden_state
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


class MMHubLSTMTextEncoder(nn.Module):
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
        embedded = self.embeddings(input_ids)  # (B, T, E)
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        # Packing keeps the backward direction from reading the padding first.
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=input_ids.shape[1])
        return output  # (B, T, 2H)


TEXT_ENCODERS = {"transformer": MMHubTransformerTextEncoder, "lstm": MMHubLSTMTextEncoder}


# --------------------------------------------------------------------------------------------------------------
# Fusion modules: (image tokens, text tokens, text mask) -> one fused vector per example.
# Each takes tokens already projected to `fusion_hidden_size` and returns (fused (B, D), attentions or None);
# the attentions dict is only built when `output_attentions` is True.
# --------------------------------------------------------------------------------------------------------------

FusionResult = tuple[torch.Tensor, dict[str, tuple[torch.Tensor, ...]] | None]


def position_embeddings(table: nn.Embedding, length: int, what: str) -> torch.Tensor:
    """Rows ``0 .. length-1`` of a learned position table (length, D); a ValueError starting with ``what`` when the
    sequence is longer than the table (``config.fusion_max_positions``)."""
    if length > table.num_embeddings:
        raise ValueError(
            f"{what} but fusion_max_positions={table.num_embeddings}; use shorter text or smaller images, or raise "
            "fusion_max_positions."
        )
    return table(torch.arange(length, device=table.weight.device))


def with_cell_positions(table: nn.Embedding, image_tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) image tokens + learned position embeddings of their grid cells (row-major index)."""
    num_image = image_tokens.shape[1]
    return image_tokens + position_embeddings(table, num_image, f"The image gives {num_image} tokens")


def attention_readout(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One scaled dot-product attention of a (B, D) query over (B, N, D) keys: the weighted (B, D) sum of the values
    and the (B, N) weights."""
    scores = torch.einsum("bd,bnd->bn", query, keys)  # (B, N)
    weights = (scores / keys.shape[-1] ** 0.5).softmax(dim=-1)
    return torch.einsum("bn,bnd->bd", weights, values), weights


class FeedForward(nn.Sequential):
    """The transformer MLP: D -> 4D -> D."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * hidden_size, hidden_size)
        )


class FusionBlock(nn.Module):
    """Pre-LayerNorm transformer block: attention of ``x`` over a ``context`` sequence (cross-attention) or over
    itself (``cross=False``), then an MLP."""

    def __init__(self, config: MMHubConfig, cross: bool):
        super().__init__()
        size = config.fusion_hidden_size
        self.norm_query = nn.LayerNorm(size)
        self.norm_context = nn.LayerNorm(size) if cross else None
        self.attention = nn.MultiheadAttention(size, config.fusion_num_heads, dropout=config.dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(size)
        self.mlp = FeedForward(size, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Q, D) attends to context (B, K, D), or to itself (K = Q), whose mask (B, K) is 1 at real tokens.

        Returns the new states (B, Q, D) and, with ``output_attentions``, the weights (B, heads, Q, K).
        """
        query = self.norm_query(x)
        context = query if self.norm_context is None else self.norm_context(context)
        padding = None if context_mask is None else context_mask == 0  # True where the key must be ignored
        attended, weights = self.attention(
            query, context, context, key_padding_mask=padding, need_weights=output_attentions, average_attn_weights=False
        )
        x = x + self.dropout(attended)
        x = x + self.dropout(self.mlp(self.norm_mlp(x)))
        return x, weights


class ConcatFusion(nn.Module):
    """Late (parallel) fusion: mean-pool each modality, concatenate, and mix with an MLP."""

    def __init__(self, config: MMHubConfig):
        super().__init__()
        size = config.fusion_hidden_size
        self.mlp = nn.Sequential(nn.Linear(2 * size, size), nn.GELU(), nn.Dropout(config.dropout), nn.LayerNorm(size))

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> FusionResult:
        """(B, N, D) image tokens, (B, T, D) text tokens, (B, T) mask -> (B, D), no attentions."""
        pooled = torch.cat([image_tokens.mean(dim=1), masked_mean(text_tokens, text_mask)], dim=-1)  # (B, 2D)
        return self.mlp(pooled), None  # (B, D)


class GatedFusion(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., 2017): a learned per-feature gate z mixes the two modalities.

    ``attentions["gate"]`` is z (B, D): the share of each fused feature taken from the image.
    """

    def __init__(self, config: MMHubConfig):
        super().__init__()
        size = config.fusion_hidden_size
        self.image_transform = nn.Linear(size, size)
        self.text_transform = nn.Linear(size, size)
        self.gate = nn.Linear(2 * size, size)
        self.norm = nn.LayerNorm(size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> FusionResult:
        """(B, N, D) image tokens, (B, T, D) text tokens, (B, T) mask -> (B, D) and the gate."""
        image = image_tokens.mean(dim=1)  # (B, D)
        text = masked_mean(text_tokens, text_mask)  # (B, D)
        gate = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))  # (B, D)
        fused = gate * torch.tanh(self.image_transform(image)) + (1 - gate) * torch.tanh(self.text_transform(text))
        return self.norm(self.dropout(fused)), ({"gate": (gate,)} if output_attentions else None)


class CrossAttentionFusion(nn.Module):
    """Cross-attention both ways: text tokens attend to image grid cells (which carry learned position embeddings)
    and image cells attend to text tokens; then the pooled text reads out the cells it is about, and the fused
    vector is ``[text, read-out, text * read-out]`` through an MLP.

    ``attentions["text_to_image"]`` holds one (B, heads, T, N) tensor per layer, ``attentions["image_to_text"]``
    one (B, heads, N, T) tensor per layer, and ``attentions["pooling"]`` the read-out weights (B, N).
    """

    def __init__(self, config: MMHubConfig):
        super().__init__()
        # Image cells get learned position embeddings (row-major grid index): attention alone is blind to where a
        # cell is, and captions talk about positions ("on the left").
        self.image_position_embeddings = nn.Embedding(config.fusion_max_positions, config.fusion_hidden_size)
        self.text_blocks = nn.ModuleList(FusionBlock(config, cross=True) for _ in range(config.fusion_num_layers))
        self.image_blocks = nn.ModuleList(FusionBlock(config, cross=True) for _ in range(config.fusion_num_layers))
        size = config.fusion_hidden_size
        self.pool_query = nn.Linear(size, size)
        self.pool_key = nn.Linear(size, size)
        self.output = nn.Sequential(nn.Linear(3 * size, size), nn.GELU(), nn.LayerNorm(size))

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> FusionResult:
        """(B, N, D) image tokens, (B, T, D) text tokens, (B, T) mask -> (B, D) and the attention maps."""
        image_tokens = with_cell_positions(self.image_position_embeddings, image_tokens)
        text_to_image, image_to_text = [], []
        for text_block, image_block in zip(self.text_blocks, self.image_blocks):
            # Both directions read the previous layer's states, so neither modality sees itself twice.
            new_text, t2i = text_block(text_tokens, image_tokens, None, output_attentions)  # (B, T, D)
            new_image, i2t = image_block(image_tokens, text_tokens, text_mask, output_attentions)  # (B, N, D)
            text_tokens, image_tokens = new_text, new_image
            text_to_image.append(t2i)
            image_to_text.append(i2t)
        text = masked_mean(text_tokens, text_mask)  # (B, D)
        # The whole text picks the image cells it is about (one attention read-out), and the element-wise
        # product of the two is a direct agreement signal the classifier would otherwise have to discover.
        image, pool_weights = attention_readout(self.pool_query(text), self.pool_key(image_tokens), image_tokens)
        pooled = torch.cat([text, image, text * image], dim=-1)  # (B, 3D)
        attentions = {
            "text_to_image": tuple(text_to_image),
            "image_to_text": tuple(image_to_text),
            "pooling": (pool_weights,),
        }
        return self.output(pooled), (attentions if output_attentions else None)


class SequenceFusion(nn.Module):
    """Early fusion: ``[CLS] + image tokens + text tokens`` with modality and position embeddings through
    transformer layers; the fused vector is the final ``[CLS]`` state.

    ``attentions["self"]`` holds one (B, heads, S, S) tensor per layer, S = 1 + N + T, in that order.
    """

    def __init__(self, config: MMHubConfig):
        super().__init__()
        size = config.fusion_hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size))
        self.modality_embeddings = nn.Embedding(3, size)  # 0: [CLS], 1: image, 2: text
        self.position_embeddings = nn.Embedding(config.fusion_max_positions, size)
        self.blocks = nn.ModuleList(FusionBlock(config, cross=False) for _ in range(config.fusion_num_layers))
        self.norm = nn.LayerNorm(size)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> FusionResult:
        """(B, N, D) image tokens, (B, T, D) text tokens, (B, T) mask -> (B, D) and the self-attention maps."""
        batch, num_image, num_text = image_tokens.shape[0], image_tokens.shape[1], text_tokens.shape[1]
        length = 1 + num_image + num_text
        positions = position_embeddings(
            self.position_embeddings,
            length,
            f"The joint sequence has {length} tokens (1 + {num_image} image + {num_text} text)",
        )
        x = torch.cat([self.cls_token.expand(batch, -1, -1), image_tokens, text_tokens], dim=1)  # (B, S, D)
        modality = torch.tensor([0] + [1] * num_image + [2] * num_text, device=x.device)
        x = x + self.modality_embeddings(modality) + positions
        ones = torch.ones(batch, 1 + num_image, dtype=text_mask.dtype, device=x.device)
        mask = torch.cat([ones, text_mask], dim=1)  # (B, S)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, None, mask, output_attentions)
            attentions.append(weights)
        return self.norm(x[:, 0]), ({"self": tuple(attentions)} if output_attentions else None)


class BilinearFusion(nn.Module):
    """Attention read-out + low-rank bilinear (Hadamard) fusion, as in MLB (Kim et al., 2017): the pooled text picks
    the image cells it is about (one attention over cells with learned position embeddings), and the fused vector
    is the element-wise product of the text and that read-out, each through its own linear map.

    The classifier sees only their agreement, never either modality alone, so a caption is checked attribute by
    attribute: on the shapes data this generalises to colour+shape pairs never named in training far better than
    the ``attention`` fusion (README, "The demo model"). ``attentions["pooling"]`` holds the read-out weights (B, N).
    """

    def __init__(self, config: MMHubConfig):
        super().__init__()
        size = config.fusion_hidden_size
        self.image_position_embeddings = nn.Embedding(config.fusion_max_positions, size)
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(size, size)
        self.text_transform = nn.Linear(size, size)
        self.image_transform = nn.Linear(size, size)
        self.norm = nn.LayerNorm(size)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> FusionResult:
        """(B, N, D) image tokens, (B, T, D) text tokens, (B, T) mask -> (B, D) and the read-out weights."""
        cells = with_cell_positions(self.image_position_embeddings, image_tokens)
        text = masked_mean(text_tokens, text_mask)  # (B, D)
        image, weights = attention_readout(self.query(text), self.key(cells), cells)  # (B, D), (B, N)
        fused = self.norm(self.text_transform(text) * self.image_transform(image))
        return fused, ({"pooling": (weights,)} if output_attentions else None)


# One entry per fusion strategy: a new strategy is one class plus one line here, and the tests loop over this dict.
FUSION_REGISTRY: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "gated": GatedFusion,
    "attention": CrossAttentionFusion,
    "sequence": SequenceFusion,
    "bilinear": BilinearFusion,
}


def build_fusion(config: MMHubConfig) -> nn.Module:
    """Instantiate ``FUSION_REGISTRY[config.fusion_type]``; an unknown name is a ValueError listing the choices."""
    if config.fusion_type not in FUSION_REGISTRY:
        raise ValueError(f"Unknown fusion_type {config.fusion_type!r}; choose one of {sorted(FUSION_REGISTRY)}.")
    return FUSION_REGISTRY[config.fusion_type](config)


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MMHubModelOutput(ModelOutput):
    """Output of [`MMHubModel`].

    Args:
        fused_embeds (`torch.FloatTensor` of shape `(batch_size, fusion_hidden_size)`):
            The fused image+text embedding (None when the model was built without fusion).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, vision_hidden_size)`):
            Mean of the image encoder's output tokens.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_hidden_size)`):
            Mean of the text encoder's non-padding token states.
        image_tokens (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, vision_hidden_size)`):
            Image encoder output as tokens (grid cells row by row for CNNs).
        text_tokens (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_hidden_size)`):
            Text encoder output.
        fusion_attentions (`dict[str, tuple[torch.FloatTensor]]`, *optional*):
            Returned with `output_attentions=True`; the keys and shapes depend on the fusion type (see each fusion
            class): `gate` for gated, `text_to_image`/`image_to_text`/`pooling` for attention, `self` for sequence.
    """

    fused_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_tokens: torch.FloatTensor | None = None
    text_tokens: torch.FloatTensor | None = None
    fusion_attentions: dict[str, tuple[torch.FloatTensor, ...]] | None = None


@dataclass
class ImageTextClassifierOutput(ModelOutput):
    """Output of [`MMHubForImageTextClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Returned when `labels` are given; cross-entropy, BCE-with-logits or MSE by `config.problem_type`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification (or regression) scores before softmax / sigmoid.
        fusion_attentions (`dict[str, tuple[torch.FloatTensor]]`, *optional*):
            As in [`MMHubModelOutput`], with `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_attentions: dict[str, tuple[torch.FloatTensor, ...]] | None = None


@dataclass
class ImageTextRetrievalOutput(ModelOutput):
    """Output of [`MMHubForImageTextRetrieval`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric contrastive loss, returned when `return_loss=True`.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarities of every image to every text.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised image embeddings in the shared space.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised text embeddings in the shared space.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class MMHubPreTrainedModel(PreTrainedModel):
    """Weight initialisation, freezing and pretrained-tower composition shared by every mm_hub model."""

    config_class = MMHubConfig
    base_model_prefix = "mm_hub"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear, Embedding, LayerNorm, LSTM, MultiheadAttention
        if isinstance(module, SequenceFusion):
            init.normal_(module.cls_token, std=self.config.initializer_range)
        elif isinstance(module, MMHubForImageTextRetrieval):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    def _apply_freezing(self) -> None:
        """Turn off gradients of the encoders the config freezes."""
        base = self.base_model
        if self.config.freeze_vision_encoder:
            base.vision_encoder.requires_grad_(False)
        if self.config.freeze_text_encoder:
            base.text_encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> MMHubPreTrainedModel:
        """As `nn.Module.train`, but frozen encoders stay in eval mode so their BatchNorm statistics stay fixed."""
        super().train(mode)
        base = self.base_model
        if self.config.freeze_vision_encoder:
            base.vision_encoder.eval()
        if self.config.freeze_text_encoder:
            base.text_encoder.eval()
        return self

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | os.PathLike,
        text_model_name_or_path: str | os.PathLike,
        text_encoder_type: str = "transformer",
        max_length: int = 64,
        hub_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> tuple[MMHubPreTrainedModel, Any]:
        """Compose a pretrained vision encoder and a pretrained text model (Hub ids or local folders).

        Args:
            vision_model_name_or_path: e.g. ``"microsoft/resnet-18"``; its image processor is loaded too.
            text_model_name_or_path: e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``; its tokenizer is loaded
                too. With ``text_encoder_type="transformer"`` its weights become the text encoder; with ``"lstm"``
                its input embeddings initialise the BiLSTM's embedding table.
            text_encoder_type: ``"transformer"`` or ``"lstm"``.
            max_length: longest tokenised text the processor keeps (longer text is truncated).
            hub_kwargs: passed to every ``from_pretrained`` call (``revision``, ``token``, ``cache_dir``, ...).
            **config_kwargs: any other [`MMHubConfig`] field (``fusion_type``, ``num_labels``, ``id2label``, ...).

        Returns:
            ``(model, processor)``, the model in eval mode as after ``from_pretrained``. After
            ``model.save_pretrained(d)`` and ``processor.save_pretrained(d)`` only ``d`` is needed.
        """
        from transformers import AutoImageProcessor, AutoTokenizer

        from .processing_mm_hub import MMHubProcessor

        hub_kwargs = hub_kwargs or {}
        vision = AutoModel.from_pretrained(vision_model_name_or_path, **hub_kwargs)
        text = AutoModel.from_pretrained(text_model_name_or_path, **hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path, **hub_kwargs)
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path, **hub_kwargs)

        if text_encoder_type == "lstm":
            embeddings = text.get_input_embeddings().weight
            config_kwargs.setdefault("vocab_size", embeddings.shape[0])
            config_kwargs.setdefault("lstm_embedding_size", embeddings.shape[1])
            config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id or 0)
            text_config = None
        else:
            text_config = text.config
        config = MMHubConfig(
            vision_config=vision.config, text_config=text_config, text_encoder_type=text_encoder_type, **config_kwargs
        )
        model = cls(config)
        base = model.base_model
        _load_tower(base.vision_encoder.model, vision.state_dict(), "vision")
        if text_encoder_type == "lstm":
            if base.text_encoder.embeddings.weight.shape != embeddings.shape:
                raise ValueError(
                    f"lstm_embedding_size/vocab_size give an embedding table of {tuple(base.text_encoder.embeddings.weight.shape)}"
                    f" but {text_model_name_or_path} has {tuple(embeddings.shape)}."
                )
            with torch.no_grad():
                base.text_encoder.embeddings.weight.copy_(embeddings)
        else:
            _load_tower(base.text_encoder.model, text.state_dict(), "text")
        model._apply_freezing()
        model.eval()  # like `from_pretrained`: ready for inference; the Trainer switches to train mode itself
        return model, MMHubProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)


def _load_tower(module: nn.Module, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """Copy pretrained weights into an encoder; only the dropped pooler may be left over."""
    result = module.load_state_dict(state_dict, strict=False)
    unexpected = [key for key in result.unexpected_keys if not key.startswith("pooler.")]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"The pretrained {name} weights do not fit the {name} encoder: missing {result.missing_keys[:5]}, "
            f"unexpected {unexpected[:5]}."
        )


class MMHubModel(MMHubPreTrainedModel):
    """Image encoder + text encoder + fusion module, returning the fused and per-modality embeddings."""

    def __init__(self, config: MMHubConfig, add_fusion: bool = True):
        super().__init__(config)
        self.vision_encoder = MMHubVisionEncoder(config)
        self.text_encoder = TEXT_ENCODERS[config.text_encoder_type](config)
        if add_fusion:
            size = config.fusion_hidden_size
            # LayerNorm after each projection puts both modalities on the same scale: a BiLSTM over small
            # pretrained embeddings starts ~10x quieter than BatchNorm'd CNN features, and a fusion that multiplies
            # the two (attention) then barely gets a gradient.
            self.image_projection = nn.Sequential(nn.Linear(self.vision_encoder.hidden_size, size), nn.LayerNorm(size))
            self.text_projection = nn.Sequential(nn.Linear(self.text_encoder.hidden_size, size), nn.LayerNorm(size))
            self.fusion = build_fusion(config)
        else:
            self.fusion = None
        self.post_init()
        self._apply_freezing()

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> image tokens (B, N, C) and their mean (B, C)."""
        tokens = self.vision_encoder(pixel_values)
        return tokens, tokens.mean(dim=1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> text tokens (B, T, D) and their masked mean (B, D)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        tokens = self.text_encoder(input_ids, attention_mask)
        return tokens, masked_mean(tokens, attention_mask)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> MMHubModelOutput:
        """Encode both modalities and fuse them.

        Args:
            pixel_values: (B, 3, H, W) images from the processor.
            input_ids: (B, T) token ids from the processor.
            attention_mask: (B, T), 1 at real tokens; all ones when omitted.
            output_attentions: also return the fusion module's attention (or gate) weights.
        """
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[0]} images but input_ids has {input_ids.shape[0]} texts; "
                "classification needs one image per text."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_tokens, image_embeds = self.encode_image(pixel_values)  # (B, N, Cv), (B, Cv)
        text_tokens, text_embeds = self.encode_text(input_ids, attention_mask)  # (B, T, Ct), (B, Ct)
        fused, attentions = None, None
        if self.fusion is not None:
            fused, attentions = self.fusion(
                self.image_projection(image_tokens),  # (B, N, D)
                self.text_projection(text_tokens),  # (B, T, D)
                attention_mask,
                output_attentions,
            )
        return MMHubModelOutput(
            fused_embeds=fused,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            fusion_attentions=attentions,
        )


def classification_loss(config: MMHubConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers' sequence-classification heads use, chosen by (and inferred into) `problem_type`."""
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class MMHubForImageTextClassification(MMHubPreTrainedModel):
    """Fused image+text embedding -> dropout -> linear classifier (single-label, multi-label or regression)."""

    def __init__(self, config: MMHubConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mm_hub = MMHubModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> ImageTextClassifierOutput:
        """Classify (image, text) pairs.

        Args:
            pixel_values: (B, 3, H, W); input_ids, attention_mask: (B, T).
            labels: (B,) class ids (single-label), (B, num_labels) 0/1 floats (multi-label) or (B,) / (B, num_labels)
                floats (regression). The loss follows `config.problem_type`.
            output_attentions: return the fusion attention weights too.
        """
        outputs = self.mm_hub(pixel_values, input_ids, attention_mask, output_attentions=output_attentions)
        logits = self.classifier(self.dropout(outputs.fused_embeds))  # (B, num_labels)
        loss = None if labels is None else classification_loss(self.config, logits, labels)
        return ImageTextClassifierOutput(loss=loss, logits=logits, fusion_attentions=outputs.fusion_attentions)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus the `image-text-classification` pipeline and its code, so that
        ``pipeline(model=save_directory, trust_remote_code=True)`` works where mm_hub is not installed."""
        from .pipeline_mm_hub import PIPELINE_TASK, ImageTextClassificationPipeline

        # "AutoModel" resolves to this head through the auto_map written by `register_for_auto_class`.
        self.config.custom_pipelines = {
            PIPELINE_TASK: {
                "impl": f"pipeline_mm_hub.{ImageTextClassificationPipeline.__name__}",
                "pt": ["AutoModel"],
                "type": "multimodal",
            }
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None:
            module_file = __import__(ImageTextClassificationPipeline.__module__, fromlist=["_"]).__file__
            shutil.copy(module_file, os.path.join(save_directory, "pipeline_mm_hub.py"))


class MMHubForImageTextRetrieval(MMHubPreTrainedModel):
    """Dual encoder (CLIP-style): projections of each modality into one space, a learned temperature and a
    symmetric contrastive loss over in-batch negatives."""

    def __init__(self, config: MMHubConfig):
        super().__init__(config)
        self.mm_hub = MMHubModel(config, add_fusion=False)
        base = self.mm_hub
        self.image_projection = nn.Linear(base.vision_encoder.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(base.text_encoder.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) -> (B, projection_dim) image embeddings, unit-length unless ``normalize=False``."""
        features = self.image_projection(self.mm_hub.encode_image(pixel_values)[1])
        return F.normalize(features, dim=-1) if normalize else features

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """(B, T) ids -> (B, projection_dim) text embeddings, unit-length unless ``normalize=False``."""
        features = self.text_projection(self.mm_hub.encode_text(input_ids, attention_mask)[1])
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        **kwargs: Any,
    ) -> ImageTextRetrievalOutput:
        """Score every image against every text; the i-th image and i-th text are the positive pairs.

        Args:
            pixel_values: (B_i, 3, H, W); input_ids, attention_mask: (B_t, T).
            return_loss: compute the symmetric contrastive loss (needs B_i == B_t).
        """
        image_embeds = self.get_image_features(pixel_values)  # (B_i, P)
        text_embeds = self.get_text_features(input_ids, attention_mask)  # (B_t, P)
        # Clamped as in CLIP so the temperature cannot exceed 100 and destabilise training.
        scale = self.logit_scale.clamp(max=4.6052).exp()
        logits_per_text = scale * text_embeds @ image_embeds.t()  # (B_t, B_i)
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    f"return_loss needs as many texts as images (matched pairs), got {logits_per_text.shape[0]} "
                    f"texts and {logits_per_text.shape[1]} images."
                )
            loss = symmetric_contrastive_loss(logits_per_text)
        return ImageTextRetrievalOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


__all__ = [
    "FUSION_REGISTRY",
    "ImageTextClassifierOutput",
    "ImageTextRetrievalOutput",
    "MMHubForImageTextClassification",
    "MMHubForImageTextRetrieval",
    "MMHubModel",
    "MMHubModelOutput",
    "MMHubPreTrainedModel",
]
