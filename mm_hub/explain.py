"""Explanations of mm_hub classifiers: image heatmaps from fusion attention, per-word importance, and ablation inputs.

Pure tensor / image helpers; `mm_hub.predictor.Predictor.explain` runs the model and calls them.

- the image heatmap and, where it has them, the words' attention come from the fusion itself
  (`Fusion.explain_attention` of the fusion's class: ``attention`` reads its cross-attention both ways, ``sequence``
  the [CLS] and word rows of its joint self-attention, ``bilinear`` its read-out weights);
- every fusion: word importance by leave-one-out (the drop in the predicted score when a token is deleted) when the
  fusion has no attention over words to read, and the modality ablation with the neutral inputs of
  `neutral_pixel_values` and `EMPTY_TEXT`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .model.fusion_mm_hub import FUSION_REGISTRY

# The neutral text of the "image only" ablation: the tokenizer turns it into just [CLS] [SEP].
EMPTY_TEXT = ""


def neutral_pixel_values(pixel_values: torch.Tensor) -> torch.Tensor:
    """The neutral image of the "text only" ablation: a flat image of the image processor's mean colour, i.e.
    all-zero pixel values after normalisation (the same for every input image), shaped like ``pixel_values``."""
    return torch.zeros_like(pixel_values)


def grid_shape(num_tokens: int, height: int, width: int) -> tuple[int, int, int]:
    """Arrange ``num_tokens`` image tokens as a grid with the aspect ratio of the (H, W) pixel input.

    Returns ``(skip, rows, cols)``: ``skip`` leading tokens (1 for a ViT's [CLS] token) are not grid cells.

    Raises:
        ValueError: when neither ``num_tokens`` nor ``num_tokens - 1`` factors into a grid of that aspect ratio.
    """
    for skip in (0, 1):
        cells = num_tokens - skip
        if cells < 1:
            continue
        rows = max(1, round(math.sqrt(cells * height / width)))
        for candidate in sorted(range(1, cells + 1), key=lambda r: abs(r - rows)):
            if cells % candidate == 0 and abs(math.log((cells // candidate) / candidate * height / width)) < 0.7:
                return skip, candidate, cells // candidate
    raise ValueError(f"Cannot lay out {num_tokens} image tokens as a grid for a {height}x{width} pixel input.")


def word_positions(tokens: list[str], special_tokens: set[str]) -> list[int]:
    """Indices of the real word pieces of a tokenised caption (no [CLS]/[SEP]/[PAD] and other special tokens)."""
    return [i for i, token in enumerate(tokens) if token not in special_tokens]


def merge_word_pieces(tokens: list[str], scores: list[float]) -> list[tuple[str, float]]:
    """Join WordPiece continuations (``##xy``) to their word, keeping the largest score of its pieces."""
    words: list[tuple[str, float]] = []
    for token, score in zip(tokens, scores):
        if token.startswith("##") and words:
            word, best = words[-1]
            words[-1] = (word + token[2:], max(best, score))
        else:
            words.append((token, score))
    return words


def attention_explanation(
    fusion_type: str, attentions: dict[str, tuple[torch.Tensor, ...]] | None, num_text_tokens: int, words: list[int]
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Image-cell and word scores of ONE example from its fusion's attention maps (`Fusion.explain_attention` of the
    registered fusion ``fusion_type``), each summing to 1 (or all zero when empty); the word scores are None where
    the maps say nothing of words. None for a fusion without such maps, or no maps.

    Args:
        fusion_type: the model's ``config.fusion_type``.
        attentions: the model output's ``fusion_attentions`` (batch of one).
        num_text_tokens: T, the text's length in tokens.
        words: positions (in the text sequence) of the caption's word pieces; [CLS]-like positions excluded.
    """
    fusion = FUSION_REGISTRY.get(fusion_type)
    maps = fusion.explain_attention(attentions, num_text_tokens, words) if fusion and attentions else None
    if maps is None:
        return None
    cells, word_scores = maps
    return _normalise(cells.float().numpy()), None if word_scores is None else _normalise(word_scores.float().numpy())


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Scale non-negative scores to sum to 1 (zeros stay zeros)."""
    total = float(scores.sum())
    return scores / total if total > 0 else scores


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> RGB uint8 (H, W, 3) on a blue -> cyan -> yellow -> red scale ("jet"-like)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    anchors = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[30, 60, 200], [40, 200, 220], [250, 230, 60], [220, 30, 30]], dtype=np.float64)
    rgb = np.stack([np.interp(v[..., 0], anchors, colours[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def pixels_to_image(pixel_values: torch.Tensor, mean: list[float], std: list[float]) -> Image.Image:
    """Undo the image processor's normalisation of one (3, H, W) input: the (resized, cropped) image the model saw."""
    pixels = pixel_values.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def heatmap_overlay(
    image: Image.Image, cell_scores: np.ndarray, rows: int, cols: int, min_side: int = 320, alpha: float = 0.5
) -> Image.Image:
    """Blend a (rows x cols) grid of scores, upsampled smoothly, over ``image`` (the model's view of the input,
    enlarged so its short side is at least ``min_side`` pixels for display).

    The scores are min-max scaled, so the colours show where attention is relatively high within this image; a
    colour scale below the image names the scores at its two ends.
    """
    shown = image.convert("RGB")
    scale = max(1.0, min_side / min(shown.size))
    shown = shown.resize((round(shown.width * scale), round(shown.height * scale)), Image.Resampling.BICUBIC)
    grid = cell_scores.reshape(rows, cols).astype(np.float32)
    span = float(grid.max() - grid.min())
    grid = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
    upsampled = np.asarray(Image.fromarray(grid, mode="F").resize(shown.size, Image.Resampling.BILINEAR))
    heat = Image.fromarray(colormap(upsampled))
    return with_colour_scale(Image.blend(shown, heat, alpha), float(cell_scores.min()), float(cell_scores.max()))


def with_colour_scale(image: Image.Image, low: float, high: float, height: int = 36) -> Image.Image:
    """``image`` above a `colormap` bar from ``low`` (left) to ``high`` (right), each end labelled with its score."""
    from PIL import ImageDraw

    bar = colormap(np.tile(np.linspace(0.0, 1.0, image.width), (height // 2, 1)))
    framed = Image.new("RGB", (image.width, image.height + height), (255, 255, 255))
    framed.paste(image, (0, 0))
    framed.paste(Image.fromarray(bar), (0, image.height))
    draw = ImageDraw.Draw(framed)
    text_top = image.height + height // 2 + 2
    draw.text((2, text_top), f"least {low:.3f}", fill=(0, 0, 0))
    right = f"most {high:.3f}"
    draw.text((image.width - 2 - draw.textlength(right), text_top), right, fill=(0, 0, 0))
    return framed


__all__ = [
    "EMPTY_TEXT",
    "attention_explanation",
    "colormap",
    "grid_shape",
    "heatmap_overlay",
    "merge_word_pieces",
    "neutral_pixel_values",
    "pixels_to_image",
    "with_colour_scale",
    "word_positions",
]
