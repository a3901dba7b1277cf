"""The retrieval task: a dual encoder that puts images and texts in one space (search, zero-shot labels, recommending)."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import AutoModelForZeroShotImageClassification

from ..auto import AutoModelForImageTextRetrieval
from ..metrics import retrieval_metrics
from ..model.configuration_mm_hub import RETRIEVAL_TASK
from ..model.modeling_mm_hub import MMHubForImageTextRetrieval
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
))
