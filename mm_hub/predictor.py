"""`Predictor`: everything the Gradio app does with a model (load, classify, explain, search, describe).

`app.py` only lays out the UI and turns `InputError` into `gr.Error`; this module holds the logic and is unit-tested
directly. Not a remote-code file: pushed models never import it.

Model resolution (first that is set wins): an explicit model id / path (the app's ``--model`` flag) > the
``MM_HUB_MODEL`` (and ``MM_HUB_REVISION``) environment variables > a ``space_config.json`` beside ``app.py``
(``{"model": "org/name", "revision": "main" or null}``, written by ``mm_hub``'s Space command) > the built-in demo
model (``training.demo.ensure_demo_model()``, trained once and cached).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import AutoConfig

from .explain import (
    EMPTY_TEXT,
    attention_explanation,
    grid_shape,
    heatmap_overlay,
    merge_word_pieces,
    neutral_pixel_values,
    pixels_to_image,
    word_positions,
)
from .modeling_mm_hub import MMHubForImageTextClassification, MMHubForImageTextRetrieval
from .processing_mm_hub import MMHubProcessor, to_rgb

# Inputs larger than this are refused before decoding (a small PNG can decode to gigabytes: a decompression bomb).
MAX_IMAGE_PIXELS = 40_000_000
# Captions longer than this many characters are refused; shorter ones are truncated to the processor's max_length.
MAX_TEXT_CHARS = 1000
# Leave-one-out word importance runs the model on this many variants per forward pass.
_LOO_CHUNK = 16
ABLATIONS = ("image + text", "image only", "text only")
SPACE_CONFIG = "space_config.json"


class ModelLoadError(RuntimeError):
    """The model could not be found, reached or read: one message for the person starting the app."""


class InputError(ValueError):
    """An image or text the model cannot take; the message says what was wrong and what is accepted."""


@dataclass
class ModelSource:
    """Where the app's model comes from: ``model`` None means the built-in demo model."""

    model: str | None
    revision: str | None = None
    origin: str = "demo"  # "argument" | "env" | "space_config" | "demo"


def resolve_model_source(
    model: str | None = None, revision: str | None = None, app_dir: str | os.PathLike | None = None
) -> ModelSource:
    """Pick the model to serve: ``model`` argument > ``$MM_HUB_MODEL`` > ``app_dir/space_config.json`` > demo.

    Raises:
        ModelLoadError: ``space_config.json`` exists but is not a JSON object with a string ``"model"``.
    """
    if model:
        return ModelSource(model, revision, "argument")
    if os.environ.get("MM_HUB_MODEL"):
        return ModelSource(os.environ["MM_HUB_MODEL"], revision or os.environ.get("MM_HUB_REVISION") or None, "env")
    config_path = Path(app_dir) / SPACE_CONFIG if app_dir is not None else None
    if config_path is not None and config_path.exists():
        try:
            data = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{config_path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
            raise ModelLoadError(
                f'{config_path} must be a JSON object like {{"model": "org/name", "revision": null}}, got {data!r}.'
            )
        return ModelSource(data["model"], revision or data.get("revision") or None, "space_config")
    return ModelSource(None, None, "demo")


def _load_error_message(model_id: str, revision: str | None, error: BaseException) -> str:
    """One readable paragraph: what failed, why (the first line of the cause), and what to check."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return (
        f"Could not load the model {model_id!r} (revision {revision or 'main'!r}): {type(error).__name__}: {reason}\n"
        f"Check that the Hub id or local folder is right and holds an mm_hub model, that the revision exists, that "
        f"this machine can reach {endpoint} (or has the model in its cache), and, for a private repo, that HF_TOKEN "
        "is set."
    )


def load_model(
    model_id: str | os.PathLike, revision: str | None = None, token: str | None = None
) -> tuple[MMHubForImageTextClassification | MMHubForImageTextRetrieval, MMHubProcessor]:
    """Load a saved or pushed mm_hub model (the head named in its config's ``architectures``) and its processor.

    Raises:
        ModelLoadError: the id/folder does not exist, cannot be reached, or is not an mm_hub model.
    """
    model_id = str(model_id)
    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision, token=token)
    except Exception as error:  # hub, network and file errors come in many types; the user needs one message
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    if config.model_type != "mm_hub":
        raise ModelLoadError(
            f"{model_id!r} is a {config.model_type!r} model; this app serves mm_hub image+text models "
            "(config model_type 'mm_hub')."
        )
    retrieval = "MMHubForImageTextRetrieval" in (config.architectures or [])
    head = MMHubForImageTextRetrieval if retrieval else MMHubForImageTextClassification
    try:
        model = head.from_pretrained(model_id, revision=revision, token=token)
        processor = MMHubProcessor.from_pretrained(model_id, revision=revision, token=token)
    except Exception as error:
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    return model.eval(), processor


def read_image(image: Any) -> Image.Image:
    """Open an uploaded image safely and return it as RGB.

    Accepts a file path, a Gradio file payload (a dict with ``"path"``), a PIL image or a numpy array. The size is
    checked from the header before the pixels are decoded, EXIF rotation is applied, and any mode (palette, 16-bit,
    CMYK, with alpha, ...) becomes RGB.

    Raises:
        InputError: nothing given, an empty or unreadable file, or more than `MAX_IMAGE_PIXELS` pixels.
    """
    if isinstance(image, dict):
        image = image.get("path")
    if image is None or (isinstance(image, str) and not image.strip()):
        raise InputError("No image was given: upload an image (PNG, JPEG, WebP, GIF, BMP, TIFF) or take a photo.")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image) if image.size else None
        if image is None:
            raise InputError("The image is empty (an array with no pixels).")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"The image file {path.name!r} was not found.")
        if path.stat().st_size == 0:
            raise InputError(f"The file {path.name!r} is empty (0 bytes); upload an image file.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(path)
        except Image.DecompressionBombError as error:
            raise InputError(f"The image is too large to process: {error}. The limit is {MAX_IMAGE_PIXELS:,} pixels.")
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(
                f"The file {path.name!r} could not be read as an image ({type(error).__name__}); upload a PNG, JPEG, "
                "WebP, GIF, BMP or TIFF file."
            ) from error
        image = opened
    if not isinstance(image, Image.Image):
        raise InputError(f"Expected an image file, got {type(image).__name__}.")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"The image is too large: {width} x {height} = {width * height:,} pixels; the limit is "
            f"{MAX_IMAGE_PIXELS:,} pixels. Resize it and try again."
        )
    if width == 0 or height == 0:
        raise InputError(f"The image is empty (size {width} x {height}).")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"The image file is damaged or truncated and could not be decoded ({error}).") from error


def check_text(text: Any) -> str:
    """Return the stripped caption.

    Raises:
        InputError: not a string, empty, or longer than `MAX_TEXT_CHARS` characters.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The text must be a string, got {type(text).__name__}.")
    text = text.strip()
    if not text:
        raise InputError("The text is empty: type a caption or question about the image.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"The text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}. Shorten it.")
    return text


def scores_from_logits(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """(..., num_labels) logits -> softmax probabilities (single-label), independent sigmoid probabilities
    (multi-label, or one label without a problem type) or the raw values (regression)."""
    logits = logits.float()
    if problem_type == "regression":
        return logits
    if problem_type == "multi_label_classification" or logits.shape[-1] == 1:
        return logits.sigmoid()
    return logits.softmax(dim=-1)


@dataclass
class Explanation:
    """What `Predictor.explain` returns.

    Attributes:
        predicted: the label whose score the word importance and ablation follow (the top one).
        heatmap: the model's view of the image with the text->image attention blended over it (attention and
            sequence fusion), else None.
        words: ``(word, score)`` pairs, scores in [-1, 1] scaled by the largest magnitude.
        word_method: ``"attention"`` or ``"leave-one-out"`` (how ``words`` were scored).
        ablation: ``{"image + text" | "image only" | "text only": {label: score}}``.
    """

    predicted: str
    heatmap: Image.Image | None
    words: list[tuple[str, float]]
    word_method: str
    ablation: dict[str, dict[str, float]] = field(default_factory=dict)


class Predictor:
    """Runs an mm_hub model for the app.

    Args:
        model: a loaded `MMHubForImageTextClassification` or `MMHubForImageTextRetrieval` (or their remote-code
            twins).
        processor: its `MMHubProcessor`.
        model_id: the Hub id or folder it came from (shown in the UI).
        revision: the requested revision (shown in the UI).
    """

    def __init__(self, model: Any, processor: Any, model_id: str = "(in memory)", revision: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.index: Any = None

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, revision: str | None = None, token: str | None = None):
        """Load a model by Hub id or local folder (see `load_model`); raises `ModelLoadError` with one message."""
        model, processor = load_model(model_id, revision=revision, token=token)
        return cls(model, processor, model_id=str(model_id), revision=revision)

    @classmethod
    def from_source(cls, source: ModelSource, progress: bool = True) -> Predictor:
        """Load the model a `ModelSource` names; the demo source trains the demo model once when it is missing."""
        if source.model is None:
            from training.demo import ensure_demo_model  # the library proper never imports training otherwise

            return cls.from_pretrained(ensure_demo_model(progress=progress))
        return cls.from_pretrained(source.model, revision=source.revision)

    # ---- what the model can do ---------------------------------------------------------------------------------

    @property
    def config(self) -> Any:
        """The model's `MMHubConfig`."""
        return self.model.config

    @property
    def can_classify(self) -> bool:
        """True for classification heads (anything with a ``classifier``)."""
        return hasattr(self.model, "classifier")

    @property
    def can_embed(self) -> bool:
        """True for retrieval heads (image and text embeddings in one space)."""
        return hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")

    @property
    def problem_type(self) -> str:
        """``single_label_classification`` (also when unset with several labels), ``multi_label_classification``
        or ``regression``."""
        problem = self.config.problem_type
        if problem is None:
            return "multi_label_classification" if self.config.num_labels == 1 else "single_label_classification"
        return problem

    @property
    def labels(self) -> list[str]:
        """Label names in output order."""
        id2label = self.config.id2label or {}
        return [str(id2label.get(i, f"LABEL_{i}")) for i in range(self.config.num_labels)]

    def info(self) -> dict[str, Any]:
        """Model id, revision (and resolved commit), head, fusion, encoders, labels and size, for the UI."""
        config = self.config
        vision = config.vision_config
        vision_desc = f"{vision.model_type} (hidden sizes {getattr(vision, 'hidden_sizes', None) or vision.hidden_size})"
        if config.text_encoder_type == "lstm":
            text_desc = f"BiLSTM ({config.lstm_num_layers} layers x {config.lstm_hidden_size} per direction)"
        else:
            text = config.text_config
            text_desc = f"{text.model_type} transformer ({text.num_hidden_layers} layers, width {text.hidden_size})"
        return {
            "model": self.model_id,
            "revision": self.revision or "main",
            "commit": getattr(config, "_commit_hash", None),
            "head": "retrieval" if self.can_embed and not self.can_classify else "classification",
            "problem_type": self.problem_type if self.can_classify else None,
            "fusion_type": config.fusion_type if self.can_classify else "none (dual encoder)",
            "vision_encoder": vision_desc,
            "text_encoder": text_desc,
            "labels": self.labels if self.can_classify else [],
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def info_markdown(self) -> str:
        """`info()` as a short Markdown paragraph."""
        info = self.info()
        commit = f" (commit `{info['commit'][:10]}`)" if info["commit"] else ""
        lines = [
            f"**Model** `{info['model']}` · revision `{info['revision']}`{commit} · {info['head']} head"
            + (f" ({info['problem_type']})" if info["problem_type"] else ""),
            f"**Fusion** `{info['fusion_type']}` · **image encoder** {info['vision_encoder']} · **text encoder** "
            f"{info['text_encoder']} · {info['parameters'] / 1e6:.2f}M parameters",
        ]
        if info["labels"]:
            lines.append("**Labels** " + ", ".join(f"`{label}`" for label in info["labels"]))
        return "  \n".join(lines)

    # ---- classification ----------------------------------------------------------------------------------------

    def _require_classifier(self) -> None:
        if not self.can_classify:
            raise InputError(
                "This model is a retrieval (dual-encoder) model: it embeds images and texts for search but has no "
                "classifier. Use the Search tab."
            )

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
        scores, _ = self._scores(**self._inputs([read_image(image)], [check_text(text)]))
        ranked = self._as_dict(scores[0])
        return dict(list(ranked.items())[:top_k]) if top_k else ranked

    # ---- explanation -------------------------------------------------------------------------------------------

    def explain(self, image: Any, text: Any) -> Explanation:
        """Explain the top prediction for one pair: attention heatmap (attention / sequence fusion), word
        importance, and the modality ablation (see `mm_hub.explain` for the neutral inputs)."""
        self._require_classifier()
        rgb, caption = read_image(image), check_text(text)
        inputs = self._inputs([rgb], [caption])
        scores, output = self._scores(**inputs, output_attentions=True)
        target = int(scores[0].argmax()) if self.problem_type != "regression" else 0
        ids = inputs["input_ids"][0]
        tokenizer = self.processor.tokenizer
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        words = word_positions(tokens, set(tokenizer.all_special_tokens))

        heatmap, method = None, "leave-one-out"
        fusion = self.config.fusion_type
        if fusion in ("attention", "sequence") and output.fusion_attentions:
            attentions = output.fusion_attentions
            if fusion == "attention":
                num_image = attentions["text_to_image"][0].shape[-1]
            else:
                num_image = attentions["self"][0].shape[-1] - 1 - ids.shape[0]
            cells, word_scores = attention_explanation(fusion, attentions, num_image, words)
            pixel_values = inputs["pixel_values"]
            skip, rows, cols = grid_shape(num_image, pixel_values.shape[-2], pixel_values.shape[-1])
            view = pixels_to_image(
                pixel_values[0], self.processor.image_processor.image_mean, self.processor.image_processor.image_std
            )
            heatmap = heatmap_overlay(view, cells[skip:], rows, cols)
            method = "attention"
        else:
            word_scores = self._leave_one_out(inputs, words, target, float(scores[0, target]))
        peak = float(np.abs(word_scores).max()) if len(word_scores) else 0.0
        scaled = [float(s) / peak if peak > 0 else 0.0 for s in word_scores]
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


__all__ = [
    "ABLATIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_TEXT_CHARS",
    "Explanation",
    "InputError",
    "ModelLoadError",
    "ModelSource",
    "Predictor",
    "check_text",
    "load_model",
    "read_image",
    "resolve_model_source",
    "scores_from_logits",
]
