"""``pipeline("image-text-classification")``: classify (image, text) pairs with an mm_hub classification model.

Named in saved configs' ``custom_pipelines``, so that transformers finds it where mm_hub is not installed.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline

from .configuration_mm_hub import infer_problem_type


class ImageTextClassificationPipeline(Pipeline):
    """Classify (image, text) pairs.

    Inputs: ``{"image": ..., "text": "..."}`` or a list of such dicts (images as the processor accepts them:
    PIL images, arrays, paths or URLs). Output per pair: ``[{"label": str, "score": float}, ...]`` sorted by score,
    best first; ``top_k`` (default 5) limits the list. Scores are softmax probabilities for single-label models,
    independent sigmoid probabilities for multi-label models and raw values for regression models.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> classifier = pipeline("image-text-classification", model="path/or/hub-id")  # mm_hub imported
    >>> classifier({"image": "cat.png", "text": "a cat on a sofa"}, top_k=2)
    [{'label': 'match', 'score': 0.97}, {'label': 'mismatch', 'score': 0.03}]
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, top_k: int | None = None, **kwargs: Any):
        postprocess_params = {}
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
                raise ValueError(f"top_k must be a positive int, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        return {}, {}, postprocess_params

    def __call__(self, inputs: dict[str, Any] | list[dict[str, Any]], **kwargs: Any) -> Any:
        """Classify one ``{"image", "text"}`` dict (returns a list of ``{"label", "score"}``) or a list of them
        (returns one such list per pair)."""
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: Any) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, dict) or "image" not in inputs or "text" not in inputs:
            raise ValueError(
                'Each input must be a dict with an "image" and a "text" key, e.g. '
                f'{{"image": "photo.jpg", "text": "a caption"}}; got {type(inputs).__name__}'
                + (f" with keys {sorted(inputs)}" if isinstance(inputs, dict) else "")
                + "."
            )
        return self.processor(images=inputs["image"], text=inputs["text"], return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int = 5) -> list[dict[str, Any]]:
        logits = model_outputs["logits"][0].float()
        config = self.model.config
        problem = infer_problem_type(config.problem_type, config.num_labels)
        if problem == "regression":
            scores = logits
        elif problem == "multi_label_classification":
            scores = logits.sigmoid()
        else:
            scores = logits.softmax(dim=-1)
        ranked = sorted(
            ({"label": config.id2label.get(i, f"LABEL_{i}"), "score": float(s)} for i, s in enumerate(scores)),
            key=lambda item: item["score"],
            reverse=True,
        )
        return ranked[:top_k]


__all__ = ["ImageTextClassificationPipeline"]
