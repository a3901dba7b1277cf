"""`Predictor`: everything the Gradio app does with a model (load, classify, explain, search).

`app.py` only lays out the UI and turns `InputError` into `gr.Error`; this module holds the logic and is unit-tested
directly. What a request may send is checked by `mm_hub.inputs`; which model to serve, and loading it, is
`mm_hub.loading`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .cards import headline
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
from .inputs import (
    InputError,
    check_candidates,
    check_k,
    check_row,
    check_text,
    check_whole_number,
    read_image,
)
from .loading import ModelLoadError, ModelSource, load_model, load_reports, resolved_commit
from .model.configuration_mm_hub import infer_problem_type
from .tasks import Task, scoring_of, task_of

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


def _captions(value: Any) -> list[str]:
    """A row's text column (one caption or a list) as a list of captions."""
    return [str(caption) for caption in value] if isinstance(value, list) else [str(value or "")]


def _mentions(value: Any, needle: str) -> bool:
    """Whether one of a row's captions holds ``needle`` (lower case), ignoring case."""
    return any(needle in caption.lower() for caption in _captions(value))


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


class Predictor:
    """Runs an mm_hub model for the app.

    Args:
        model: a loaded `MMHubForImageTextClassification` or `MMHubForImageTextRetrieval` (or their remote-code
            twins).
        processor: its `MMHubProcessor`.
        model_id: the Hub id or folder it came from (shown in the UI).
        revision: the requested revision (shown in the UI).
        reports: what training saved beside the model (`load_reports`): its measured quality and the words it read.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        model_id: str = "(in memory)",
        revision: str | None = None,
        allowed_dirs: Sequence[str | os.PathLike] | None = None,
        reports: dict[str, dict] | None = None,
    ):
        self.model = model.eval()
        self.reports = reports or {}
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.commit = resolved_commit(model_id, revision) if model_id != "(in memory)" else None
        self.index: Any = None
        self.origin = "argument"  # how the model was chosen: argument, env, space_config or demo (see ModelSource)
        # Folders image paths must lie in (None: any path, for use from Python). A served app sets them: a request
        # can name any path, and must not make the server open its own files.
        self.allowed_dirs = allowed_dirs

    def read_image(self, image: Any) -> Image.Image:
        """A user's image as the RGB image the processor takes (see `read_image`), paths confined to
        ``allowed_dirs`` when set."""
        return read_image(image, self.processor, self.allowed_dirs)

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, revision: str | None = None, token: str | None = None):
        """Load a model by Hub id or local folder (see `load_model`); raises `ModelLoadError` with one message."""
        model, processor = load_model(model_id, revision=revision, token=token)
        predictor = cls(model, processor, model_id=str(model_id), revision=revision)
        predictor.reports = load_reports(model_id, revision=predictor.commit or revision, token=token)
        return predictor

    @classmethod
    def from_sources(
        cls, sources: Sequence[ModelSource], demo_models: Callable[[], Sequence[str | os.PathLike]] | None = None
    ) -> list[Predictor]:
        """Load the models `resolve_model_sources` names, in order.

        Args:
            sources: a source whose ``model`` is None stands for the built-in demo models.
            demo_models: returns their folders (the app passes ``training.demo_model.demo_models``: the library
                itself never imports the training code).

        Raises:
            ModelLoadError: a model cannot be loaded, or the demo is asked for and there is no ``demo_models``.
        """
        predictors = []
        for source in sources:
            if source.model is None:
                if demo_models is None:
                    raise ModelLoadError("No model was given (--model, MM_HUB_MODEL or space_config.json).")
                loaded = [cls.from_pretrained(folder) for folder in demo_models()]
            else:
                loaded = [cls.from_pretrained(source.model, revision=source.revision)]
            for predictor in loaded:
                predictor.origin = source.origin
            predictors += loaded
        return predictors

    # ---- what the model can do ---------------------------------------------------------------------------------

    @property
    def config(self) -> Any:
        """The model's `MMHubConfig`."""
        return self.model.config

    @functools.cached_property
    def task(self) -> Task | None:
        """The model's task (`mm_hub.tasks.task_of`); None for a head no task declares."""
        return task_of(self.model)

    def serves(self, tab: str) -> bool:
        """Whether the model's task lists the app tab ``tab`` (see `mm_hub.tasks.Task.tabs`)."""
        return self.task is not None and tab in self.task.tabs

    @property
    def can_classify(self) -> bool:
        """True for models whose task serves the Classify tab (labels or values for a pair)."""
        return self.serves("classify")

    @property
    def can_embed(self) -> bool:
        """True for models whose task serves the Search tab (image and text embeddings in one space)."""
        return self.serves("search")

    @property
    def can_generate(self) -> bool:
        """True for models whose task serves the Describe tab (they write text: captions, answers)."""
        return self.serves("describe")

    @property
    def local(self) -> bool:
        """True when the model was loaded from a local folder (or built in memory): it has no Hub revision."""
        return self.model_id == "(in memory)" or Path(self.model_id).is_dir()

    def measured_quality(self) -> str | None:
        """How good the model is, in one line, from the ``eval_results.json`` saved with it (None when absent): its
        task's headline metrics (`mm_hub.tasks.Scoring.metrics`)."""
        scoring = scoring_of(self.model)
        split = self.reports.get("training_info.json", {}).get("eval_split") or "eval"
        if scoring is None:
            return None
        return headline(self.reports.get("eval_results.json"), scoring.metrics,
                        split if isinstance(split, str) else "eval")

    @functools.cached_property
    def text_vocabulary(self) -> frozenset[int] | None:
        """The token ids of the training texts (``training_info.json``'s ``text_vocabulary``), None when unknown."""
        vocabulary = self.reports.get("training_info.json", {}).get("text_vocabulary")
        return frozenset(vocabulary) if isinstance(vocabulary, list) else None

    def unseen_words(self, text: Any) -> list[str]:
        """The words of ``text`` with a token no training text held (the model has never read them, so what it says
        about them is a guess), each once, in order; empty when the training vocabulary is not known."""
        try:
            text = check_text(text)
        except InputError:
            return []
        if self.text_vocabulary is None:
            return []
        encoding = self.processor.tokenizer(text, add_special_tokens=False)
        words: dict[str, None] = {}
        for position, token in enumerate(encoding["input_ids"]):
            if token not in self.text_vocabulary:
                word = encoding.token_to_word(position)
                span = encoding.word_to_chars(word) if word is not None else None
                words[text[span.start : span.end] if span else self.processor.tokenizer.decode([token])] = None
        return [word for word in words if any(char.isalnum() for char in word)]  # punctuation is not a word

    @property
    def problem_type(self) -> str:
        """``single_label_classification``, ``multi_label_classification`` or ``regression`` (see
        `infer_problem_type` for a config without one)."""
        return infer_problem_type(self.config.problem_type, self.config.num_labels)

    @property
    def labels(self) -> list[str]:
        """Label names in output order."""
        id2label = self.config.id2label or {}
        return [str(id2label.get(i, f"LABEL_{i}")) for i in range(self.config.num_labels)]

    def info(self) -> dict[str, Any]:
        """Model id, revision (and resolved commit), head, fusion, encoders, labels and size, for the UI."""
        config = self.config
        vision = config.vision_config
        vision_desc = (
            f"{vision.model_type} (hidden sizes {getattr(vision, 'hidden_sizes', None) or vision.hidden_size})"
        )
        if config.text_encoder_type == "lstm":
            text_desc = f"BiLSTM ({config.lstm_num_layers} layers x {config.lstm_hidden_size} per direction)"
        else:
            text = config.text_config
            text_desc = f"{text.model_type} transformer ({text.num_hidden_layers} layers, width {text.hidden_size})"
        return {
            "model": self.model_id,
            "revision": None if self.local else self.revision or "main",
            "commit": self.commit,
            "head": self.task.name if self.task else type(self.model).__name__,
            "ensemble_size": getattr(config, "ensemble_size", 1),
            "problem_type": self.problem_type if self.can_classify else None,
            "fusion_type": "none (dual encoder)" if self.can_embed else config.fusion_type,
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
            f"**Model** `{info['model']}`"
            + (" (the built-in demo model)" if self.origin == "demo" else " (a local folder)" if self.local
               else f" · revision `{info['revision']}`{commit}")
            + f" · {info['head']} head"
            + (f" ({info['problem_type']})" if info["problem_type"] else "")
            + (f" · an ensemble of {info['ensemble_size']} models, probabilities averaged" if info["ensemble_size"] > 1
               else ""),
            (
                f"**Fusion** `{info['fusion_type']}` · **image encoder** {info['vision_encoder']} · **text encoder** "
                f"{info['text_encoder']} · {info['parameters'] / 1e6:.2f}M parameters"
            ),
        ]
        if info["labels"]:
            lines.append("**Labels** " + ", ".join(f"`{label}`" for label in info["labels"]))
        quality = self.measured_quality()
        lines.append(f"**Measured** {quality}" if quality else "**Measured** nothing: no `eval_results.json` was saved "
                     "with this model")
        return "  \n".join(lines)

    # ---- search ------------------------------------------------------------------------------------------------

    @property
    def can_search(self) -> bool:
        """True when the model can embed and an index is attached (see `build_search_index`)."""
        return self.can_embed and self.index is not None

    def build_search_index(
        self,
        dataset: str | os.PathLike | None = None,
        split: str | None = None,
        image_column: str = "image",
        text_column: str | None = None,
        max_rows: int | None = None,
        cache: bool = True,
        progress: bool = True,
    ) -> Any:
        """Index a dataset for the Search tab with `mm_hub.search.MultimodalIndex`, once: the index is saved under
        ``cache_dir() / "indexes"`` keyed by the model's fingerprint and the dataset, and reopened on later starts.

        Args:
            dataset: a saved or pushed mm_hub index (folder or Hub dataset id with ``mm_hub_index.json``, used as
                is), any Hub dataset id or local dataset folder (``datasets.load_dataset``), or None for the
                built-in shapes retrieval data (200 generated scenes with 3 captions each).
            split: split to index (default ``"train"``; ``"eval"`` for the shapes data).
            image_column: the image column.
            text_column: the text column (a string or a list of captions); default ``"text"``, ``"caption"`` or
                ``"captions"``, whichever exists.
            max_rows: index only the first rows.
            cache: reuse / write the cached index.
            progress: show the embedding progress bar.

        Raises:
            InputError: the model cannot embed, or the dataset has no usable columns.
        """
        from .embeddings import model_fingerprint
        from .paths import cache_dir
        from .rows import load_split
        from .search import METADATA_FILE, MultimodalIndex, is_saved_index

        if not self.can_embed:
            raise InputError("Only retrieval (dual-encoder) models can search; this model is a classifier.")
        if dataset is not None and is_saved_index(str(dataset)):
            self.index = MultimodalIndex.load(str(dataset), self.model, self.processor)
            return self.index
        fingerprint = model_fingerprint(self.model, self.processor)
        spec = {"dataset": str(dataset), "split": split, "image": image_column, "text": text_column, "rows": max_rows}
        key = hashlib.sha256(
            json.dumps([spec, fingerprint["config_hash"], fingerprint["probe_image_embeds"]]).encode()
        ).hexdigest()[:20]
        folder = cache_dir() / "indexes" / key
        if cache and (folder / METADATA_FILE).exists():
            try:
                self.index = MultimodalIndex.load(folder, self.model, self.processor)
                return self.index
            except ValueError as error:  # a stale or damaged cache entry is rebuilt rather than trusted
                warnings.warn(f"Rebuilding the cached search index {folder}: {error}")
        dataset_id = str(dataset) if dataset is not None else "mm_hub shapes (retrieval, eval split)"
        try:
            if dataset is None:
                rows, base_dir = load_split("shapes", "num_train=0,num_eval=200,num_heldout=0", split or "eval")
            else:
                rows, base_dir = load_split(str(dataset), None, split or "train")
        except (OSError, ValueError) as error:  # missing, unreachable, unreadable: one message for the person
            raise InputError(f"Cannot load the dataset {dataset_id!r} to index: {error}") from error
        if max_rows is not None:
            rows = rows.select(range(min(max_rows, len(rows))))
        text_column = text_column or next((c for c in ("text", "caption", "captions") if c in rows.column_names), None)
        if image_column not in rows.column_names or text_column not in rows.column_names:
            raise InputError(
                f"Cannot search {dataset_id}: it needs an image column ({image_column!r}) and a text column (text, "
                f"caption or captions); its columns are {rows.column_names}."
            )
        self.index = MultimodalIndex.build(
            self.model,
            self.processor,
            rows,
            image_column=image_column,
            text_column=text_column,
            model_id=self.model_id,
            model_revision=self.revision,
            dataset_id=dataset_id,
            progress=progress,
            base_dir=base_dir,
        )
        if cache:
            self.index.save(folder)
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
        from .recommend import recommend

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

    # ---- generation --------------------------------------------------------------------------------------------

    def _generation_inputs(self, image: Any, question: Any, max_new_tokens: Any) -> dict[str, Any]:
        """The checked arguments of `generate` for one image and an optional question."""
        if not self.can_generate:
            raise InputError("This model does not write text (it has no decoder); load a generation model to describe "
                             "images.")
        rgb = self.read_image(image)
        prompt = None if question is None or (isinstance(question, str) and not question.strip()) else question
        inputs = self.processor(images=[rgb], text=None if prompt is None else [check_text(prompt, "question")])
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 2
        room = self.config.decoder_max_positions - prompt_length
        what = f"number of new tokens (this model writes at most {self.config.decoder_max_positions}, question included)"
        tokens = room if max_new_tokens is None else check_whole_number(max_new_tokens, what, 1, room)
        return {**inputs, "max_new_tokens": tokens, "do_sample": False}

    def describe(self, image: Any, question: Any = None, max_new_tokens: Any = None) -> str:
        """What the model writes about ``image``: a caption, or the answer to ``question`` (greedy decoding, at most
        ``max_new_tokens`` tokens; default: as many as the model may write).

        Raises:
            InputError: bad image or question, a ``max_new_tokens`` the model cannot write, or a model without a
                decoder.
        """
        text = ""
        for text in self.describe_stream(image, question, max_new_tokens):
            pass
        return text

    def describe_stream(self, image: Any, question: Any = None, max_new_tokens: Any = None) -> Iterator[str]:
        """`describe`, as the text so far after each new token (the model writes in a background thread)."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        kwargs = self._generation_inputs(image, question, max_new_tokens)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def write() -> None:
            try:
                self.model.generate(**kwargs, streamer=streamer)
            except Exception as error:  # re-raised below, in the caller's thread
                failure.append(error)
                streamer.end()

        worker = Thread(target=write, daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text.strip()
        worker.join()
        if failure:
            raise failure[0]

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

    def dropped_tokens(self, text: str) -> int:
        """How many tokens of ``text`` fall beyond the processor's ``max_length`` (the model never sees them)."""
        try:
            text = check_text(text)
        except InputError:
            return 0
        length = len(self.processor.tokenizer(text, add_special_tokens=True)["input_ids"])
        return max(0, length - self.processor.max_length)

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


__all__ = ["ABLATIONS", "Explanation", "Predictor", "scores_from_logits"]
