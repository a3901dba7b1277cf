"""Cross-modal recommendation: items like a given item, over a `MultimodalIndex` of a catalogue.

Each catalogue item has an image and a text; its *item embedding* is ``normalize(normalize(image_embed) +
normalize(text_embed))`` (built by `mm_hub.embeddings`). With unit-length parts, the cosine between two item
embeddings is proportional to the sum of the four image/text cross similarities, so two items are close when their
pictures look alike, their descriptions read alike, or one's picture fits the other's description: the
recommendation crosses modalities, and a catalogue entry with a poor photo is still found through its text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .embeddings import embed_images, embed_texts, normalize
from .rows import cell_texts
from .search import MultimodalIndex

ITEM_COLUMN = "item_embeds"
# An (image, text) query whose item embedding is this close to a row's is that row itself: it is left out.
_SAME_ITEM_COSINE = 1 - 1e-4
ACCEPTED_ITEMS = "a row number (int), a search result / row dict, or an (image, text) pair"


def recommend(
    index: MultimodalIndex,
    item: int | Mapping[str, Any] | tuple[Any, str],
    k: int = 10,
    filter: dict[str, Any] | None = None,
) -> list[dict]:
    """The ``k`` catalogue items most similar to ``item``, never the item itself.

    Args:
        index: a `MultimodalIndex` built with both an image and a text column (so it has ``item_embeds``).
        item: a row number of the index; a dict with a ``"row"`` key (a search result) or with the index's image
            and text columns (a new item); or an ``(image, text)`` pair. A new item identical to a catalogue row
            (same item embedding) excludes that row.
        k: number of recommendations.
        filter: ``{column: value}`` or ``{column: [values]}``: recommend only rows matching every entry
            (e.g. ``{"category": "shoes"}``).

    Returns:
        Up to ``k`` dicts ``{"score", "row", <catalogue columns>}``, most similar first.

    Raises:
        ValueError: an index without item embeddings, a row number out of range, an unknown filter column.
        TypeError: an item of another kind.
    """
    if not isinstance(index, MultimodalIndex):
        raise TypeError(f"index must be an mm_hub MultimodalIndex, got {type(index).__name__}.")
    if ITEM_COLUMN not in index.metadata["embedding_columns"]:
        raise ValueError(
            "Recommendation needs item embeddings: build the index with both an image_column and a text_column "
            f"(this one has {index.metadata['embedding_columns']})."
        )
    embedding, exclude = _item_embedding(index, item)
    results = index.search_embedding(embedding, ITEM_COLUMN, k + 1, exclude_rows=exclude, filter=filter)
    if not exclude:  # a new item: drop catalogue rows that are this very item
        results = [result for result in results if result["score"] < _SAME_ITEM_COSINE]
    return results[:k]


def _item_embedding(index: MultimodalIndex, item: Any) -> tuple[np.ndarray, list[int]]:
    """The query's item embedding and the rows to exclude (the query row, when it is one)."""
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        return _row_embedding(index, int(item)), [int(item)]
    if isinstance(item, Mapping):
        if "row" in item:
            return _row_embedding(index, int(item["row"])), [int(item["row"])]
        image_column, text_column = index.metadata["image_column"], index.metadata["text_column"]
        missing = [name for name in (image_column, text_column) if name not in item]
        if missing:
            raise ValueError(
                f"An item dict needs a 'row' key or the columns {[image_column, text_column]}; missing {missing}."
            )
        item = (item[image_column], item[text_column])
    if isinstance(item, tuple) and len(item) == 2:
        image, text = item
        if image is None:
            raise ValueError("The item's image is None; an (image, text) item needs both.")
        captions = cell_texts(text, lists=True)  # several captions: their mean, as in the index
        if captions is None:
            raise TypeError(f"The query item's text must be a string or a non-empty list of strings, got "
                            f"{type(text).__name__} {str(text)[:80]!r}.")
        index._require_model()
        text_embed = normalize(embed_texts(index.model, index.processor, captions).mean(0, keepdims=True))[0]
        image_embed = embed_images(index.model, index.processor, [image])[0]
        return normalize(image_embed + text_embed), []
    raise TypeError(f"item must be {ACCEPTED_ITEMS}; got {type(item).__name__}.")


def _row_embedding(index: MultimodalIndex, row: int) -> np.ndarray:
    """The stored item embedding of one row."""
    return index.embedding(row, ITEM_COLUMN)


__all__ = ["recommend"]
