"""mm_hub fusion modules: (image tokens, text tokens, text mask) -> one fused vector per example, and their registry.

A new strategy is one `Fusion` subclass here plus one entry in `FUSION_REGISTRY`: the class carries what the card
and the README say of it (``description``) and, if it attends, how its attention maps become an explanation
(``explain_attention``); the tests loop over the registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_mm_hub import MMHubConfig


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of ``tokens`` (B, T, D), counting only positions where ``mask`` (B, T) is 1."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# --------------------------------------------------------------------------------------------------------------
# Fusion modules: (image tokens, text tokens, text mask) -> one fused vector per example.
# Each takes tokens already projected to `fusion_hidden_size` and returns (fused (B, D), attentions or None);
# the attentions dict is only built when `output_attentions` is True.
# --------------------------------------------------------------------------------------------------------------

FusionResult = tuple[torch.Tensor, dict[str, tuple[torch.Tensor, ...]] | None]
Attentions = dict[str, tuple[torch.Tensor, ...]]


def _mean_over_layers(layers: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over layers and heads of per-layer (1, heads, Q, K) attention -> (Q, K)."""
    return torch.stack([layer[0].float() for layer in layers]).mean(dim=(0, 1))


class Fusion(nn.Module):
    """What every fusion strategy is: an `nn.Module` from ``(image tokens (B, N, D), text tokens (B, T, D), text mask
    (B, T), output_attentions)`` to ``(fused (B, D), attention maps or None)``, which says what it does in one line
    (``description``: the model card and the README's table) and, if it attends, how its maps explain a prediction
    (``explain_attention``)."""

    description: str = "a custom fusion"

    @staticmethod
    def explain_attention(attentions: Attentions, num_text_tokens: int,
                          words: list[int]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """How much ONE example's text looked at each image cell, and each word's share, from the maps this fusion
        returned with ``output_attentions`` (a batch of one).

        Args:
            attentions: the maps (`MMHubModelOutput.fusion_attentions`).
            num_text_tokens: T, the text's length in tokens.
            words: positions (in the text) of its word pieces, special tokens left out.

        Returns:
            ``(cell scores (N,), word scores (len(words),) or None where the maps say nothing of words)``, or None
            for a fusion without such maps (explanations then score words by leaving each out).
        """
        return None


def with_positions(table: nn.Embedding, tokens: torch.Tensor, what: str) -> torch.Tensor:
    """(B, L, D) tokens + rows ``0 .. L-1`` of a learned position table; a ValueError starting with ``what`` when the
    sequence is longer than the table (``config.fusion_max_positions``). The positions come from the tensor's own
    size (not Python arithmetic), so an exported graph keeps L dynamic."""
    if tokens.shape[1] > table.num_embeddings:
        raise ValueError(
            f"{what} but fusion_max_positions={table.num_embeddings}; use shorter text or smaller images, or raise "
            "fusion_max_positions."
        )
    return tokens + table(torch.arange(tokens.shape[1], device=tokens.device))


def with_cell_positions(table: nn.Embedding, image_tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) image tokens + learned position embeddings of their grid cells (row-major index)."""
    return with_positions(table, image_tokens, f"The image gives {image_tokens.shape[1]} tokens")


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


class FusionBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: attention of ``x`` over a ``context`` sequence (cross-attention) or over
    itself (``cross=False``), then an MLP. Under ``model.activation_checkpointing_enable()`` its activations are
    recomputed in the backward pass instead of kept (`GradientCheckpointingLayer`)."""

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
        if torch.onnx.is_in_onnx_export():
            attended, weights = self._exportable_attention(query, context, padding), None
        else:
            attended, weights = self.attention(
                query, context, context, key_padding_mask=padding, need_weights=output_attentions,
                average_attn_weights=False,
            )
        x = x + self.dropout(attended)
        x = x + self.dropout(self.mlp(self.norm_mlp(x)))
        return x, weights

    def _exportable_attention(self, query: torch.Tensor, context: torch.Tensor,
                              padding: torch.Tensor | None) -> torch.Tensor:
        """`nn.MultiheadAttention`'s forward (same weights, same result up to float rounding) written with shapes the
        ONNX tracer keeps symbolic: torch's own multiplies the batch by the head count in Python, which fixes the
        batch size of an exported graph."""
        attention = self.attention
        heads = attention.num_heads
        q_w, k_w, v_w = attention.in_proj_weight.chunk(3)
        q_b, k_b, v_b = attention.in_proj_bias.chunk(3)

        def split(states: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, heads, L, D / heads)
            return states.unflatten(-1, (heads, -1)).transpose(1, 2)

        mask = None if padding is None else ~padding[:, None, None, :]  # (B, 1, 1, K), True where a query may look
        attended = F.scaled_dot_product_attention(
            split(F.linear(query, q_w, q_b)), split(F.linear(context, k_w, k_b)), split(F.linear(context, v_w, v_b)),
            attn_mask=mask,
        )
        return attention.out_proj(attended.transpose(1, 2).flatten(2))  # (B, Q, D)


class ConcatFusion(Fusion):
    """Late (parallel) fusion: mean-pool each modality, concatenate, and mix with an MLP."""

    description = "late fusion: mean-pool each modality, concatenate, MLP"

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


class GatedFusion(Fusion):
    """Gated Multimodal Unit (Arevalo et al., 2017): a learned per-feature gate z mixes the two modalities.

    ``attentions["gate"]`` is z (B, D): the share of each fused feature taken from the image.
    """

    description = "gated multimodal unit: a learned per-feature gate mixes image and text"

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


class CrossAttentionFusion(Fusion):
    """Cross-attention both ways: text tokens attend to image grid cells (which carry learned position embeddings)
    and image cells attend to text tokens; then the pooled text reads out the cells it is about, and the fused
    vector is ``[text, read-out, text * read-out]`` through an MLP.

    ``attentions["text_to_image"]`` holds one (B, heads, T, N) tensor per layer, ``attentions["image_to_text"]``
    one (B, heads, N, T) tensor per layer, and ``attentions["pooling"]`` the read-out weights (B, N).
    """

    description = "cross-attention both ways between text tokens and image grid cells"

    @staticmethod
    def explain_attention(attentions: Attentions, num_text_tokens: int,
                          words: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells: the text -> image attention (mean over layers, heads and the caption's words); words: the image ->
        text attention each receives (mean over layers, heads and image cells)."""
        text_to_image = _mean_over_layers(attentions["text_to_image"])  # (T, N)
        image_to_text = _mean_over_layers(attentions["image_to_text"])  # (N, T)
        rows = words or list(range(text_to_image.shape[0]))
        return text_to_image[rows].mean(dim=0), image_to_text[:, words].mean(dim=0) if words else torch.zeros(0)

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


class SequenceFusion(Fusion):
    """Early fusion: ``[CLS] + image tokens + text tokens`` with modality and position embeddings through
    transformer layers; the fused vector is the final ``[CLS]`` state.

    ``attentions["self"]`` holds one (B, heads, S, S) tensor per layer, S = 1 + N + T, in that order.
    """

    description = "early fusion: `[CLS]` + image cells + text tokens through transformer layers"

    @staticmethod
    def explain_attention(attentions: Attentions, num_text_tokens: int,
                          words: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells: the attention of the [CLS] row and the caption's word rows to the image columns of the joint
        sequence; words: the [CLS] row's attention to each word column."""
        joint = _mean_over_layers(attentions["self"])  # (S, S), S = 1 + N + T
        first_text = joint.shape[-1] - num_text_tokens
        rows = [0] + [first_text + w for w in words]  # [CLS] and the caption's words
        cells = joint[rows, 1:first_text].mean(dim=0)  # (N,)
        return cells, joint[0, [first_text + w for w in words]] if words else torch.zeros(0)

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
        num_image, num_text = image_tokens.shape[1], text_tokens.shape[1]
        kinds = self.modality_embeddings.weight  # 0: [CLS], 1: image, 2: text
        # Sizes come from the tensors themselves (not Python arithmetic), so an exported graph keeps them dynamic.
        x = torch.cat([(self.cls_token + kinds[0]).expand(image_tokens.shape[0], -1, -1), image_tokens + kinds[1],
                       text_tokens + kinds[2]], dim=1)  # (B, S, D)
        x = with_positions(self.position_embeddings, x, f"The joint sequence has {x.shape[1]} tokens "
                           f"(1 + {num_image} image + {num_text} text)")
        mask = torch.cat([torch.ones_like(text_mask[:, :1]).expand(-1, 1 + num_image), text_mask], dim=1)  # (B, S)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, None, mask, output_attentions)
            attentions.append(weights)
        return self.norm(x[:, 0]), ({"self": tuple(attentions)} if output_attentions else None)


class BilinearFusion(Fusion):
    """Attention read-out + low-rank bilinear (Hadamard) fusion, as in MLB (Kim et al., 2017): the pooled text picks
    the image cells it is about (one attention over cells with learned position embeddings), and the fused vector
    is the element-wise product of the text and that read-out, each through its own linear map.

    The classifier sees only their agreement, never either modality alone, so a caption is checked attribute by
    attribute: on the shapes data this generalises to colour+shape pairs never named in training far better than
    the ``attention`` fusion (README, "The demo model"). ``attentions["pooling"]`` holds the read-out weights (B, N).
    """

    description = "the text reads out the image cells it is about; fused = their element-wise product"

    @staticmethod
    def explain_attention(attentions: Attentions, num_text_tokens: int,
                          words: list[int]) -> tuple[torch.Tensor, None]:
        """Cells: the text's read-out weights; it has no per-word attention (words are scored by leaving each out)."""
        return attentions["pooling"][0][0].float(), None

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
FUSION_REGISTRY: dict[str, type[Fusion]] = {
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
