"""Fine-tune an mm_hub model on a Hub or local dataset: ``python -m training.train --config PRESET.yaml [--flags]``.

Builds the model from pretrained towers (``from_vision_text_pretrained``) or random ones (``--vision-config``),
trains it with the transformers `Trainer` (so checkpointing, resuming, mixed precision, gradient accumulation and
``torchrun`` DDP work unchanged), evaluates it, and writes into ``--output-dir``: the model and processor,
``train_config.yaml``, ``eval_results.json`` and ``training_info.json``. Run ``--help`` for every option.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from mm_hub import MMHubProcessor
from mm_hub._files import write_json
from mm_hub.cli import run
from mm_hub.hub import push_to_hub
from mm_hub.lora import (apply_lora, merge_lora, parameter_counts, plain_name, remove_adapter_files, save_adapter,
                         unsaved_parts)
from mm_hub.paths import minilm_path
from mm_hub.tasks import Scoring, SplitEvaluation, task_named

from .config import TRAINING_ARGUMENTS, TrainConfig, load_json_or_file, resolve_config
from .data import (
    SKIPPED,
    Collator,
    LabelInfo,
    RowTransform,
    attach_transform,
    build_augmentation,
    close_process_group,
    gather_objects,
    image_size_of,
    infer_labels,
    load_splits,
)
from .hooks import RECIPE_HOOKS, TRAINER_HOOKS

logger = logging.getLogger("training.train")


# ------------------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------------------


def data_kwargs(config: TrainConfig, labels: LabelInfo | None, train: Any) -> dict[str, Any]:
    """The `MMHubConfig` fields the data decides: problem type, number of outputs and label names of a classifier;
    with ``--decoder-vocab targets``, the tokens a generator may write (those of the training targets)."""
    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs.update(problem_type=labels.problem_type, num_labels=labels.num_labels)
        if labels.names:
            kwargs["id2label"] = dict(enumerate(labels.names))
            kwargs["label2id"] = {name: i for i, name in enumerate(labels.names)}
    if config.encoders.decoder_vocab == "targets":
        if "target" not in task_named(config.task).columns:
            raise ValueError(f"--decoder-vocab targets keeps the words of the training targets; the {config.task} "
                             "task writes no text.")
        if not hasattr(train, "__len__"):
            raise ValueError("--decoder-vocab targets reads every training target first: it needs a map-style dataset, "
                             "not --streaming.")
        tokenizer = AutoTokenizer.from_pretrained(config.encoders.text_model or minilm_path())
        targets = [text for text in train["target"] if isinstance(text, str)]
        ids = {token for row in tokenizer(targets, add_special_tokens=False)["input_ids"] for token in row}
        ends = (tokenizer.sep_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        kwargs["decoder_vocab"] = sorted(ids | {token for token in ends if token is not None})
    return kwargs


def text_vocabulary(train: Any, tokenizer: Any) -> list[int] | None:
    """The token ids of every training text the text encoder reads (``text`` and ``text_pair`` columns), sorted: the
    app warns about words outside them. None for a streamed dataset or one without texts (captions from images)."""
    if not hasattr(train, "__len__"):
        return None
    texts: list[str] = []
    for column in ("text", "text_pair"):
        if column in train.column_names:
            for value in train[column]:
                texts += [text for text in (value if isinstance(value, list) else [value]) if isinstance(text, str)]
    if not texts:
        return None
    return sorted({token for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for token in row})


def build_model(config: TrainConfig, extra: dict[str, Any] | None = None) -> tuple[torch.nn.Module, MMHubProcessor]:
    """The first head of ``config.task`` and its processor, built by the library's one builder
    (`from_vision_text_pretrained`: pretrained towers where given, new ones from ``--vision-config`` /
    ``--text-config``); ``extra``: the config fields the data decides (`data_kwargs`)."""
    kwargs = {**config.model_kwargs(), **(extra or {})}  # the `model:` section, as MMHubConfig takes it
    vision_config = kwargs.pop("vision_config")
    model, processor = task_named(config.task).heads[0].from_vision_text_pretrained(
        config.encoders.vision_model if vision_config is None else None, config.encoders.text_model or minilm_path(),
        max_length=config.encoders.max_length, vision_config=vision_config, image_size=config.encoders.image_size,
        **kwargs,
    )
    model = _freeze_embeddings(model, config)
    if config.train.lora:
        model = apply_lora(model, config.train.lora_r, config.train.lora_alpha, config.train.lora_dropout)
        lost = [] if config.train.merge_lora else unsaved_parts(model)
        if lost:  # before training, not after it
            raise ValueError(f"--lora saves an adapter (what trains) that loads on top of pretrained towers named by "
                             f"id, but {len(lost)} weights ({lost[0]}, ...) are neither: a frozen tower built from "
                             "--vision-config / --text-config, or one copied by --init-encoders-from. Add --merge-lora "
                             "to save the merged model.")
        counts = parameter_counts(model)
        logger.info("LoRA: %s of %s parameters train (%.2f %%).", f"{counts['trainable_parameters']:,}",
                    f"{counts['total_parameters']:,}", 100 * counts["trainable_parameters"] / counts["total_parameters"])
    return model, processor


def _freeze_embeddings(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """``--init-encoders-from`` (copy encoder weights), then ``--freeze-text-embeddings`` (fix the token table)."""
    if config.encoders.init_encoders_from:
        _copy_encoders(model, Path(config.encoders.init_encoders_from))
        model.config.pretrained_towers = None  # the towers no longer hold what their ids load
    if config.encoders.freeze_text_embeddings:
        encoder = model.mm_hub.text_encoder
        table = encoder.embeddings if config.model.text_encoder_type == "lstm" else encoder.model.get_input_embeddings()
        table.requires_grad_(False)
    return model


def _copy_encoders(model: torch.nn.Module, folder: Path) -> None:
    """Load the ``mm_hub.vision_encoder.*`` / ``mm_hub.text_encoder.*`` weights of a saved model; shapes must match."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"--init-encoders-from {folder}: no *.safetensors weights there.")
    saved = {k: v for f in files for k, v in load_file(str(f)).items()
             if k.startswith(("mm_hub.vision_encoder.", "mm_hub.text_encoder."))}
    own = model.state_dict()
    wrong = [k for k, v in saved.items() if k not in own or own[k].shape != v.shape]
    if not saved or wrong:
        raise ValueError(f"--init-encoders-from {folder}: its encoders do not fit this model's (mismatched: {wrong[:5]}).")
    model.load_state_dict(saved, strict=False)


def pretrained_prefixes(config: TrainConfig) -> list[str]:
    """Parameter-name prefixes holding pretrained weights (they get ``encoder_learning_rate``): both whole encoders
    with ``--init-encoders-from`` (trained weights, whatever their config), else the towers loaded from the Hub."""
    if config.encoders.init_encoders_from:
        return ["mm_hub.vision_encoder.", "mm_hub.text_encoder."]
    prefixes = []
    if config.model.vision_config is None:
        prefixes.append("mm_hub.vision_encoder.")
    if config.model.text_encoder_type == "lstm":
        prefixes.append("mm_hub.text_encoder.embeddings.")
    elif config.model.text_config is None:
        prefixes.append("mm_hub.text_encoder.")
    return prefixes


# ------------------------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------------------------


class TrainingDivergedError(ValueError):
    """The run's gradients or weights stopped being finite numbers: nothing was saved as the final model."""


DIVERGED_HINT = ("Lower --learning-rate, check the labels' range, or resume from an earlier checkpoint; the last "
                 "checkpoint before it (if any) is still in the output folder.")


class DivergenceGuard(TrainerCallback):
    """Stops training at the first optimizer step whose gradients are NaN or infinite, before the step spoils the
    weights (a regression label of 1e308 once made 98 of 104 saved tensors NaN in a run that reported success).

    The gradients it reads are already reduced over DDP processes, so every process stops at the same step. Under
    fp16 the loss scaler skips such steps on purpose, so the guard leaves them to it (`check_finite_weights` still
    runs before saving).
    """

    def on_pre_optimizer_step(self, args: TrainingArguments, state: Any, control: Any, model: Any = None,
                              **kwargs: Any) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if args.fp16 or not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        if not np.isfinite(norm):
            raise TrainingDivergedError(f"Training diverged at step {state.global_step + 1}: the gradients' norm is "
                                        f"{norm}. Nothing was saved as the final model. {DIVERGED_HINT}")


def check_finite_weights(model: torch.nn.Module) -> None:
    """Raise `TrainingDivergedError` when a floating-point weight or buffer of ``model`` holds NaN or infinity."""
    tensors = {name: value for name, value in model.state_dict().items() if value.is_floating_point()}
    broken = [name for name, value in tensors.items() if not torch.isfinite(value).all()]
    if broken:
        raise TrainingDivergedError(f"Training diverged: {len(broken)} of {len(tensors)} weight tensors hold NaN or "
                                    f"infinite values ({', '.join(broken[:3])}, ...). Nothing was saved as the final "
                                    f"model. {DIVERGED_HINT}")


class MMHubTrainer(Trainer):
    """`Trainer` with separate learning rates for pretrained encoders, the skipped rows of each batch counted, and
    whole-split evaluation for the tasks scored that way (`evaluate_split`)."""

    def __init__(self, *args: Any, recipe: TrainConfig, eval_collator: Collator | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.eval_collator = eval_collator
        self.train_collator = self.data_collator  # counts skipped rows, even once cached features replace it
        if self.args.fsdp and not self.is_fsdp_enabled and self.args.process_index == 0:
            # transformers/accelerate shard parameters on accelerators only: asked on CPUs, the run quietly becomes
            # DDP, each process holding the whole model, optimizer state included. Say so before it runs out of memory.
            logger.warning("--fsdp was given, but this run has no accelerator to shard over: it trains with "
                           "DistributedDataParallel instead (each process holds the whole model and its optimizer "
                           "state). Sharded training needs GPUs (docs/fsdp.md).")

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, plus the training rows skipped so far (a resumed run reports them too)."""
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if folder.is_dir() and hasattr(self.train_collator, "save_skipped"):
            self.train_collator.save_skipped(folder, self.args.process_index)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW with four groups: {pretrained, new} x {decay, no decay}; torch's fused kernel unless ``optim`` is
        ``adamw_torch``."""
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        recipe = self.recipe
        prefixes = pretrained_prefixes(recipe)
        new_lr = self.args.learning_rate  # the HPO search sets args.learning_rate per trial
        encoder_lr = recipe.train.encoder_learning_rate
        if encoder_lr is None:
            encoder_lr = new_lr / 10 if prefixes else new_lr
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:  # a LoRA model's adapters are new weights, whatever tower holds them
                own = plain_name(name)
                key = (any(own.startswith(p) for p in prefixes) and "lora_" not in own, name in decay)
                groups.setdefault(key, []).append(param)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": params, "lr": encoder_lr if pretrained else new_lr,
                 "weight_decay": self.args.weight_decay if decays else 0.0}
                for (pretrained, decays), params in groups.items()
            ],
            lr=new_lr,
            fused=self.args.optim == "adamw_torch_fused" or None,
        )
        return self.optimizer

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """The Trainer's step, after counting the rows the collator dropped from this batch."""
        self.data_collator.record(inputs.pop(SKIPPED, []))
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple:
        """The Trainer's eval step, after counting the rows the eval collator dropped from this batch."""
        (self.eval_collator or self.data_collator).record(inputs.pop(SKIPPED, []))
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        """The Trainer's eval loader, collated by the eval collator: streamed rows are not augmented, and skipped
        rows are counted as the eval split's, not the train split's."""
        train_collator, self.data_collator = self.data_collator, self.eval_collator or self.data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """The Trainer's loop, or, for a task scored over a whole split (`mm_hub.tasks.SplitEvaluation`: recall over
        every image, corpus BLEU), `evaluate_split`.

        Under DDP every process first takes process 0's buffers (BatchNorm statistics, which each process updated on
        its own batches since the last forward), so each shard is scored by the model that process 0 saves.
        """
        if self.args.world_size > 1:
            for buffer in getattr(self.model, "module", self.model).buffers():
                torch.distributed.broadcast(buffer, src=0)
        task = task_named(self.recipe.task)
        if task.evaluation is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        train = self.recipe.train
        scores = evaluate_split(
            self.model, self.eval_dataset if eval_dataset is None else eval_dataset, self.eval_collator,
            task.evaluation, self.args.eval_batch_size, rank=self.args.process_index,
            world_size=self.args.world_size, progress=not self.args.disable_tqdm,
            max_new_tokens=train.generation_max_new_tokens, num_beams=train.generation_num_beams,
        )
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module, dataset: Any, collator: Collator, evaluation: SplitEvaluation, batch_size: int,
    rank: int = 0, world_size: int = 1, progress: bool = True, **options: Any,
) -> dict[str, float]:
    """Score ``model`` on a whole split with a task's `SplitEvaluation`: its ``predict`` on every batch of usable rows
    (bad rows skipped and counted), its ``score`` on all of them; ``options`` go to ``predict``.

    With ``world_size`` > 1 (DDP: every process must call it, as it is a collective) process ``rank`` predicts only
    its shard of the split and the parts of all shards are gathered, so each process returns the metrics of the
    whole split.
    """
    model = getattr(model, "module", model)  # unwrap DDP
    was_training = model.training
    model.eval()
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    parts = []
    for rows in tqdm(DataLoader(dataset, batch_size=batch_size, collate_fn=list), desc=f"{collator.split} evaluation",
                     leave=False, disable=not progress):
        good, skipped = collator.usable(rows)
        collator.record(skipped)
        if good:
            parts.append(evaluation.predict(model, collator.processor, good, **options))
    model.train(was_training)
    # Gathered before any error, so that no process waits on one that raised.
    parts = [part for shard in gather_objects(parts) for part in shard] if world_size > 1 else parts
    if not parts:
        raise ValueError(f"No usable rows in the {collator.split} split to evaluate on.")
    return evaluation.score(parts)


def compute_metrics_for(scoring: Scoring) -> Any:
    """The Trainer's ``compute_metrics``: ``scoring.compute`` on the model's first output (its logits)."""

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return scoring.compute(logits, prediction.label_ids)

    return compute


def scoring_of(config: TrainConfig, labels: LabelInfo | None) -> Scoring:
    """How the recipe's model is scored: its task's `Scoring` (for classification, that of the labels' problem
    type)."""
    return task_named(config.task).scoring_for(labels.problem_type if labels is not None else None)


def training_arguments(config: TrainConfig, labels: LabelInfo | None, output_dir: str, **overrides: Any) -> TrainingArguments:
    """`TrainingArguments` of the recipe: the ``train:`` section's `TrainingArguments` fields as they are, and those
    the recipe sets (`training.config.RECIPE_SETS`): checkpoints follow evaluation and the best one (by the task's
    first metric, unless ``metric_for_best_model``) is loaded at the end; the data order follows the seed; the
    DataLoader keeps the raw columns the collator reads; label smoothing applies to single-label problems only."""
    train = config.train
    scoring = scoring_of(config, labels)
    metric = train.metric_for_best_model or scoring.metrics[0]
    lower = scoring.lower_is_better if metric == scoring.metrics[0] else any(
        word in metric for word in ("mse", "mae", "rank", "loss"))
    evaluates = train.eval_strategy != "no"
    kwargs = {name: getattr(train, name) for name in TRAINING_ARGUMENTS}
    kwargs.update(
        output_dir=output_dir,
        label_smoothing_factor=train.label_smoothing_factor if labels and labels.problem_type.startswith("single")
        else 0.0,
        data_seed=train.seed,
        save_strategy=train.eval_strategy if evaluates else "steps",
        save_steps=train.eval_steps,
        load_best_model_at_end=evaluates,
        metric_for_best_model=metric,
        greater_is_better=not lower,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        # accelerate only forms a multi-process CPU group (gloo) when told to use the CPU; on a machine without an
        # accelerator, torchrun would otherwise start independent single-process runs that race on the output folder
        use_cpu=not torch.accelerator.is_available(),
        # Streamed data: each process reads the stream and keeps its share of every batch, instead of the first
        # process broadcasting batches (which holds only tensors, and our batches carry the skipped-row list).
        accelerator_config={"dispatch_batches": False} if config.data.streaming else None,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


# ------------------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------------------

class Recipe:
    """One training run: its config, data, labels, processor and collators (what every trial and the final training
    share), the models and trainers built from them, and `train_and_save`."""

    def __init__(self, config: TrainConfig, built: tuple[torch.nn.Module, MMHubProcessor] | None = None):
        """``built``: a trained model and its processor to evaluate on this recipe's data, instead of a new model."""
        self.config = config
        self.task = task = task_named(config.task)
        set_seed(config.train.seed)
        self.train, self.eval, self.extra, base_dir, self.eval_split = load_splits(config)
        self.labels = infer_labels(self.train, self.eval, config) if "label" in task.columns else None
        self.scoring = scoring_of(config, self.labels)
        self.model_extra = data_kwargs(config, self.labels, self.train)
        model, self.processor = built or build_model(config, self.model_extra)
        self.first_model = model  # reused by the first trainer, so the towers are not loaded twice
        streamed = not hasattr(self.train, "__len__")
        augmentation = build_augmentation(config, image_size_of(self.processor))
        train_rows = RowTransform(base_dir, augmentation, sample_caption=task.caption_lists,
                                  word_dropout=config.data.word_dropout)
        eval_rows = RowTransform(base_dir)
        self.train_collator = Collator(self.processor, task, self.labels, config.data.strict, "train",
                                       train_rows if streamed else None)
        self.eval_collator = Collator(self.processor, task, self.labels, config.data.strict, "eval",
                                      eval_rows if streamed else None)
        self.text_vocabulary = text_vocabulary(self.train, self.processor.tokenizer)
        self.train = attach_transform(self.train, train_rows)
        self.eval = attach_transform(self.eval, eval_rows)
        self.extra = {name: attach_transform(split, eval_rows) for name, split in self.extra.items()}

    def new_model(self, config: TrainConfig | None = None) -> torch.nn.Module:
        """A fresh model of this recipe (the first call returns the one built with the processor), or of ``config``
        (a search trial's variant of it)."""
        if config is None and self.first_model is not None:
            model, self.first_model = self.first_model, None
            return model
        config = config or self.config
        set_seed(config.train.seed)
        return build_model(config, self.model_extra)[0]

    def trainer(self, output_dir: str, model_init: Any = None, **argument_overrides: Any) -> MMHubTrainer:
        """A `MMHubTrainer` over this recipe's data (``model_init`` for searches, else a new model)."""
        config = self.config
        args = training_arguments(config, self.labels, output_dir, **argument_overrides)
        callbacks: list[TrainerCallback] = [DivergenceGuard()]
        if config.train.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
        return MMHubTrainer(
            model=None if model_init is not None else self.new_model(),
            model_init=model_init,
            args=args,
            data_collator=self.train_collator,
            train_dataset=self.train,
            eval_dataset=self.eval,
            processing_class=self.processor,
            compute_metrics=compute_metrics_for(self.scoring) if self.scoring.compute else None,
            callbacks=callbacks,
            recipe=config,
            eval_collator=self.eval_collator,
        )


def _metric_values(metrics: dict[str, Any]) -> dict[str, float]:
    """Drop the Trainer's timing entries; keep the metrics themselves."""
    timing = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")
    return {k: float(v) for k, v in metrics.items() if k != "epoch" and not k.endswith(timing)}


def _resume_path(config: TrainConfig) -> str | None:
    if config.train.resume_from_checkpoint in (None, ""):
        return None
    if config.train.resume_from_checkpoint == "latest":
        last = get_last_checkpoint(config.train.output_dir) if os.path.isdir(config.train.output_dir) else None
        if last is None:
            raise ValueError(f"--resume-from-checkpoint latest: no checkpoint-* folder in {config.train.output_dir}.")
        return last
    if not os.path.isdir(config.train.resume_from_checkpoint):
        raise ValueError(f"--resume-from-checkpoint {config.train.resume_from_checkpoint!r} is not a checkpoint folder.")
    return config.train.resume_from_checkpoint


def evaluate_splits(trainer: MMHubTrainer, recipe: Recipe) -> dict[str, float]:
    """The trainer's model scored on the recipe's eval split and its extra eval splits (keys prefixed by split)."""
    metrics = _metric_values(trainer.evaluate())
    for name, split in recipe.extra.items():
        metrics.update(_metric_values(trainer.evaluate(split, metric_key_prefix=name)))
    return metrics


def train_and_save(recipe: Recipe) -> dict[str, float]:
    """Train, evaluate (eval + extra splits), save the model folder with its JSON reports; return the metrics."""
    config = recipe.config
    output = Path(config.train.output_dir)
    trainer = recipe.trainer(str(output))
    if trainer.is_world_process_zero():
        config.save(output / "train_config.yaml")  # beside the checkpoints from the start
    for hook in TRAINER_HOOKS:
        hook(recipe, trainer)
    resume = _resume_path(config)
    if resume is not None:
        recipe.train_collator.restore_skipped(resume)
    result = trainer.train(resume_from_checkpoint=resume)
    check_finite_weights(trainer.model)
    parameters = parameter_counts(trainer.model)  # before a LoRA model's adapters are merged away
    metrics = evaluate_splits(trainer, recipe)
    skipped = {"train": recipe.train_collator.report(), "eval": recipe.eval_collator.report()}
    for split, counts in skipped.items():
        if counts:
            logger.warning("Skipped %s rows of the %s split: %s", sum(counts.values()), split, counts)
    if trainer.is_world_process_zero():
        if config.train.lora and not config.train.merge_lora:  # adapters + what trained fully, on the towers by id
            save_adapter(trainer.model, recipe.processor, output)
        else:
            remove_adapter_files(output)  # a former LoRA run's: loading would take them over these weights
            if config.train.lora:  # the adapters folded into plain weights: the folder loads like any mm_hub model
                merge_lora(trainer.model).save_pretrained(str(output))
                recipe.processor.save_pretrained(str(output))
            else:
                trainer.save_model(str(output))
        config.save(output / "train_config.yaml")
        write_json(output / "eval_results.json", metrics)
        info = training_info(recipe, metrics, result.metrics, skipped, trainer.args.world_size, parameters)
        write_json(output / "training_info.json", info)
        print(f"Saved the model to {output}; eval metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if config.hub.push_to_hub:
            commit = push_to_hub(str(output), config.hub.hub_model_id, private=config.hub.hub_private,
                                 revision=config.hub.hub_revision, commit_message=f"Train on {config.data.dataset}")
            print(f"Pushed {output} to {config.hub.hub_model_id} (commit {commit}).")
    return metrics


# What the model card lists as a run's hyper-parameters.
HYPERPARAMETERS = (
    "learning_rate", "encoder_learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "weight_decay", "label_smoothing_factor", "warmup_steps", "lr_scheduler_type",
    "fusion_type", "dropout", "freeze_vision_encoder", "freeze_text_encoder", "freeze_text_embeddings",
    "text_encoder_type", "max_length", "augment", "word_dropout", "seed", "fp16", "bf16", "optim",
)


def training_info(recipe: Recipe, metrics: dict[str, float], train_metrics: dict[str, Any], skipped: dict,
                  num_processes: int, parameters: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``training_info.json`` the model card reads (``parameters``: `parameter_counts` of the trained model)."""
    config = recipe.config
    values = config.flat()
    vision_config = load_json_or_file(config.model.vision_config, "vision_config")
    vision = config.encoders.vision_model if vision_config is None else f"random init: {vision_config}"
    streamed_rows = config.train.max_steps * config.train.per_device_train_batch_size
    return {
        "task": task_named(config.task).pipeline_task,
        "dataset": config.data.dataset,
        "dataset_config": config.data.dataset_config,
        "train_split": config.data.train_split,
        "eval_split": recipe.eval_split,
        "base_models": [vision, config.encoders.text_model or minilm_path()],
        "hyperparameters": {key: values[key] for key in HYPERPARAMETERS},
        "metrics": metrics,
        "train_runtime_s": float(train_metrics.get("train_runtime", 0.0)),
        "num_train_examples": len(recipe.train) if hasattr(recipe.train, "__len__") else streamed_rows,
        "skipped_rows": skipped,
        "num_processes": num_processes,
        "text_vocabulary": recipe.text_vocabulary,
        **(parameters or {}),
        "lora": {"r": config.train.lora_r, "alpha": config.train.lora_alpha, "dropout": config.train.lora_dropout,
                 "merged": config.train.merge_lora} if config.train.lora else None,
    }


def run_training(config: TrainConfig) -> dict[str, float]:
    """Run one recipe end to end (its hooks first: a search with ``hpo_trials``); the entry point behind the CLI."""
    config.validate()
    if config.train.torch_threads is not None:
        torch.set_num_threads(config.train.torch_threads)
    recipe = Recipe(config)
    for hook in RECIPE_HOOKS:
        recipe = hook(recipe)
    return train_and_save(recipe)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """CLI entry point: ``python -m training.train --help``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_training(resolve_config(argv))


def cli() -> None:
    """``python -m training.train``: `main` inside mm_hub's error boundary (`mm_hub.cli.run`: a user error is one
    line and exit status 2), then out of the torchrun process group."""
    run(main)
    close_process_group()  # after success only: a failed process may leave the others inside a collective


if __name__ == "__main__":
    cli()
