"""The training recipe's configuration: sections filled from a YAML preset and overridden by CLI flags.

A preset has one key per section (see `SECTIONS`), each a mapping of its fields, plus ``task``::

    task: classification
    data: {dataset: your-name/shapes, image_column: image}
    model: {fusion_type: attention, dropout: 0.1}        # MMHubConfig fields, passed to it as they are
    encoders: {vision_model: microsoft/resnet-18}
    train: {learning_rate: 0.0005, num_train_epochs: 5}
    hub: {push_to_hub: false}

Every field is also a CLI flag named after it (``learning_rate`` -> ``--learning-rate``; names are unique across
sections), and its ``help`` is the flag's ``--help`` text, so the three cannot drift apart. A flat mapping of field
names (what older runs saved) is read too. The resolved config is written beside the model as ``train_config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_hub import FUSION_REGISTRY
from mm_hub._files import write_text
from mm_hub.model.configuration_mm_hub import PROBLEM_TYPES

TASKS = ("classification", "retrieval", "generation")
MIXED_PRECISION = ("no", "fp16", "bf16")
STRATEGIES = ("epoch", "steps", "no")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")


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


@dataclass
class ModelConfig:
    """The architecture: `MMHubConfig` fields, passed to it as they are (``model:`` in a preset)."""

    vision_config: dict | str | None = _opt(
        None, "Train a randomly initialised vision tower from this config (JSON string or .json/.yaml file; "
        "model_type defaults to resnet) instead of --vision-model."
    )
    text_config: dict | str | None = _opt(
        None, "Train a randomly initialised transformer text tower from this config (JSON or file) instead of the "
        "pretrained weights; the tokenizer still comes from --text-model."
    )
    text_encoder_type: str = _opt("transformer", "Text encoder: the pretrained transformer, or a BiLSTM over its "
                                  "tokenizer initialised from its input embeddings.", ("transformer", "lstm"))
    fusion_type: str = _opt("attention", "Fusion strategy (mm_hub.FUSION_REGISTRY).")
    fusion_hidden_size: int = _opt(256, "Width of the fusion module.")
    fusion_num_layers: int = _opt(1, "Attention blocks of the attention/sequence fusions.")
    fusion_num_heads: int = _opt(4, "Attention heads of the fusion blocks.")
    lstm_hidden_size: int = _opt(256, "Hidden size per direction of the BiLSTM text encoder.")
    lstm_num_layers: int = _opt(2, "Stacked layers of the BiLSTM text encoder.")
    projection_dim: int = _opt(256, "Shared embedding size of the retrieval head.")
    dropout: float = _opt(0.1, "Dropout of the fusion module and head.")
    initializer_range: float = _opt(
        0.02, "Std of the normal init of new layers; small models trained from scratch learn cross-modal "
        "interactions much sooner with a larger one (the demo uses 0.1)."
    )
    decoder_hidden_size: int = _opt(256, "Width of the text decoder (generation only).")
    decoder_num_layers: int = _opt(2, "Layers of the text decoder (generation only).")
    decoder_num_heads: int = _opt(4, "Attention heads of the text decoder (generation only).")
    decoder_max_positions: int = _opt(64, "Longest text the decoder reads and writes, prompt included, in tokens.")
    freeze_vision_encoder: bool = _opt(False, "Freeze the vision encoder.")
    freeze_text_encoder: bool = _opt(False, "Freeze the text encoder.")


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
class TrainingConfig:
    """Optimisation, evaluation, checkpoints and search (``train:`` in a preset)."""

    learning_rate: float = _opt(5e-4, "Learning rate of the new layers (projections, fusion, head).")
    encoder_learning_rate: float | None = _opt(
        None, "Learning rate of pretrained encoder weights; default: learning_rate / 10 for pretrained towers, "
        "learning_rate for randomly initialised ones."
    )
    weight_decay: float = _opt(0.01, "AdamW weight decay (not applied to biases and norms).")
    label_smoothing: float = _opt(0.0, "Label smoothing of the single-label cross-entropy.")
    num_train_epochs: float = _opt(3.0, "Epochs to train (ignored when --max-steps is set).")
    max_steps: int = _opt(-1, "Optimizer steps to train; -1: use --num-train-epochs.")
    batch_size: int = _opt(32, "Training batch size per device.")
    eval_batch_size: int = _opt(64, "Evaluation batch size per device.")
    gradient_accumulation_steps: int = _opt(1, "Batches accumulated per optimizer step.")
    warmup_ratio: float = _opt(0.05, "Share of steps with linear learning-rate warm-up.")
    lr_scheduler_type: str = _opt("cosine", "Learning-rate schedule (transformers SchedulerType).")
    mixed_precision: str = _opt("no", "Mixed precision (needs a GPU for fp16).", MIXED_PRECISION)
    optim: str = _opt(
        "adamw_torch_fused", "AdamW's implementation: torch's fused kernel (transformers' default, and the faster: "
        "`python -m benchmarks.speed`), or the for-each one.", OPTIMIZERS
    )
    seed: int = _opt(42, "Seed of model init, data order, splits and augmentation.")
    torch_threads: int | None = _opt(
        None, "CPU threads torch uses (default: torch's choice); 1 is fastest on a CPU shared with other jobs."
    )
    cache_frozen_features: bool = _opt(
        False, "With both encoders frozen: run them once over the training split, then train the fusion and head on "
        "their stored outputs instead of decoding, processing and encoding every batch again each epoch. Takes memory "
        "for every row's image and text tokens. Needs frozen encoders, no augmentation or word dropout, a map-style "
        "classification dataset and no search."
    )
    output_dir: str = _opt("outputs/mm_hub", "Folder of checkpoints and the final model.")
    eval_strategy: str = _opt("epoch", "When to evaluate and checkpoint.", STRATEGIES)
    eval_steps: int = _opt(500, "Steps between evaluations with --eval-strategy steps.")
    save_total_limit: int = _opt(2, "Checkpoints kept.")
    metric_for_best_model: str | None = _opt(
        None, "Metric that picks the best checkpoint and drives early stopping; default accuracy / micro_f1 / mse / "
        "text_to_image_recall@1 by task."
    )
    early_stopping_patience: int | None = _opt(None, "Stop after this many evaluations without improvement.")
    logging_steps: int = _opt(10, "Steps between loss logs.")
    dataloader_num_workers: int = _opt(0, "DataLoader worker processes that decode and collate batches.")
    resume_from_checkpoint: str | None = _opt(
        None, "Resume from a checkpoint folder, or 'latest' for the newest one in --output-dir."
    )
    progress: bool = _opt(True, "Show progress bars.")
    report_to: str = _opt("none", "Experiment trackers (transformers report_to), e.g. tensorboard.")
    generation_max_new_tokens: int = _opt(32, "Tokens the model may write per row when evaluating generation.")
    generation_num_beams: int = _opt(1, "Beams of the search when evaluating generation (1: greedy).")
    hpo_trials: int = _opt(0, "Run an optuna search of N trials (learning rate, fusion, freezing, dropout), then "
                           "retrain the best configuration.")
    hpo_fusion_types: list[str] = _opt(list(FUSION_REGISTRY), "Fusion types the search tries (default: all).")


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
        "What to train: an (image, text) classifier, an image-text dual encoder, or a text generator (captions, answers).",
        TASKS,
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
        """A copy with fields changed by name, whatever their section (``replace(learning_rate=1e-3)``); the optional
        columns take ``"none"`` for None."""
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
        for section, name in (("", "task"), ("data", "problem_type"), ("train", "mixed_precision"),
                              ("train", "optim"), ("train", "eval_strategy"), ("model", "text_encoder_type")):
            owner = getattr(self, section) if section else self
            choices = type(owner).__dataclass_fields__[name].metadata["choices"]
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
                ("--hpo-trials 0", train.hpo_trials == 0),
            ) if not ok]
            if unmet:
                raise ValueError("--cache-frozen-features stores each training row's encoder outputs once, so the "
                                 f"encoders and rows must not change between epochs; it needs {', '.join(unmet)}.")
        if self.task != "generation" and data.text_column is None:
            raise ValueError(f"--task {self.task} needs a --text-column; only generation may go without one.")
        if train.generation_max_new_tokens < 1 or train.generation_num_beams < 1:
            raise ValueError("--generation-max-new-tokens and --generation-num-beams must be at least 1.")
        if train.early_stopping_patience is not None and train.eval_strategy == "no":
            raise ValueError("--early-stopping-patience needs evaluations: set --eval-strategy epoch or steps.")

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically)."""
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    """Field name -> value from a nested, flat or mixed mapping; ValueError for a section that is not a mapping."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"Section {key!r} must be a mapping of its options, got {type(value).__name__}.")
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(SECTIONS[key])})
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


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """The non-None type of an annotation like ``int | None`` and whether it is a list."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # noqa: S307 - our own annotations only
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if any(typing.get_origin(a) is dict or a is dict for a in args):
            return str, False
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _add_flag(group: Any, f: dataclasses.Field) -> None:
    """One CLI flag for a config field (its default is "not given", so presets are only overridden when set)."""
    kind, is_list = _base_type(f.type)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"{f.metadata['help']} (default: {default})"}
    if f.metadata.get("choices"):
        kwargs["choices"] = f.metadata["choices"]
    flag = "--" + f.name.replace("_", "-")
    if kind is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif f.name == "resume_from_checkpoint":
        group.add_argument(flag, nargs="?", const="latest", **kwargs)
    else:
        group.add_argument(flag, type=kind, nargs="*" if is_list else None, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``--config PRESET.yaml`` plus one flag per config field, grouped by section."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Fine-tune an mm_hub image+text model on a Hub or local dataset with the transformers Trainer. "
        "Values come from the defaults, then the --config YAML preset, then these flags.",
    )
    parser.add_argument("--config", help="YAML preset (training/configs/*.yaml); flags override its values.")
    _add_flag(parser, TrainConfig.__dataclass_fields__["task"])
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section}", (cls.__doc__ or "").splitlines()[0])
        for f in dataclasses.fields(cls):
            _add_flag(group, f)
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
