"""The training recipe's configuration: one dataclass, filled from a YAML preset and overridden by CLI flags.

Every field is a CLI flag (``learning_rate`` -> ``--learning-rate``) and a YAML key, and its ``help`` is the flag's
``--help`` text, so the three cannot drift apart. The resolved config is written as ``train_config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_hub.fusion_mm_hub import FUSION_REGISTRY

TASKS = ("classification", "retrieval")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
MIXED_PRECISION = ("no", "fp16", "bf16")
STRATEGIES = ("epoch", "steps", "no")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field whose metadata carries its CLI help (and choices)."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"help": help, "choices": choices}, **kwargs)


@dataclass
class TrainConfig:
    """Everything one training run needs. Field docs are the ``help`` metadata (shown by ``--help``)."""

    # Task and data
    task: str = _opt("classification", "What to train: an (image, text) classifier or an image-text dual encoder.", TASKS)
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
    text_column: str = _opt("text", "Column holding the text (for retrieval: a caption or a list of captions).")
    text_pair_column: str | None = _opt(None, "Optional second text column, encoded as a pair with the first.")
    label_column: str = _opt("label", "Column holding the label (classification only).")
    labels: list[str] | None = _opt(None, "Label names in id order; default: read from the dataset.")
    problem_type: str | None = _opt(
        None, "Override the inferred problem type (ClassLabel/str -> single-label, list -> multi-label, float -> "
        "regression).", PROBLEM_TYPES
    )
    strict: bool = _opt(False, "Fail on the first unreadable image or empty text instead of skipping and counting it.")
    # Model
    vision_model: str | None = _opt("microsoft/resnet-18", "Pretrained vision encoder (Hub id or folder).")
    vision_config: dict | str | None = _opt(
        None, "Train a randomly initialised vision tower from this config (JSON string or .json/.yaml file; "
        "model_type defaults to resnet) instead of --vision-model."
    )
    image_size: int = _opt(224, "Image side used when --vision-config is given (the processor's resize/crop size).")
    text_model: str | None = _opt(
        None, "Pretrained text model and tokenizer (Hub id or folder); default: all-MiniLM-L6-v2 (offline copy)."
    )
    text_encoder_type: str = _opt("transformer", "Text encoder: the pretrained transformer, or a BiLSTM over its "
                                  "tokenizer initialised from its input embeddings.", ("transformer", "lstm"))
    text_config: dict | str | None = _opt(
        None, "Train a randomly initialised transformer text tower from this config (JSON or file) instead of the "
        "pretrained weights; the tokenizer still comes from --text-model."
    )
    max_length: int = _opt(64, "Longest tokenised text; longer texts are truncated.")
    init_encoders_from: str | None = _opt(
        None, "Saved mm_hub model folder whose vision and text encoder weights initialise this model's (e.g. a "
        "retrieval model trained on the same data: aligned towers make the fusion learn much sooner). Unfrozen, "
        "both encoders then train at --encoder-learning-rate."
    )
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
    freeze_vision_encoder: bool = _opt(False, "Freeze the vision encoder.")
    freeze_text_encoder: bool = _opt(False, "Freeze the text encoder.")
    freeze_text_embeddings: bool = _opt(
        False, "Freeze only the text side's token embedding table (the pretrained one the BiLSTM starts from)."
    )
    cache_frozen_features: bool = _opt(
        False, "With both encoders frozen: run them once over the training split, then train the fusion and head on "
        "their stored outputs instead of decoding, processing and encoding every batch again each epoch. Takes memory "
        "for every row's image and text tokens. Needs frozen encoders, no augmentation or word dropout, a map-style "
        "classification dataset and no search."
    )
    # Optimisation
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
    seed: int = _opt(42, "Seed of model init, data order, splits and augmentation.")
    torch_threads: int | None = _opt(
        None, "CPU threads torch uses (default: torch's choice); 1 is fastest on a CPU shared with other jobs."
    )
    # Augmentation (training split only)
    augment: bool = _opt(True, "Random resized crop, flip and colour jitter on training images.")
    crop_scale: float = _opt(0.8, "Smallest area share kept by the random resized crop.")
    hflip: float = _opt(0.5, "Probability of a horizontal flip (0 for data where left/right matters).")
    color_jitter: float = _opt(0.2, "Strength of brightness/contrast/saturation jitter (0: off).")
    word_dropout: float = _opt(
        0.0, "Drop each word of a training text with this probability (at least one word is kept), so the text "
        "encoder relies less on each word's neighbours. Independent of --augment; keep 0 where one word can flip "
        "the label."
    )
    # Evaluation, checkpoints, logging
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
    # Search and push
    hpo_trials: int = _opt(0, "Run an optuna search of N trials (learning rate, fusion, freezing, dropout), then "
                           "retrain the best configuration.")
    hpo_fusion_types: list[str] = _opt(list(FUSION_REGISTRY), "Fusion types the search tries (default: all).")
    push_to_hub: bool = _opt(False, "Push the final model, processor, remote code and card (needs --hub-model-id).")
    hub_model_id: str | None = _opt(None, "Hub repo to push to, as ORG/NAME.")
    hub_private: bool = _opt(False, "Create the Hub repo as private.")
    hub_revision: str | None = _opt(None, "Branch to push to (created when missing).")

    def validate(self) -> None:
        """Check values argparse cannot (cross-field rules); raise ValueError naming the fix."""
        if not self.dataset:
            raise ValueError("No dataset given: pass --dataset (a Hub id, a local folder/file, or 'shapes').")
        for name in ("task", "problem_type", "mixed_precision", "eval_strategy", "text_encoder_type"):
            choices = TrainConfig.__dataclass_fields__[name].metadata["choices"]
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {list(choices)}.")
        if self.streaming and self.max_steps <= 0:
            raise ValueError("--streaming needs --max-steps (a streamed dataset has no known length).")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push-to-hub needs --hub-model-id ORG/NAME.")
        if self.vision_config is None and not self.vision_model:
            raise ValueError("Give --vision-model (pretrained) or --vision-config (random init).")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}.")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}.")
        if self.cache_frozen_features:
            unmet = [need for need, ok in (
                ("--freeze-vision-encoder", self.freeze_vision_encoder),
                ("--freeze-text-encoder", self.freeze_text_encoder),
                ("--no-augment", not self.augment), ("--word-dropout 0", self.word_dropout == 0),
                ("--task classification", self.task == "classification"), ("no --streaming", not self.streaming),
                ("--hpo-trials 0", self.hpo_trials == 0),
            ) if not ok]
            if unmet:
                raise ValueError("--cache-frozen-features stores each training row's encoder outputs once, so the "
                                 f"encoders and rows must not change between epochs; it needs {', '.join(unmet)}.")
        if self.early_stopping_patience is not None and self.eval_strategy == "no":
            raise ValueError("--early-stopping-patience needs evaluations: set --eval-strategy epoch or steps.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what ``train_config.yaml`` holds)."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)


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


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``--config PRESET.yaml`` plus one flag per `TrainConfig` field (all default to "not given")."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Fine-tune an mm_hub image+text model on a Hub or local dataset with the transformers Trainer. "
        "Values come from the dataclass defaults, then the --config YAML preset, then these flags.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="YAML preset (training/configs/*.yaml); flags override its values.")
    for f in dataclasses.fields(TrainConfig):
        kind, is_list = _base_type(f.type)
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{f.metadata['help']} (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.name == "resume_from_checkpoint":
            parser.add_argument(flag, nargs="?", const="latest", **kwargs)
        else:
            parser.add_argument(flag, type=kind, nargs="*" if is_list else None, **kwargs)
    parser.formatter_class = argparse.HelpFormatter  # defaults are already in each help text
    return parser


PRESETS = Path(__file__).parent / "configs"


def find_preset(name: str) -> Path:
    """A preset path as given, else relative to the installed package (``training/configs/demo.yaml`` works from any
    folder), else a preset name (``demo``); a ValueError lists the presets otherwise."""
    candidates = [Path(name), PRESETS.parent.parent / name, PRESETS / name, PRESETS / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    raise ValueError(f"--config {name!r} is neither a file nor a preset; presets: {available}.")


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < YAML preset (``--config``) < CLI flags -> a validated `TrainConfig`."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        preset = yaml.safe_load(find_preset(args.config).read_text()) or {}
        if not isinstance(preset, dict):
            raise ValueError(f"{args.config} must hold a mapping of options, got {type(preset).__name__}.")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(preset) - known)
        if unknown:
            raise ValueError(f"Unknown keys {unknown} in {args.config}; valid keys: {sorted(known)}.")
        values.update(preset)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    config = TrainConfig(**values)
    config.validate()
    return config
