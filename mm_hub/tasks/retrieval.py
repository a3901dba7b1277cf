"""The retrieval task: a dual encoder that puts images and texts in one space (search, zero-shot labels, recommending)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForZeroShotImageClassification

from ..auto import AutoModelForImageTextRetrieval
from ..export import retrieval_graphs
from ..metrics import retrieval_metrics
from ..model.configuration_mm_hub import RETRIEVAL_TASK
from ..model.modeling_mm_hub import MMHubForImageTextRetrieval
from ..inputs import InputError, check_candidates, check_k, check_row, check_text
from . import Scoring, SplitEvaluation, Task, pair_inputs, register_task


def encode(processor: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Matched (image, caption) pairs and the contrastive loss over the batch."""
    return {**pair_inputs(processor, rows), "return_loss": True}


def embed_batch(model: Any, processor: Any, rows: list[dict[str, Any]], **_: Any) -> tuple[np.ndarray, np.ndarray,
                                                                                           list[int]]:
    """``(image embeddings (B, P), embeddings of every caption of the rows (C, P), captions per row)``."""
    device = next(model.parameters()).device
    pixels = processor(images=[row["image"] for row in rows], return_tensors="pt")["pixel_values"]
    captions, owners = [], []
    for row in rows:
        texts = row["text"] if isinstance(row["text"], list) else [row["text"]]
        captions += texts
        owners.append(len(texts))  # captions of this image, in order
    tokens = processor(text=captions, return_tensors="pt")
    images = model.get_image_features(pixels.to(device))
    texts = model.get_text_features(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
    return images.float().cpu().numpy(), texts.float().cpu().numpy(), owners


def score(parts: list[tuple[np.ndarray, np.ndarray, list[int]]]) -> dict[str, float]:
    """Recall@K both ways over every image and caption of the split (`retrieval_metrics`)."""
    owners = [count for _, _, counts in parts for count in counts]
    return retrieval_metrics(np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts]),
                             np.repeat(np.arange(len(owners)), owners))


USAGE = """
Label an image by candidate captions, or embed images and texts into one space (unit-length vectors: their dot
product is the cosine similarity), with transformers' own pipelines (add `trust_remote_code=True` without mm_hub):

```python
from transformers import pipeline

label = pipeline("zero-shot-image-classification", model="{repo_id}")
print(label("photo.jpg", candidate_labels=["a red circle", "a blue square"], hypothesis_template="{{}}"))
image_embeds = pipeline("image-feature-extraction", model="{repo_id}")("photo.jpg", return_tensors=True)
text_embeds = pipeline("feature-extraction", model="{repo_id}")("a red circle", return_tensors=True)
print(image_embeds @ text_embeds.T)  # (1, 1) cosine similarity
```
"""

RETRIEVAL = register_task(Task(
    name="retrieval",
    pipeline_task=RETRIEVAL_TASK,
    hub_tag="zero-shot-image-classification",  # dual encoders are listed with the CLIP family
    heads=(MMHubForImageTextRetrieval,),
    # transformers' zero-shot-image-classification pipeline scores candidate captions against an image with it
    auto_classes=(AutoModelForZeroShotImageClassification, AutoModelForImageTextRetrieval),
    scoring=Scoring(("text_to_image_recall@1", "image_to_text_recall@1")),
    encode=encode,
    describe=lambda config: "An mm_hub image + text model with a retrieval dual encoder (contrastive loss):",
    details=lambda config: [f"| Embedding size | {config.get('projection_dim')} |"],
    usage=USAGE,
    tabs=("search", "recommend"),
    preset="retrieval",
    shapes_variant="retrieval",
    caption_lists=True,
    evaluation=SplitEvaluation(embed_batch, score),
    onnx_graphs=retrieval_graphs,
))


# ---- what the app does with a retrieval model ---------------------------------------------------------------------


def _captions(value: Any) -> list[str]:
    """A row's text column (one caption or a list) as a list of captions."""
    return [str(caption) for caption in value] if isinstance(value, list) else [str(value or "")]


def _mentions(value: Any, needle: str) -> bool:
    """Whether one of a row's captions holds ``needle`` (lower case), ignoring case."""
    return any(needle in caption.lower() for caption in _captions(value))



class Searching:
    """The Search and Recommend tabs' work: text -> images, image -> texts, candidate captions, items like a picked
    one. A mixin of `mm_hub.predictor.Predictor`, whose ``model``, ``processor``, ``index``, ``read_image``,
    ``can_embed``, ``model_id`` and ``revision`` it reads."""

    @property
    def can_search(self) -> bool:
        """True when the model can embed and an index is attached (see `build_search_index`)."""
        return self.can_embed and self.index is not None

    def build_search_index(self, dataset: str | os.PathLike | None = None, split: str | None = None,
                           image_column: str = "image", text_column: str | None = None, max_rows: int | None = None,
                           cache: bool = True, progress: bool = True) -> Any:
        """Index a dataset for the Search and Recommend tabs, once (`mm_hub.search.cached_index`, which says what
        each argument means); the index is attached to this model.

        Raises:
            InputError: the model cannot embed, or the dataset cannot be loaded or has no image and text columns.
        """
        from ..search import cached_index

        if not self.can_embed:
            raise InputError("Only retrieval (dual-encoder) models can search; this model is not one.")
        try:
            self.index = cached_index(self.model, self.processor, dataset, split, image_column, text_column, max_rows,
                                      cache, progress, model_id=self.model_id, revision=self.revision)
        except ValueError as error:
            raise InputError(str(error)) from error
        return self.index

    def _hit(self, hit: dict[str, Any], mention: str | None = None) -> dict[str, Any]:
        """A search result as ``{"score", "row", "image", "caption"}``: the row's first caption, or its first one
        that holds ``mention`` (lower case)."""
        metadata = self.index.metadata
        captions = _captions(hit.get(metadata.get("text_column") or ""))
        caption = next((text for text in captions if mention and mention in text.lower()), captions[0] if captions else "")
        return {"score": hit["score"], "row": hit["row"], "image": hit.get(metadata.get("image_column") or ""),
                "caption": caption}

    def _require_index(self) -> None:
        if not self.can_search:
            raise InputError("Search needs a retrieval model with an indexed dataset; this app has none loaded.")

    def search_text(self, query: Any, k: int = 6) -> list[dict[str, Any]]:
        """Text -> the ``k`` indexed images that match best: ``[{"score", "row", "image", "caption"}, ...]``."""
        self._require_index()
        return [self._hit(hit) for hit in self.index.search_text(check_text(query, "search query"), k=check_k(k))]

    def search_image(self, image: Any, k: int = 6) -> list[dict[str, Any]]:
        """Image -> the ``k`` indexed texts that match best: ``[{"score", "row", "image", "caption"}, ...]``, each
        text once (rows with the same caption give its best-scoring row)."""
        self._require_index()
        query, k = self.read_image(image), check_k(k)
        embedding = self.index.embed_query(image=query)
        hits: dict[str, dict[str, Any]] = {}
        fetch = k
        while True:  # ask for more rows until k different texts came back, or the index has no more
            found = [self._hit(hit) for hit in self.index.search_embedding(embedding, "text_embeds", fetch)]
            for hit in found:
                hits.setdefault(hit["caption"], hit)
            if len(hits) >= k or len(found) < fetch:
                return list(hits.values())[:k]
            hits, fetch = {}, fetch * 4

    def zero_shot(self, image: Any, candidates: Any) -> dict[str, float]:
        """Label an image by candidate captions (`check_candidates`: a list, or a caption per line): the probability
        of each that it is the one describing the image (a softmax over the model's scaled similarities), best first.
        Needs a retrieval model, not an index."""
        if not self.can_embed:
            raise InputError("Labelling by candidate captions needs a retrieval (dual-encoder) model; none is loaded.")
        texts, picture = check_candidates(candidates), self.read_image(image)
        inputs = {**self.processor(images=[picture], return_tensors="pt"),
                  **self.processor(text=texts, padding=True, truncation=True, return_tensors="pt")}
        with torch.inference_mode():
            probabilities = self.model(**inputs).logits_per_image.softmax(-1)[0].tolist()
        return dict(sorted(zip(texts, probabilities), key=lambda pair: -pair[1]))

    def catalogue(self, limit: int = 500) -> list[tuple[str, int]]:
        """The first ``limit`` indexed items as ``("row · caption", row)`` choices, for picking one to recommend from."""
        self._require_index()
        rows, column = min(limit, len(self.index)), self.index.metadata.get("text_column")
        texts = self.index.dataset[column][:rows] if column else [""] * rows  # the text column only: no image decoded
        return [(f"{row} · {(_captions(text) or [''])[0]}", row) for row, text in enumerate(texts)]

    def item(self, row: Any) -> dict[str, Any]:
        """One indexed item as ``{"score": 1.0, "row", "image", "caption"}``."""
        self._require_index()
        return self._hit({"score": 1.0, **self.index.row(check_row(row, len(self.index)))})

    def recommend(self, row: Any, k: int = 6, mention: Any = None) -> list[dict[str, Any]]:
        """The ``k`` indexed items most like item ``row``, its picture and its text together (`mm_hub.recommend`),
        never the item itself; with ``mention``, only items one of whose captions holds that word or phrase
        (case-insensitive), shown with the caption that holds it. ``[{"score", "row", "image", "caption"}, ...]``,
        best first."""
        from ..recommend import recommend

        self._require_index()
        row, k = check_row(row, len(self.index)), check_k(k)
        needle = check_text(mention, "filter").lower() if isinstance(mention, str) and mention.strip() else None
        text_column = self.index.metadata.get("text_column") or ""
        fetch = k
        while True:  # ask for more items until k pass the filter, or the index has no more
            found = recommend(self.index, row, k=fetch)
            hits = [self._hit(hit, needle) for hit in found if needle is None or _mentions(hit.get(text_column), needle)]
            if len(hits) >= k or len(found) < fetch:
                return hits[:k]
            fetch *= 4
