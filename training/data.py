"""Data for training: load any dataset source, map columns, infer labels, decode images lazily and skip bad rows.

Rows flow: ``load_splits`` (columns renamed to ``image``/``text``/``text_pair``/``label``, images left undecoded)
-> ``RowTransform`` via ``with_transform`` (decode + augment per row, never raising on a bad image) -> ``Collator``
(drops and counts bad rows, runs the processor, encodes labels).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image

from mm_hub import MMHubProcessor, load_rgb_image
from mm_hub._files import write_json
from mm_hub.rows import (
    EMPTY_TARGET,
    EMPTY_TEXT,
    INVALID_LABEL,
    SKIP_REASONS,
    UNREADABLE_IMAGE,
    cell_texts,
    image_source,
)
from mm_hub.rows import load_source as read_source
from mm_hub.tasks import Task, task_named
from mm_hub.tasks.generation import PAIR  # with --target-pairs: the "PROMPT:TARGET" pair of an example

from .config import TrainConfig

logger = logging.getLogger(__name__)

EVAL_SPLIT_NAMES = ("validation", "eval", "valid", "test")
ROW = "__row__"
NO_PROMPT = "none"  # the prompt of a --target-pairs pair without one (a caption)
# Labels are trained in float32 and regression squares its errors: a value larger than this overflows the loss to
# infinity (1e308 passed the finiteness check, and every weight became NaN), so it is no label a model can learn.
MAX_LABEL_MAGNITUDE = 1e18
SKIPPED_FILE_PREFIX = "skipped_rows-"  # in checkpoints: skipped_rows-<process index>.json
SKIPPED = "skipped_rows"  # batch key: (reason, row number) of the rows a batch dropped; `MMHubTrainer` pops it


@dataclass
class LabelInfo:
    """How labels are encoded: the problem type and, for classification, the label names in id order."""

    problem_type: str
    names: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """Outputs of the head: one per class, or one per regression target."""
        return len(self.names) if self.names else 1

    def encode(self, value: Any, row: Any) -> Any:
        """One row's label -> class id, multi-hot list, or float; an unknown label is a ValueError."""
        if self.problem_type == "regression":
            return float(value[0] if isinstance(value, (list, tuple)) else value)
        if self.problem_type == "single_label_classification":
            return self._index(value, row)
        hot = [0.0] * len(self.names)
        values = value if isinstance(value, (list, tuple)) else [value]
        if values and all(isinstance(v, float) for v in values) and len(values) == len(self.names):
            return [float(v) for v in values]  # already multi-hot
        for item in values:
            hot[self._index(item, row)] = 1.0
        return hot

    def _index(self, value: Any, row: Any) -> int:
        if isinstance(value, str):
            if value not in self.names:
                raise ValueError(f"Row {row}: label {value!r} is not one of the known labels {self.names}.")
            return self.names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.names):
            raise ValueError(f"Row {row}: label {value!r} is not a class id in 0..{len(self.names) - 1} ({self.names}).")
        return value


def load_source(config: TrainConfig) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, Path | None]:
    """Every split of ``config.data.dataset`` (`mm_hub.rows.load_source`: the task's variant of the shapes data),
    and the folder relative image paths are resolved against."""
    variant = task_named(config.task).shapes_variant
    if config.data.dataset == "shapes" and variant is None:
        raise ValueError(f"The built-in shapes data has no variant for the {config.task} task; give --dataset.")
    return read_source(config.data.dataset, config.data.dataset_config, shapes_variant=variant or "",
                       streaming=config.data.streaming, single_split=config.data.train_split)


def target_pairs(config: TrainConfig) -> list[tuple[str | None, str]]:
    """``--target-pairs`` as ``(prompt column or None, target column)`` pairs; empty without it."""
    pairs = [spec.partition(":")[::2] for spec in config.data.target_pairs or []]
    return [(None if prompt.lower() == NO_PROMPT else prompt, target) for prompt, target in pairs]


def _columns(config: TrainConfig, text: bool = True) -> dict[str, str]:
    """The dataset's columns a run reads, by the name they get (``image``, ``text``, ``text_pair``, ``label``,
    ``target``); with ``--target-pairs``, the image and every column the pairs name (by their own names). ``text``
    False: the run found no text column and trains without one."""
    data = config.data
    if data.target_pairs:
        named = dict.fromkeys(column for pair in target_pairs(config) for column in pair if column is not None)
        return {"image": data.image_column, **{column: column for column in named}}
    kinds = {"image": data.image_column, "text": data.text_column if text else None,
             "text_pair": data.text_pair_column,
             **{kind: getattr(data, option) for kind, option in task_named(config.task).columns.items()}}
    return {kind: column for kind, column in kinds.items() if column is not None}


def _without_default_text(config: TrainConfig, columns: list[str] | None) -> bool:
    """True when a task that may go without text finds no column of the default name (``text``): it trains without
    a prompt (captions), and says so."""
    if task_named(config.task).text_required or columns is None or config.data.text_column != "text":
        return False
    if "text" in columns or config.data.target_pairs:
        return False
    logger.info("%s has no 'text' column: training without a prompt (captions). Name the prompt column with "
                "--text-column.", config.data.dataset)
    return True


def _check_columns(split: Any, name: str, config: TrainConfig, text: bool = True) -> None:
    """A configured column missing from a split -> ValueError listing the real columns."""
    columns = split.column_names
    if columns is None:  # streamed data without known features: checked row by row instead
        return
    option_of = {"image": "image_column", "text": "text_column", "text_pair": "text_pair_column",
                 **task_named(config.task).columns}
    for kind, column in _columns(config, text).items():
        if column not in columns:
            option = "target-pairs" if config.data.target_pairs and kind != "image" else option_of[kind]
            raise ValueError(
                f"Column {column!r} (--{option.replace('_', '-')}) is not in the {name!r} split of "
                f"{config.data.dataset}; its columns are {columns}."
            )


def _pair_view(split: Any, prompt: str | None, target: str, pair: str) -> Any:
    """``split``'s examples of one (prompt, target) pair: ``image``, the row number, ``text`` (None without a prompt),
    ``target`` and the pair's name; columns selected and renamed, nothing copied or written to the dataset's cache."""
    part = split.select_columns(list(dict.fromkeys(["image", ROW, *([prompt] if prompt else []), target])))
    part = part.rename_columns({old: new for old, new in ((prompt, "text"), (target, "target")) if old and old != new})
    if isinstance(part, datasets.Dataset):
        if prompt is None:
            part = part.add_column("text", [None] * len(part), feature=datasets.Value("string"))
        return part.add_column(PAIR, [pair] * len(part))
    return part.map(lambda row: {PAIR: pair, **({} if prompt else {"text": None})})


def _prepare(split: Any, config: TrainConfig, limit: int | None, text: bool = True) -> Any:
    """Keep and rename the configured columns (one example per pair of each row with ``--target-pairs``); leave
    images undecoded so a bad file cannot crash the loader."""
    mapping = {column: kind for kind, column in _columns(config, text).items()}
    if limit is not None:
        split = split.take(limit) if isinstance(split, datasets.IterableDataset) else split.select(range(min(limit, len(split))))
    if split.features is not None and isinstance(split.features.get(config.data.image_column), datasets.Image):
        # Cast before renaming: on a streamed dataset (datasets 5) a cast after rename_columns still decodes.
        split = split.cast_column(config.data.image_column, datasets.Image(decode=False))
    if split.column_names is not None:
        split = split.select_columns(list(mapping))
    split = split.rename_columns({k: v for k, v in mapping.items() if k != v})
    if isinstance(split, datasets.Dataset):
        split = split.add_column(ROW, list(range(len(split))))
    else:  # streamed rows are numbered as they are read (every DDP process reads the same stream, so numbers agree)
        features = None if split.features is None else datasets.Features(
            {**split.features, ROW: datasets.Value("int64")})
        split = split.map(lambda row, index: {ROW: index}, with_indices=True, features=features)
    if not config.data.target_pairs:
        return split
    # One example per pair of each row, as views of the rows (a map would write a copy into the dataset's cache
    # folder, where two runs on one dataset race); streamed, the pairs alternate.
    parts = [_pair_view(split, prompt, target, f"{prompt or NO_PROMPT}:{target}")
             for prompt, target in target_pairs(config)]
    if isinstance(split, datasets.Dataset):
        return datasets.concatenate_datasets(parts)
    return datasets.interleave_datasets(parts, stopping_strategy="all_exhausted")


def load_splits(config: TrainConfig) -> tuple[Any, Any, dict[str, Any], Path | None, str]:
    """``(train, eval, extra_eval_splits, base_dir, eval_split_description)`` with canonical columns."""
    data, base_dir = load_source(config)
    available = list(data)
    if config.data.train_split not in data:
        raise ValueError(f"Split {config.data.train_split!r} is not in {config.data.dataset}; its splits are {available}.")
    train = data[config.data.train_split]
    eval_name = config.data.eval_split or next((s for s in EVAL_SPLIT_NAMES if s in data and s != config.data.train_split), None)
    if config.data.eval_split and config.data.eval_split not in data:
        raise ValueError(f"Split {config.data.eval_split!r} (--eval-split) is not in {config.data.dataset}; its splits are {available}.")
    for name in config.data.extra_eval_splits:
        if name not in data:
            raise ValueError(f"Split {name!r} (--extra-eval-splits) is not in {config.data.dataset}; its splits are {available}.")
    text = not _without_default_text(config, train.column_names)
    _check_columns(train, config.data.train_split, config, text)
    if eval_name is not None:
        evaluation = data[eval_name]
    elif isinstance(train, datasets.IterableDataset):
        held = config.data.max_eval_samples or 500  # streamed: the first rows are the eval split
        evaluation, train = train.take(held), train.skip(held)
    else:
        parts = train.train_test_split(test_size=config.data.eval_fraction, seed=config.train.seed)
        train, evaluation = parts["train"], parts["test"]
    _check_columns(evaluation, eval_name or f"{config.data.train_split} (held-out part)", config, text)
    for name in config.data.extra_eval_splits:
        _check_columns(data[name], name, config, text)
    extra = {name: _prepare(data[name], config, config.data.max_eval_samples, text)
             for name in config.data.extra_eval_splits}
    train = _prepare(train, config, config.data.max_train_samples, text)
    evaluation = _prepare(evaluation, config, config.data.max_eval_samples, text)
    described = eval_name or f"{config.data.eval_fraction:g} of {config.data.train_split} (seed {config.train.seed})"
    return train, evaluation, extra, base_dir, described


def infer_labels(train: Any, evaluation: Any, config: TrainConfig) -> LabelInfo:
    """Problem type and label names from the label feature (ClassLabel, str, list, int or float), checked on eval."""
    feature = train.features["label"] if train.features is not None else None
    inner = getattr(feature, "feature", None)  # List / Sequence
    if isinstance(feature, datasets.ClassLabel):
        info = LabelInfo("single_label_classification", list(feature.names))
    elif isinstance(inner, datasets.ClassLabel):
        info = LabelInfo("multi_label_classification", list(inner.names))
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        info = LabelInfo("regression")
    else:
        if config.data.labels is None and isinstance(train, datasets.IterableDataset):
            raise ValueError("Cannot collect label names from a streamed dataset; pass them with --labels.")
        values = list(train["label"]) if config.data.labels is None else []
        is_list = inner is not None or isinstance(next((v for v in values if v is not None), None), list)
        problem = "multi_label_classification" if is_list else "single_label_classification"
        # a missing label is a row to skip (counted as an invalid label), never a class of its own
        flat = [x for v in values for x in (v if isinstance(v, list) else [v]) if _usable_label(x)]
        if flat and all(isinstance(x, (int, bool)) for x in flat):
            names = [str(i) for i in range(max(flat) + 1)]
        else:
            names = sorted({str(x) for x in flat})
        info = LabelInfo(problem, names)
    if config.data.labels is not None:
        info.names = list(config.data.labels)
    if config.data.problem_type is not None:
        info.problem_type = config.data.problem_type
        if config.data.problem_type == "regression":
            info.names = []
    if info.problem_type != "regression" and len(info.names) < 2:
        raise ValueError(f"Classification needs at least 2 labels, found {info.names} in column {config.data.label_column!r}.")
    if isinstance(evaluation, datasets.Dataset) and info.problem_type != "regression":
        feature_names = None if feature is None else getattr(feature, "names", getattr(inner, "names", None))
        if feature_names is None or config.data.labels is not None:
            for row, value in enumerate(evaluation["label"]):  # unknown eval labels fail now, not mid-training
                if _usable_label(value):  # the others are skipped and counted
                    info.encode(value, f"{row} of the eval split")
    return info


def image_size_of(processor: MMHubProcessor) -> int:
    """The square side the processor crops to (ConvNext: ``shortest_edge``; others: ``height``)."""
    size = processor.image_processor.size
    return int(size.get("shortest_edge") or size.get("height"))


def build_augmentation(config: TrainConfig, image_size: int):
    """torchvision v2 training augmentation on PIL images, or None when ``--no-augment``."""
    if not config.data.augment:
        return None
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(image_size, scale=(config.data.crop_scale, 1.0), antialias=True)]
    if config.data.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(config.data.hflip))
    if config.data.color_jitter > 0:
        steps.append(v2.ColorJitter(config.data.color_jitter, config.data.color_jitter, config.data.color_jitter))
    return v2.Compose(steps)


def drop_words(text: str, rate: float) -> str:
    """``text`` with each whitespace-separated word dropped with probability ``rate``; one word is always kept."""
    words = text.split()
    kept = [word for word in words if random.random() >= rate]
    if kept or not words:
        return " ".join(kept)
    return random.choice(words)


class RowTransform:
    """What a row goes through on its way to the collator (the ``with_transform`` function of a split): its image is
    decoded (a failure becomes ``image=None`` plus a reason) and augmented; for retrieval training one of its captions
    is picked at random; words of its text are dropped (``word_dropout``)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        augmentation: Any = None,
        sample_caption: bool = False,
        word_dropout: float = 0.0,
    ):
        self.base_dir = base_dir
        self.augmentation = augmentation
        self.sample_caption = sample_caption
        self.word_dropout = word_dropout

    def _open(self, value: Any) -> Image.Image:
        """One row's image, decoded (with mm_hub's size limits) and in RGB; ValueError / TypeError if it cannot be."""
        return load_rgb_image(image_source(value, self.base_dir))

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images, errors = [], []
        for value in batch["image"]:
            try:
                image = self._open(value)
                images.append(self.augmentation(image) if self.augmentation is not None else image)
                errors.append(None)
            except (ValueError, TypeError) as error:  # load_rgb_image's errors for any unreadable image
                images.append(None)
                errors.append(f"{UNREADABLE_IMAGE} ({type(error).__name__}: {str(error)[:120]})")
        out = dict(batch, image=images, error=errors)
        if self.sample_caption:
            out["text"] = [random.choice(t) if isinstance(t, list) and t else t for t in batch["text"]]
        if self.word_dropout and "text" in out:
            out["text"] = [drop_words(t, self.word_dropout) if isinstance(t, str) else t for t in out["text"]]
        return out


class Collator:
    """Drops rows with unreadable images or empty texts (counting them; ``strict`` raises instead), turns the others
    into model inputs (``task.encode``) and encodes their labels."""

    def __init__(
        self,
        processor: MMHubProcessor,
        task: Task,
        labels: LabelInfo | None,
        strict: bool = False,
        split: str = "train",
        transform: RowTransform | None = None,
    ):
        self.processor = processor
        self.task = task
        self.labels = labels
        self.strict = strict
        self.split = split
        self.transform = transform  # set for streamed data, where `with_transform` is unavailable
        self.skipped: dict[str, set] = {}  # reason -> row numbers

    def reason(self, row: dict[str, Any]) -> str | None:
        """Why a row cannot be used (unreadable image, empty text), or None."""
        if row.get("error"):
            return row["error"]
        prompted = not str(row.get(PAIR, "")).startswith(f"{NO_PROMPT}:")  # a caption pair reads no prompt
        if "text" in row and prompted and cell_texts(row["text"], lists=self.task.caption_lists) is None:
            return EMPTY_TEXT
        if "text_pair" in row and cell_texts(row["text_pair"]) is None:
            return EMPTY_TEXT
        if "target" in row and cell_texts(row["target"]) is None:
            return EMPTY_TARGET
        if self.labels is not None and "label" in row and not _usable_label(row["label"]):
            return INVALID_LABEL
        return None

    def usable(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
        """Decode streamed rows, then split them into usable rows and ``(reason, row number)`` skips (``strict``
        raises on the first bad row instead)."""
        if self.transform is not None:
            batch = self.transform({key: [row.get(key) for row in rows] for key in rows[0]})
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        good, skipped = [], []
        for row in rows:
            reason = self.reason(row)
            if reason is None:
                good.append(row)
                continue
            where = row.get(ROW, "?")
            if self.strict:
                raise ValueError(f"Row {where} of the {self.split} split: {reason} (--strict is set).")
            skipped.append((reason if reason in SKIP_REASONS else UNREADABLE_IMAGE, where))
        return good, skipped

    def record(self, skipped: list[tuple[str, Any]]) -> None:
        """Count the skips a batch carried (``batch[SKIPPED]``). Counting happens here, in the training process,
        because collation may run in DataLoader worker processes whose counters would be lost."""
        for kind, where in skipped:
            self.skipped.setdefault(kind, set()).add(where)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Processor outputs of the usable rows, plus ``SKIPPED``: the rows dropped (the trainer pops, then records
        them)."""
        good, skipped = self.usable(rows)
        if not good:
            reasons = dict(Counter(kind for kind, _ in skipped))
            raise ValueError(
                f"Every row of a {self.split} batch was unusable ({reasons}); the dataset is mostly corrupt - check "
                "the image and text columns."
            )
        return {**self.encode(good), SKIPPED: skipped}

    def encode(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Model inputs (the task's `encode`) and labels for rows that are known to be usable."""
        inputs = self.task.encode(self.processor, rows)
        if self.labels is not None:
            encoded = [self.labels.encode(row["label"], f"{row.get(ROW, '?')} of the {self.split} split") for row in rows]
            dtype = torch.long if self.labels.problem_type == "single_label_classification" else torch.float
            inputs["labels"] = torch.tensor(encoded, dtype=dtype)
        return inputs

    def save_skipped(self, folder: str | os.PathLike, rank: int = 0) -> None:
        """Write the rows this process skipped so far into a checkpoint ``folder`` (one file per DDP process), so a
        resumed run, which does not collate the batches it already trained on, still reports them."""
        write_json(Path(folder) / f"{SKIPPED_FILE_PREFIX}{rank}.json",
                   {kind: sorted(rows, key=str) for kind, rows in self.skipped.items()})

    def restore_skipped(self, folder: str | os.PathLike) -> None:
        """Add the skipped rows saved in a checkpoint ``folder`` (every process's file: `report` takes the union)."""
        for path in sorted(Path(folder).glob(f"{SKIPPED_FILE_PREFIX}*.json")):
            for kind, rows in json.loads(path.read_text()).items():
                self.skipped.setdefault(kind, set()).update(rows)

    def report(self) -> dict[str, int]:
        """Distinct skipped rows by reason (empty when nothing was skipped), over every process of a DDP run (each
        process collates its own shard; every process must call this, as it is a collective there)."""
        skipped: dict[str, set] = {}
        for part in gather_objects(self.skipped):
            for kind, rows in part.items():
                skipped.setdefault(kind, set()).update(rows)
        return {kind: len(rows) for kind, rows in skipped.items()}


def _usable_label(value: Any) -> bool:
    """False for a missing label and for numbers that are NaN, infinite or beyond `MAX_LABEL_MAGNITUDE` (one would
    turn every weight into NaN)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if value is None or any(item is None for item in values):
        return False
    return all(math.isfinite(item) and abs(item) <= MAX_LABEL_MAGNITUDE for item in values
               if isinstance(item, (int, float)))


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every process of a DDP run, in rank order (a collective: every process must call it); ``[value]``
    outside one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, value)
    return parts


def close_process_group() -> None:
    """Leave the process group of a ``torchrun`` run (once per process, after its last collective); a no-op outside
    one. Exiting without it can abort the interpreter's shutdown in gloo's worker threads (SIGABRT, "terminate called
    without an active exception"), turning a finished run into a failed one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def attach_transform(split: Any, transform: RowTransform) -> Any:
    """``with_transform(transform)`` for map-style datasets; streamed datasets transform rows in the collator."""
    if isinstance(split, datasets.IterableDataset):
        return split
    return split.with_transform(transform)
