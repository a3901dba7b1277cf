"""The one registry of tasks: what each kind of mm_hub model does, declared once and read by everyone.

A task (`Task`) is its head classes (the first is what training builds), the pipeline task and Hub tag it is served
and listed under, how a batch of rows becomes model inputs, how it is scored (the metrics that pick the best
checkpoint and headline the model card and the app), its card's text, the app tabs it serves, its training preset
and the variant of the built-in shapes data it trains on. `mm_hub` registers every head with transformers' Auto
classes from here; `mm_hub.loading`, `mm_hub.cards`, the predictor, the app, the tests and `training` read `TASKS`
and nothing else.

A new task is a head class plus one `register_task(Task(...))`; the three built in are declared in
`tasks/classification.py`, `tasks/retrieval.py` and `tasks/generation.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scoring:
    """How a model of a task (or of one problem type of it) is scored.

    Attributes:
        metrics: what evaluation reports that matters, most important first: ``metrics[0]`` picks the best
            checkpoint (``--metric-for-best-model``'s default) and all of them headline the card and the app.
        compute: ``(predictions, label_ids) -> {metric: value}`` for tasks that the Trainer's own loop evaluates
            batch by batch (None for tasks with a `SplitEvaluation`).
        lower_is_better: True for errors (mse, mae), False for accuracies and recalls.
    """

    metrics: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    lower_is_better: bool = False


@dataclass(frozen=True)
class SplitEvaluation:
    """Evaluation over a whole split at once, where a score needs every row (recall over all images, corpus BLEU):
    `predict` turns one batch of usable rows into picklable partial results, `score` the results of every batch of
    every process into metrics. Training runs it in one shared loop (`training.train.evaluate_split`).

    Attributes:
        predict: ``(model, processor, rows, max_new_tokens=..., num_beams=...) -> part``, under ``torch.no_grad``.
        score: ``(parts) -> {metric: value}``.
    """

    predict: Callable[..., Any]
    score: Callable[[list[Any]], dict[str, float]]


@dataclass(frozen=True)
class Task:
    """One kind of mm_hub model, everything about it in one place.

    Attributes:
        name: what ``--task`` says (``"classification"``).
        pipeline_task: the pipeline task that serves it, also its name in model cards and ``training_info.json``.
        hub_tag: the Hub's ``pipeline_tag`` in its model card.
        heads: its model classes; training builds the first; a saved config's ``architectures`` names one of them.
        auto_classes: transformers' Auto classes (besides ``AutoModel``) that load its heads (their pipelines use
            them).
        pipeline: a custom `Pipeline` registered for ``pipeline_task`` with ``auto_classes[0]`` as its model class;
            None where one of transformers' own pipelines serves the task.
        scoring: how it is scored: one `Scoring`, or one per ``problem_type`` (classification).
        encode: ``(processor, rows) -> model inputs`` of a batch of usable rows (labels are added by training).
        describe: ``(config.json dict) -> str``: what the head is, for the model card ("a classification head").
        details: ``(config.json dict) -> ["| key | value |", ...]``: its rows of the card's details table.
        usage: its part of the card's "How to use", with ``{repo_id}`` and ``{pipeline_task}`` filled in.
        tabs: the app tabs it serves (names of ``app.TABS``), in order.
        preset: its training preset in ``training/configs`` (``--config`` without ``.yaml``).
        shapes_variant: the variant of the built-in shapes data it trains on (``mm_hub.shapes.load_shapes``).
        columns: the dataset columns it reads besides image and text: canonical name (``label``, ``target``) ->
            the training option that names the column (``label_column``).
        text_required: whether rows need a text (a generator may write captions without a prompt).
        caption_lists: whether a text cell may hold a list of captions, one picked at random per training step.
        evaluation: a `SplitEvaluation`, or None where the Trainer's loop scores it with ``scoring.compute``.
        onnx_graphs: ``(model, processor) -> [mm_hub.export.OnnxGraph, ...]``: the graphs ``training.export``
            writes (None: its models do not export); ``mm_hub.ort_mm_hub.RUNTIMES[name]`` runs them.
    """

    name: str
    pipeline_task: str
    hub_tag: str
    heads: tuple[type, ...]
    scoring: Scoring | Mapping[str, Scoring]
    encode: Callable[[Any, list[dict[str, Any]]], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]
    details: Callable[[dict[str, Any]], list[str]]
    usage: str
    tabs: tuple[str, ...] = ()
    preset: str | None = None
    shapes_variant: str | None = None
    auto_classes: tuple[type, ...] = ()
    pipeline: type | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    text_required: bool = True
    caption_lists: bool = False
    evaluation: SplitEvaluation | None = None
    onnx_graphs: Callable[[Any, Any], list[Any]] | None = None

    def scoring_for(self, problem_type: str | None = None) -> Scoring:
        """Its `Scoring` (for classification, that of ``problem_type``)."""
        if isinstance(self.scoring, Scoring):
            return self.scoring
        if problem_type not in self.scoring:
            raise ValueError(f"The {self.name} task is scored by problem type ({sorted(self.scoring)}); got "
                             f"{problem_type!r}.")
        return self.scoring[problem_type]


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to `TASKS` and register its heads with transformers' Auto classes (see `mm_hub.auto`); a name
    or head already taken by another task is a ValueError. Returns the task."""
    from ..auto import register_heads

    taken = {head: other.name for other in TASKS.values() if other.name != task.name for head in other.heads}
    clashes = [head.__name__ for head in task.heads if head in taken]
    if clashes:
        raise ValueError(f"Task {task.name!r}: heads {clashes} already belong to another task.")
    TASKS[task.name] = task
    register_heads(task)
    return task


def task_named(name: str) -> Task:
    """The task ``--task`` names; a ValueError lists the registered ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name]


def all_heads() -> dict[str, type]:
    """Every registered head class by its name (what a saved config's ``architectures`` says)."""
    return {head.__name__: head for task in TASKS.values() for head in task.heads}


def task_of(model_or_architectures: Any) -> Task | None:
    """The task of a model (by its class name, so remote-code twins count too), of a config (by its
    ``architectures``) or of a list of architecture names; None when no registered head matches."""
    target = getattr(model_or_architectures, "torch_model", model_or_architectures)  # served from ONNX: its model
    if isinstance(target, (list, tuple)):
        names = list(target)
    elif hasattr(target, "architectures") and not hasattr(target, "config"):
        names = list(target.architectures or [])
    else:
        names = [type(target).__name__]
    return next((task for name in names for task in TASKS.values() if name in {h.__name__ for h in task.heads}), None)


def scoring_of(model: Any) -> Scoring | None:
    """The `Scoring` of a loaded model (by its task and ``config.problem_type``); None for an unknown head."""
    from ..model.configuration_mm_hub import infer_problem_type

    task = task_of(model)
    if task is None:
        return None
    problem = infer_problem_type(model.config.problem_type, model.config.num_labels)
    return task.scoring_for(problem if not isinstance(task.scoring, Scoring) else None)


def pair_inputs(processor: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Processor outputs of (image, text) rows; a row's ``text_pair`` is encoded with its text as a sentence pair."""
    images = [row["image"] for row in rows]
    texts = [row["text"] for row in rows]
    if "text_pair" not in rows[0]:
        return dict(processor(images=images, text=texts, return_tensors="pt"))
    inputs = dict(processor(images=images, return_tensors="pt"))
    inputs.update(processor.tokenizer(texts, [row["text_pair"] for row in rows], padding=True, truncation=True,
                                      max_length=processor.max_length, return_token_type_ids=False,
                                      return_tensors="pt"))
    return inputs


# The built-in tasks register themselves (imported last: they use the names above).
from . import classification, generation, retrieval  # noqa: E402, F401

__all__ = ["TASKS", "Scoring", "SplitEvaluation", "Task", "all_heads", "pair_inputs", "register_task",
           "scoring_of", "task_named", "task_of"]
