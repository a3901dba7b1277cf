"""The classification task: an (image, text) pair -> a label (single-label, multi-label) or values (regression)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..auto import AutoModelForImageTextClassification
from ..explain import (
    EMPTY_TEXT,
    attention_explanation,
    grid_shape,
    heatmap_overlay,
    merge_word_pieces,
    neutral_pixel_values,
    pixels_to_image,
    word_positions,
)
from ..export import classifier_graphs
from ..inputs import InputError, check_text
from ..metrics import classification_metrics, multilabel_metrics, regression_metrics
from ..model.configuration_mm_hub import CLASSIFICATION_TASK, infer_problem_type
from ..model.modeling_mm_hub import MMHubEnsembleForImageTextClassification, MMHubForImageTextClassification
from ..model.pipeline_mm_hub import ImageTextClassificationPipeline
from . import Scoring, Task, pair_inputs, register_task


def describe(config: dict[str, Any]) -> str:
    if (config.get("ensemble_size") or 1) > 1:
        return (f"An mm_hub ensemble of {config['ensemble_size']} image + text classifiers trained apart, whose "
                "probabilities are averaged. Each has")
    return "An mm_hub image + text model with a classification head:"


def details(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    labels = [id2label.get(str(i), str(i)) for i in range(len(id2label))]
    problem = infer_problem_type(config.get("problem_type"), len(id2label))
    return [f"| Problem type | {problem} |", f"| Labels | {', '.join(f'`{label}`' for label in labels)} |"]


USAGE = """
Or as a pipeline (the `{pipeline_task}` task ships with the repo; with mm_hub installed, leave
`trust_remote_code` out and mm_hub's own pipeline serves it):

```python
from transformers import pipeline

classifier = pipeline("{pipeline_task}", model="{repo_id}", trust_remote_code=True)
classifier({{"image": "photo.jpg", "text": "a red circle above a blue square"}})
```
"""

CLASSIFICATION = register_task(Task(
    name="classification",
    pipeline_task=CLASSIFICATION_TASK,
    hub_tag="other",  # the Hub has no "image + text -> label" pipeline tag: "other" is the honest one
    heads=(MMHubForImageTextClassification, MMHubEnsembleForImageTextClassification),
    auto_classes=(AutoModelForImageTextClassification,),
    pipeline=ImageTextClassificationPipeline,
    scoring={
        "single_label_classification": Scoring(("accuracy",), classification_metrics),
        "multi_label_classification": Scoring(("micro_f1", "subset_accuracy"), multilabel_metrics),
        "regression": Scoring(("mse", "mae"), regression_metrics, lower_is_better=True),
    },
    encode=pair_inputs,
    describe=describe,
    details=details,
    usage=USAGE,
    tabs=("classify", "explain"),
    preset="classification",
    shapes_variant="classification",
    columns={"label": "label_column"},
    onnx_graphs=classifier_graphs,
))


# ---- what the app does with a classifier -----------------------------------------------------------------------

_LOO_CHUNK = 16
ABLATIONS = ("image + text", "image only", "text only")


def scores_from_logits(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """(..., num_labels) logits -> softmax probabilities (single-label), independent sigmoid probabilities
    (multi-label) or the raw values (regression; also one output without a problem type, see
    `infer_problem_type`)."""
    logits = logits.float()
    problem_type = infer_problem_type(problem_type, logits.shape[-1])
    if problem_type == "regression":
        return logits
    if problem_type == "multi_label_classification":
        return logits.sigmoid()
    return logits.softmax(dim=-1)


def _scale_word_scores(scores: np.ndarray, signed: bool) -> list[float]:
    """Signed scores (leave-one-out) -> divided by the largest magnitude, in [-1, 1]; attention shares -> min-max
    scaled to [0, 1], so the words the fusion attended to most stand out even when attention is nearly uniform."""
    if not len(scores):
        return []
    if signed:
        peak = float(np.abs(scores).max())
        return [float(s) / peak if peak > 0 else 0.0 for s in scores]
    span = float(scores.max() - scores.min())
    return [float(s - scores.min()) / span if span > 0 else 0.0 for s in scores]


@dataclass
class Explanation:
    """What `Predictor.explain` returns.

    Attributes:
        predicted: the label whose score the word importance and ablation follow (the top one).
        heatmap: the model's view of the image with the text->image attention blended over it (attention,
            sequence and bilinear fusion), else None.
        words: ``(word, score)`` pairs: leave-one-out drops divided by the largest magnitude (in [-1, 1], negative
            = the word spoke against the prediction), or attention min-max scaled to [0, 1].
        word_method: ``"attention"`` or ``"leave-one-out"`` (how ``words`` were scored).
        ablation: ``{"image + text" | "image only" | "text only": {label: score}}``.
    """

    predicted: str
    heatmap: Image.Image | None
    words: list[tuple[str, float]]
    word_method: str
    ablation: dict[str, dict[str, float]] = field(default_factory=dict)


class Classifying:
    """The Classify and Explain tabs' work: label scores of a pair, and why. A mixin of `mm_hub.predictor.Predictor`,
    whose ``model``, ``processor``, ``config``, ``labels``, ``problem_type``, ``read_image`` and ``can_classify`` it
    reads."""

    def _require_classifier(self) -> None:
        if not self.can_classify:
            task = self.task.name if self.task else type(self.model).__name__
            tabs = ", ".join(self.task.tabs) if self.task else "none"
            raise InputError(f"This model is a {task} model, not a classifier; it serves the app's tabs: {tabs}.")

    def _inputs(self, images: list[Image.Image], texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=images, text=texts, return_tensors="pt"))

    def _scores(self, **inputs: Any) -> tuple[torch.Tensor, Any]:
        with torch.no_grad():
            output = self.model(**inputs)
        return scores_from_logits(output.logits, self.problem_type), output

    def _as_dict(self, scores: torch.Tensor) -> dict[str, float]:
        pairs = sorted(zip(self.labels, scores.tolist()), key=lambda pair: pair[1], reverse=True)
        return {label: float(score) for label, score in pairs}

    def classify(self, image: Any, text: Any, top_k: int | None = None) -> dict[str, float]:
        """Score one (image, text) pair.

        Returns:
            ``{label: score}`` sorted best first (``top_k`` of them when given): softmax probabilities for
            single-label models, independent probabilities for multi-label models, predicted values for regression.

        Raises:
            InputError: bad image or text (see `read_image`, `check_text`), or a model without a classifier.
        """
        self._require_classifier()
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}.")
        scores, _ = self._scores(**self._inputs([self.read_image(image)], [check_text(text)]))
        ranked = self._as_dict(scores[0])
        return dict(list(ranked.items())[:top_k]) if top_k else ranked

    # ---- explanation -------------------------------------------------------------------------------------------

    def explain(self, image: Any, text: Any) -> Explanation:
        """Explain the top prediction for one pair: attention heatmap (attention / sequence / bilinear fusion), word
        importance, and the modality ablation (see `mm_hub.explain` for the neutral inputs)."""
        self._require_classifier()
        rgb, caption = self.read_image(image), check_text(text)
        inputs = self._inputs([rgb], [caption])
        scores, output = self._scores(**inputs, output_attentions=True)
        target = int(scores[0].argmax()) if self.problem_type != "regression" else 0
        ids = inputs["input_ids"][0]
        tokenizer = self.processor.tokenizer
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        words = word_positions(tokens, set(tokenizer.all_special_tokens))

        heatmap, word_scores = None, None
        explained = attention_explanation(self.config.fusion_type, output.fusion_attentions, ids.shape[0], words)
        if explained is not None:
            cells, word_scores = explained
            num_image = len(cells)
            pixel_values = inputs["pixel_values"]
            skip, rows, cols = grid_shape(num_image, pixel_values.shape[-2], pixel_values.shape[-1])
            view = pixels_to_image(
                pixel_values[0], self.processor.image_processor.image_mean, self.processor.image_processor.image_std
            )
            heatmap = heatmap_overlay(view, cells[skip:], rows, cols)
        method = "attention"
        if word_scores is None:
            method, word_scores = "leave-one-out", self._leave_one_out(inputs, words, target, float(scores[0, target]))
        scaled = _scale_word_scores(np.asarray(word_scores, dtype=np.float64), signed=method == "leave-one-out")
        return Explanation(
            predicted=self.labels[target],
            heatmap=heatmap,
            words=merge_word_pieces([tokens[i] for i in words], scaled),
            word_method=method,
            ablation=self._ablation(inputs, caption),
        )

    def _leave_one_out(self, inputs: dict[str, torch.Tensor], words: list[int], target: int, base: float) -> np.ndarray:
        """Drop in the target score when each word piece is deleted from the caption (positive = it helped)."""
        ids = inputs["input_ids"][0]
        drops = []
        for start in range(0, len(words), _LOO_CHUNK):
            chunk = words[start : start + _LOO_CHUNK]
            keep = [torch.cat([ids[:p], ids[p + 1 :]]) for p in chunk]  # each one token shorter, so no padding
            batch_ids = torch.stack(keep)
            scores, _ = self._scores(
                pixel_values=inputs["pixel_values"].expand(len(chunk), -1, -1, -1),
                input_ids=batch_ids,
                attention_mask=torch.ones_like(batch_ids),
            )
            drops.extend((base - scores[:, target]).tolist())
        return np.asarray(drops, dtype=np.float64)

    def _ablation(self, inputs: dict[str, torch.Tensor], caption: str) -> dict[str, dict[str, float]]:
        """Scores with both modalities, with the empty text ("image only") and with the neutral image ("text only")."""
        texts = self.processor(text=[caption, EMPTY_TEXT, caption], return_tensors="pt")
        pixels = inputs["pixel_values"]
        batch_pixels = torch.cat([pixels, pixels, neutral_pixel_values(pixels)])
        scores, _ = self._scores(
            pixel_values=batch_pixels, input_ids=texts["input_ids"], attention_mask=texts["attention_mask"]
        )
        return {name: self._as_dict(row) for name, row in zip(ABLATIONS, scores)}
