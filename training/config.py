"""The training recipe's configuration: sections filled from a YAML preset and overridden by CLI flags.

A preset has one key per section (see `SECTIONS`), each a mapping of its fields, plus ``task``::

    task: classification
    data: {dataset: your-name/shapes, image_column: image}
    model: {fusion_type: concat, dropout: 0.1}           # MMHubConfig fields, passed to it as they are
    encoders: {vision_model: microsoft/resnet-18}
    train: {learning_rate: 0.0005, num_train_epochs: 5}  # TrainingArguments fields, passed to it as they are
    hub: {push_to_hub: false}

Two sections are derived, not copied: ``model`` holds `MMHubConfig`'s fields with its defaults and its docstring's
words (`MODEL_SET_BY_BUILDER` are filled from the tokenizer and the data instead), ``train`` holds
`transformers.TrainingArguments`' fields with their help (`RECIPE_SETS` follow from others; `TRAINING_DEFAULTS`
lists where mm_hub's defaults differ) plus mm_hub's own options (`TrainingOptions`). The names of earlier versions
(`ALIASES`: ``batch_size``, ``mixed_precision``, ...) are still read, in presets and as flags.

Every field is also a CLI flag named after it (``learning_rate`` -> ``--learning-rate``; names are unique across
sections), its ``help`` the flag's ``--help`` text. A flat mapping of field names (what older runs saved) is read too.
The resolved config is written beside the model as ``train_config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from mm_hub import FUSION_REGISTRY, MMHubConfig
from mm_hub._files import write_text
from mm_hub.model.configuration_mm_hub import PROBLEM_TYPES, TEXT_ENCODER_TYPES
from mm_hub.tasks import TASKS, task_named



def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field whose metadata carries its CLI help (and choices)."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"help": help, "choices": choices}, **kwargs)


@dataclass
class DataConfig:
    """Where the rows come from and how they become model inputs (``data:`` in a preset)."""

    dataset: str | None = _opt(
        None,
        "Hub dataset id, local folder (imagefolder with metadata, parquet, csv/jsonl, save_to_disk output), a "
        "csv/jsonl/parquet file, or 'shapes' for the built-in shapes dataset.",
    )
    dataset_config: str | None = _opt(
        None, "Dataset configuration name (load_dataset's `name`); for 'shapes': key=value,... sizes, e.g. num_train=500."
    )
    train_split: str = _opt("train", "Split to train on.")
    eval_split: str | None = _opt(
        None, "Split to evaluate on; default: validation/eval/valid/test if present, else split off from train."
    )
    eval_fraction: float = _opt(0.1, "Share of the train split held out for evaluation when there is no eval split.")
    extra_eval_splits: list[str] = _opt([], "More splits evaluated at the end, reported with the split name as prefix.")
    streaming: bool = _opt(False, "Stream the dataset instead of downloading it (needs --max-steps).")
    max_train_samples: int | None = _opt(None, "Use only the first N training rows.")
    max_eval_samples: int | None = _opt(None, "Use only the first N rows of each evaluation split.")
    image_column: str = _opt("image", "Column holding the image (an Image feature, or a path / URL string).")
    text_column: str | None = _opt(
        "text", "Column holding the text (for retrieval: a caption or a list of captions; for generation: the prompt, "
        "e.g. a question, or 'none' to write captions without one)."
    )
    target_column: str = _opt("caption", "Column holding the text to write (generation only).")
    target_pairs: list[str] | None = _opt(
        None, "Generation: train one model on several (prompt, target) column pairs of each row, as PROMPT:TARGET with "
        "PROMPT 'none' for no prompt (a caption), e.g. none:caption question:answer. Each row gives one example per "
        "pair; evaluation scores all of them and each pair (metrics prefixed by its target column). Replaces "
        "--text-column and --target-column."
    )
    text_pair_column: str | None = _opt(None, "Optional second text column, encoded as a pair with the first.")
    label_column: str = _opt("label", "Column holding the label (classification only).")
    labels: list[str] | None = _opt(None, "Label names in id order; default: read from the dataset.")
    problem_type: str | None = _opt(
        None, "Override the inferred problem type (ClassLabel/str -> single-label, list -> multi-label, float -> "
        "regression).", PROBLEM_TYPES
    )
    strict: bool = _opt(False, "Fail on the first unreadable image or empty text instead of skipping and counting it.")
    augment: bool = _opt(True, "Random resized crop, flip and colour jitter on training images.")
    crop_scale: float = _opt(0.8, "Smallest area share kept by the random resized crop.")
    hflip: float = _opt(0.5, "Probability of a horizontal flip (0 for data where left/right matters).")
    color_jitter: float = _opt(0.2, "Strength of brightness/contrast/saturation jitter (0: off).")
    word_dropout: float = _opt(
        0.0, "Drop each word of a training text with this probability (at least one word is kept), so the text "
        "encoder relies less on each word's neighbours. Independent of --augment; keep 0 where one word can flip "
        "the label."
    )


def _documented_args(cls: type) -> dict[str, str]:
    """Each argument's description in the ``Args:`` section of a Google/transformers-style class docstring, as one
    line (the words `MMHubConfig` documents its fields with)."""
    described: dict[str, str] = {}
    names: list[str] = []
    for line in (cls.__doc__ or "").split("Args:", 1)[-1].split("Example:", 1)[0].splitlines():
        entry = re.match(r"^\s{8}(\w+(?:, \w+)*) \(", line)
        if entry:
            names = entry.group(1).split(", ")
        elif names and line.strip():
            for name in names:
                described[name] = f"{described.get(name, '')} {line.strip()}".strip()
    return described


# MMHubConfig fields the builder fills from the tokenizer, the pretrained text model and the data, not flags.
MODEL_SET_BY_BUILDER = ("vocab_size", "pad_token_id", "lstm_embedding_size", "ensemble_size", "decoder_vocab",
                        "decoder_vocab_size", "bos_token_id", "eos_token_id", "decoder_start_token_id")
# Where the recipe reads a model field its own way: a new tower from a config, instead of the pretrained one.
MODEL_TOWER_HELP = {
    "vision_config": "Train a randomly initialised vision tower from this config (JSON string or .json/.yaml file; "
                     "model_type defaults to resnet) instead of --vision-model.",
    "text_config": "Train a randomly initialised transformer text tower from this config (JSON or file) instead of "
                   "the pretrained weights; the tokenizer still comes from --text-model.",
}
MODEL_CHOICES = {"text_encoder_type": TEXT_ENCODER_TYPES}


def _model_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """The ``model:`` section: `MMHubConfig`'s own fields, its defaults and descriptions, less `MODEL_SET_BY_BUILDER`."""
    described, defaults = _documented_args(MMHubConfig), MMHubConfig.__dataclass_fields__
    fields = []
    for name, annotation in MMHubConfig.__annotations__.items():
        if name in MODEL_SET_BY_BUILDER:
            continue
        if name in MODEL_TOWER_HELP:
            fields.append((name, dict | str | None, _opt(None, MODEL_TOWER_HELP[name])))
        else:
            fields.append((name, annotation, _opt(defaults[name].default, described.get(name, name),
                                                  MODEL_CHOICES.get(name))))
    return fields


ModelConfig = dataclasses.make_dataclass("ModelConfig", _model_fields())
ModelConfig.__doc__ = "The architecture: `MMHubConfig` fields, passed to it as they are (``model:`` in a preset)."


@dataclass
class EncoderConfig:
    """Where the pretrained parts come from: towers, tokenizer, image size (``encoders:``)."""

    vision_model: str | None = _opt("microsoft/resnet-18", "Pretrained vision encoder (Hub id or folder).")
    text_model: str | None = _opt(
        None, "Pretrained text model and tokenizer (Hub id or folder); default: all-MiniLM-L6-v2 (offline copy)."
    )
    image_size: int = _opt(224, "Image side used when --vision-config is given (the processor's resize/crop size).")
    max_length: int = _opt(64, "Longest tokenised text; longer texts are truncated.")
    init_encoders_from: str | None = _opt(
        None, "Saved mm_hub model folder whose vision and text encoder weights initialise this model's (e.g. a "
        "retrieval model trained on the same data: aligned towers make the fusion learn much sooner). Unfrozen, "
        "both encoders then train at --encoder-learning-rate."
    )
    freeze_text_embeddings: bool = _opt(
        False, "Freeze only the text side's token embedding table (the pretrained one the BiLSTM starts from)."
    )
    decoder_vocab: str = _opt(
        "all", "Tokens a generator may write: the tokenizer's whole vocabulary, or those of the training targets "
        "(much cheaper steps; it never writes a word its training targets lack).", ("all", "targets")
    )


@dataclass
class TrainingOptions:
    """mm_hub's own training options, beside `TrainingArguments`' in the ``train:`` section."""

    encoder_learning_rate: float | None = _opt(
        None, "Learning rate of pretrained encoder weights; default: learning_rate / 10 for pretrained towers, "
        "learning_rate for randomly initialised ones."
    )
    torch_threads: int | None = _opt(
        None, "CPU threads torch uses (default: torch's choice); 1 is fastest on a CPU shared with other jobs."
    )
    cache_frozen_features: bool = _opt(
        False, "With both encoders frozen: run them once over the training split, then train the fusion and head on "
        "their stored outputs instead of decoding, processing and encoding every batch again each epoch. Takes memory "
        "for every row's image and text tokens. Needs frozen encoders, no augmentation or word dropout, a map-style "
        "classification dataset and no search."
    )
    early_stopping_patience: int | None = _opt(None, "Stop after this many evaluations without improvement.")
    generation_max_new_tokens: int = _opt(32, "Tokens the model may write per row when evaluating generation.")
    generation_num_beams: int = _opt(1, "Beams of the search when evaluating generation (1: greedy).")
    lora: bool = _opt(
        False, "Train LoRA adapters (peft) on the pretrained towers' attention projections (BERT, ViT) or a ResNet's "
        "last stage, with the projections, fusion and head (a generator's decoder, a tower built from --vision-config "
        "/ --text-config too) training fully and the rest frozen: gradients and optimizer state shrink with the "
        "trained parameters. Saved as an adapter (adapter_config.json + adapter_model.safetensors: what trained) that "
        "loads on top of the towers named by --vision-model / --text-model."
    )
    merge_lora: bool = _opt(False, "With --lora: save the adapters merged into a plain mm_hub model (full size, no peft "
                            "needed to load it) instead of as an adapter.")
    lora_r: int = _opt(8, "Rank of the LoRA adapters (--lora).")
    lora_alpha: int = _opt(16, "LoRA scaling numerator: adapters are scaled by lora_alpha / lora_r (--lora).")
    lora_dropout: float = _opt(0.05, "Dropout on the LoRA adapters' input (--lora).")
    hpo_trials: int = _opt(0, "Run an optuna search of N trials (learning rate, fusion, freezing, dropout), then "
                           "retrain the best configuration.")
    hpo_fusion_types: list[str] = _opt(list(FUSION_REGISTRY), "Fusion types the search tries (default: all).")


# Where mm_hub's defaults differ from `TrainingArguments`' (every other field keeps transformers' default).
TRAINING_DEFAULTS = {
    "output_dir": "outputs/mm_hub", "learning_rate": 5e-4, "weight_decay": 0.01, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "eval_strategy": "epoch",
    "eval_steps": 500, "save_total_limit": 2, "logging_steps": 10, "disable_tqdm": False, "report_to": "none",
}
# `TrainingArguments` fields the recipe sets (see `training.train.training_arguments`), not options: checkpoints
# follow evaluation (the best one is kept and loaded at the end), the data order follows the seed, the DataLoader
# keeps the raw image and text columns, the CPU is used where no accelerator is, and the push is mm_hub's own (the
# ``hub:`` section: safetensors only, a generated card).
RECIPE_SETS = ("save_strategy", "save_steps", "load_best_model_at_end", "greater_is_better", "data_seed",
               "remove_unused_columns", "use_cpu", "dataloader_pin_memory", "accelerator_config", "push_to_hub",
               "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision",
               "do_train", "do_eval", "do_predict", "local_rank")
# Names of earlier versions, still read in presets and as flags: name -> the field it sets.
ALIASES = {"batch_size": "per_device_train_batch_size", "eval_batch_size": "per_device_eval_batch_size",
           "label_smoothing": "label_smoothing_factor", "warmup_ratio": "warmup_steps"}
# ... and the two that set a field to a value of another kind.
MIXED_PRECISION = ("no", "fp16", "bf16")
VALUE_ALIASES = {
    "mixed_precision": lambda value: {"fp16": value == "fp16", "bf16": value == "bf16"},
    "progress": lambda value: {"disable_tqdm": not value},
}
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # mm_hub's optimizer (encoder and new-layer groups) is AdamW


def _plain(value: Any) -> Any:
    """A default as YAML holds it (enums by their value)."""
    return value.value if isinstance(value, enum.Enum) else value


def _training_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """The ``train:`` section: `TrainingArguments`' fields (their help, mm_hub's `TRAINING_DEFAULTS`) less
    `RECIPE_SETS`, then `TrainingOptions`."""
    hints = typing.get_type_hints(TrainingArguments)
    fields = []
    for f in dataclasses.fields(TrainingArguments):
        if not f.init or f.name in RECIPE_SETS:
            continue
        default = TRAINING_DEFAULTS.get(f.name, f.default)
        if default is dataclasses.MISSING:
            default = f.default_factory()
        fields.append((f.name, hints[f.name], _opt(_plain(default), f.metadata.get("help") or f.name,
                                                   f.metadata.get("choices"))))
    return fields + [(f.name, f.type, f) for f in dataclasses.fields(TrainingOptions)]


TrainingConfig = dataclasses.make_dataclass("TrainingConfig", _training_fields())
# The ``train:`` fields that are `TrainingArguments`' own (passed to it as they are).
TRAINING_ARGUMENTS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in
                           TrainingOptions.__dataclass_fields__)
TrainingConfig.__doc__ = ("Optimisation, evaluation, checkpoints and search (``train:`` in a preset): "
                          "`TrainingArguments` fields, passed to it as they are, and mm_hub's options.")


@dataclass
class HubConfig:
    """Pushing the final model (``hub:`` in a preset)."""

    push_to_hub: bool = _opt(False, "Push the final model, processor, remote code and card (needs --hub-model-id).")
    hub_model_id: str | None = _opt(None, "Hub repo to push to, as ORG/NAME.")
    hub_private: bool = _opt(False, "Create the Hub repo as private.")
    hub_revision: str | None = _opt(None, "Branch to push to (created when missing).")


SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "encoders": EncoderConfig, "train": TrainingConfig, "hub": HubConfig,
}
# Which section each field lives in (field names are unique across sections).
FIELD_SECTION = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


@dataclass
class TrainConfig:
    """Everything one training run needs: the task and one dataclass per section. Build it with `from_dict` (nested
    or flat mappings) or `resolve_config` (preset + flags); change fields by name with `replace`."""

    task: str = _opt(
        "classification",
        "What to train, by the name of its task (mm_hub.tasks.TASKS): an (image, text) classifier, an image-text dual "
        "encoder, or a text generator (captions, answers).",
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a nested mapping (``{"task": ..., "data": {...}, ...}``), a flat one (field names), or a
        mix; raises ValueError naming unknown sections or keys and listing the valid ones."""
        return cls().replace(**_flatten(values))

    def replace(self, **values: Any) -> TrainConfig:
        """A copy with fields changed by name, whatever their section (``replace(learning_rate=1e-3)``), earlier
        names included (`ALIASES`, `VALUE_ALIASES`); the optional columns take ``"none"`` for None."""
        values = _canonical(values)
        for name in ("text_column", "text_pair_column"):
            if isinstance(values.get(name), str) and values[name].lower() in ("none", ""):
                values[name] = None
        unknown = sorted(set(values) - set(FIELD_SECTION) - {"task"})
        if unknown:
            close = [match for key in unknown for match in difflib.get_close_matches(key, FIELD_SECTION, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"Unknown keys {unknown}{hint}; valid keys are 'task', the sections {list(SECTIONS)} and "
                             "their fields (`python -m training.train --help` lists them).")
        parts = {section: {k: v for k, v in values.items() if FIELD_SECTION.get(k) == section} for section in SECTIONS}
        changed = {section: dataclasses.replace(getattr(self, section), **parts[section]) for section in SECTIONS}
        return dataclasses.replace(self, task=values.get("task", self.task), **changed)

    def to_dict(self) -> dict[str, Any]:
        """The nested mapping ``train_config.yaml`` holds (``--config`` reads it back)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every field by name, whatever its section (``{"learning_rate": ..., "fusion_type": ..., ...}``)."""
        return {"task": self.task, **{k: v for section in SECTIONS for k, v in dataclasses.asdict(getattr(self, section)).items()}}

    def model_kwargs(self) -> dict[str, Any]:
        """The ``model:`` section as `MMHubConfig` keyword arguments (its dict-or-file sub-configs read)."""
        kwargs = dataclasses.asdict(self.model)
        for name in ("vision_config", "text_config"):
            kwargs[name] = load_json_or_file(kwargs[name], name)
        return kwargs

    def validate(self) -> None:
        """Check values argparse cannot (cross-field rules); raise ValueError naming the fix."""
        data, model, train = self.data, self.model, self.train
        if not data.dataset:
            raise ValueError("No dataset given: pass --dataset (a Hub id, a local folder/file, or 'shapes').")
        task = task_named(self.task)
        for owner, name, choices in ((data, "problem_type", PROBLEM_TYPES), (train, "optim", OPTIMIZERS),
                                     (model, "text_encoder_type", TEXT_ENCODER_TYPES)):
            value = getattr(owner, name)
            if value is not None and value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {list(choices)}.")
        if data.streaming and train.max_steps <= 0:
            raise ValueError("--streaming needs --max-steps (a streamed dataset has no known length).")
        if self.hub.push_to_hub and not self.hub.hub_model_id:
            raise ValueError("--push-to-hub needs --hub-model-id ORG/NAME.")
        if model.vision_config is None and not self.encoders.vision_model:
            raise ValueError("Give --vision-model (pretrained) or --vision-config (random init).")
        if not 0.0 < data.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {data.eval_fraction}.")
        if not 0.0 <= data.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {data.word_dropout}.")
        if train.cache_frozen_features:
            unmet = [need for need, ok in (
                ("--freeze-vision-encoder", model.freeze_vision_encoder),
                ("--freeze-text-encoder", model.freeze_text_encoder),
                ("--no-augment", not data.augment), ("--word-dropout 0", data.word_dropout == 0),
                ("--task classification", self.task == "classification"), ("no --streaming", not data.streaming),
                ("--hpo-trials 0", train.hpo_trials == 0), ("no --lora", not train.lora),
            ) if not ok]
            if unmet:
                raise ValueError("--cache-frozen-features stores each training row's encoder outputs once, so the "
                                 f"encoders and rows must not change between epochs; it needs {', '.join(unmet)}.")
        if train.merge_lora and not train.lora:
            raise ValueError("--merge-lora merges LoRA adapters into the saved model; it needs --lora.")
        if data.target_pairs and "target" not in task.columns:
            raise ValueError(f"--target-pairs trains a model that writes text; the {self.task} task does not.")
        for spec in data.target_pairs or []:
            prompt, colon, target = spec.partition(":")
            if not colon or not prompt or not target:
                raise ValueError(f"--target-pairs takes PROMPT:TARGET pairs (PROMPT 'none' for a caption), got {spec!r}.")
        if task.text_required and data.text_column is None:
            raise ValueError(f"--task {self.task} needs a --text-column; only tasks that write text may go without "
                             "one.")
        if train.generation_max_new_tokens < 1 or train.generation_num_beams < 1:
            raise ValueError("--generation-max-new-tokens and --generation-num-beams must be at least 1.")
        if train.early_stopping_patience is not None and train.eval_strategy == "no":
            raise ValueError("--early-stopping-patience needs evaluations: set --eval-strategy epoch or steps.")

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically)."""
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _canonical(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the names of earlier versions (`ALIASES`, `VALUE_ALIASES`) turned into the fields they set."""
    canonical: dict[str, Any] = {}
    for name, value in values.items():
        if name == "mixed_precision" and value not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={value!r} is not one of {list(MIXED_PRECISION)}.")
        canonical.update(VALUE_ALIASES[name](value) if name in VALUE_ALIASES else {ALIASES.get(name, name): value})
    return canonical


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    """Field name -> value from a nested, flat or mixed mapping; ValueError for a section that is not a mapping."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"Section {key!r} must be a mapping of its options, got {type(value).__name__}.")
            unknown = sorted(set(_canonical(value)) - {f.name for f in dataclasses.fields(SECTIONS[key])})
            if unknown:
                raise ValueError(f"Unknown keys {unknown} in section {key!r}; valid keys: "
                                 f"{sorted(f.name for f in dataclasses.fields(SECTIONS[key]))}.")
            flat.update(value)
        else:
            flat[key] = value
    return flat


def load_json_or_file(value: dict | str | None, name: str) -> dict | None:
    """A dict option given as a dict, a JSON string, or a .json/.yaml file path."""
    if value is None or isinstance(value, dict):
        return value
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--{name.replace('_', '-')} is not valid JSON: {error}") from error
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"--{name.replace('_', '-')} must be a JSON object or a .json/.yaml file, got {value!r}.")
    loaded = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(loaded).__name__}.")
    return loaded


def _flag_type(annotation: Any) -> tuple[Any, bool, tuple[str, ...] | None]:
    """``(argparse type, takes a list, choices)`` of a field's annotation: ``bool`` for switches, the one number type
    of ``int | None``, the members of an enum or ``Literal``, ``str`` for anything a string can be (paths, JSON,
    unions with ``str``)."""
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    if len(args) == 1 and typing.get_origin(args[0]) is list:
        inner = (typing.get_args(args[0]) or (str,))[0]
        return inner if inner in (int, float) else str, True, None
    if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        return str, False, tuple(str(value) for value in typing.get_args(args[0]))
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums:
        return str, False, tuple(member.value for member in enums[0])
    if len(args) == 1 and args[0] in (bool, int, float):
        return args[0], False, None
    return str, False, None


def _add_flag(group: Any, f: dataclasses.Field, hints: dict[str, Any], choices: tuple[str, ...] | None = None) -> None:
    """One CLI flag for a config field, plus the earlier names of `ALIASES` (its default is "not given", so presets
    are only overridden when set)."""
    kind, is_list, own_choices = _flag_type(hints[f.name])
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    help_text = " ".join(f.metadata["help"].split()).replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"{help_text} (default: {default})"}
    if choices or f.metadata.get("choices") or own_choices:
        kwargs["choices"] = choices or f.metadata.get("choices") or own_choices
    flags = ["--" + name.replace("_", "-") for name in (f.name, *(old for old, new in ALIASES.items() if new == f.name))]
    if kind is bool:
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
    elif f.name == "resume_from_checkpoint":
        group.add_argument(*flags, nargs="?", const="latest", **kwargs)
    else:
        group.add_argument(*flags, type=kind, nargs="*" if is_list else None, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``--config PRESET.yaml`` plus one flag per config field, grouped by section."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Fine-tune an mm_hub image+text model on a Hub or local dataset with the transformers Trainer. "
        "Values come from the defaults, then the --config YAML preset, then these flags.",
    )
    parser.add_argument("--config", help="YAML preset (training/configs/*.yaml); flags override its values.")
    _add_flag(parser, TrainConfig.__dataclass_fields__["task"], {"task": str}, choices=tuple(TASKS))
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section}", (cls.__doc__ or "").splitlines()[0])
        hints = typing.get_type_hints(cls) if cls is not TrainingConfig else {
            **typing.get_type_hints(TrainingArguments), **typing.get_type_hints(TrainingOptions)}
        for f in dataclasses.fields(cls):
            _add_flag(group, f, hints)
        if section == "train":  # earlier names that set a field to a value of another kind (`VALUE_ALIASES`)
            group.add_argument("--mixed-precision", dest="mixed_precision", choices=MIXED_PRECISION, default=None,
                               help="Mixed precision: sets --fp16 or --bf16 (needs a GPU for fp16).")
            group.add_argument("--progress", dest="progress", action=argparse.BooleanOptionalAction, default=None,
                               help="Show progress bars (--no-progress: --disable-tqdm).")
    return parser


PRESETS = Path(__file__).parent / "configs"


def find_preset(name: str) -> Path:
    """A preset path as given, else relative to the installed package (``training/configs/x.yaml`` works from any
    folder), else a preset name (``demo_classifier``); a ValueError lists the presets otherwise."""
    candidates = [Path(name), PRESETS.parent.parent / name, PRESETS / name, PRESETS / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    raise ValueError(f"--config {name!r} is neither a file nor a preset; presets: {available}.")


def read_preset(name: str | os.PathLike) -> TrainConfig:
    """The `TrainConfig` of a preset file or name (see `find_preset`), not yet validated."""
    path = find_preset(str(name))
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of options, got {type(values).__name__}.")
    return TrainConfig.from_dict(values)


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < YAML preset (``--config``) < CLI flags -> a validated `TrainConfig`."""
    args = build_parser().parse_args(argv)
    config = read_preset(args.config) if args.config else TrainConfig()
    config = config.replace(**{k: v for k, v in vars(args).items() if k != "config" and v is not None})
    config.validate()
    return config
