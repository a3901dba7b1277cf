"""`Predictor`: a model as the app serves it: loaded, described, and asked what its task's tabs ask.

The model-independent part lives here: loading (`from_pretrained`, `from_sources`), what the model can do (its task:
`mm_hub.tasks.Task.tabs`), what the header says of it (`info_markdown`, its measured quality) and the text checks
of the app's warnings. The work of each tab lives with its task, as a mixin: `Classifying` (classify, explain) in
`mm_hub.tasks.classification`, `Searching` (search, zero-shot, recommend; the index in `mm_hub.search`) in
`mm_hub.tasks.retrieval`, `Describing` (captions and answers) in `mm_hub.tasks.generation`.

`app.py` only lays out the UI and turns `InputError` into `gr.Error`; this module and the mixins hold the logic and
are unit-tested directly. What a request may send is checked by `mm_hub.inputs`; which model to serve, and loading
it, is `mm_hub.loading`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .cards import headline
from .inputs import InputError, check_text, read_image
from .loading import ModelLoadError, ModelSource, load_model, load_reports, resolved_commit
from .model.configuration_mm_hub import infer_problem_type
from .tasks import Task, scoring_of, task_of
from .tasks.classification import ABLATIONS, Classifying, Explanation, scores_from_logits
from .tasks.generation import Describing
from .tasks.retrieval import Searching


class Predictor(Classifying, Searching, Describing):
    """Runs an mm_hub model for the app: what every model needs here, and (from the mixins) the work of the tabs its
    task serves; asked for another task's work, it says so with an `InputError`.

    Args:
        model: a loaded mm_hub model: a head of a registered task (`mm_hub.tasks.TASKS`).
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

    def use_onnx(self, folder: str | os.PathLike | None = None, quantized: bool | None = None) -> None:
        """Serve the model's forward, embeddings and greedy writing from its ONNX export (`mm_hub.onnx_serving`):
        ``folder``, else ``onnx/`` in the model's folder or repo, else one exported (int8) into the cache once;
        ``quantized`` picks the int8 or fp32 graphs (None: int8 where the export has them)."""
        from .onnx_serving import OnnxServedModel, onnx_folder

        if folder is None:
            folder = onnx_folder(self.model_id, self.commit or self.revision)
        self.model = OnnxServedModel(getattr(self.model, "torch_model", self.model), folder, quantized)

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

    def dropped_tokens(self, text: str) -> int:
        """How many tokens of ``text`` fall beyond the processor's ``max_length`` (the model never sees them)."""
        try:
            text = check_text(text)
        except InputError:
            return 0
        length = len(self.processor.tokenizer(text, add_special_tokens=True)["input_ids"])
        return max(0, length - self.processor.max_length)


__all__ = ["ABLATIONS", "Explanation", "Predictor", "scores_from_logits"]
