"""Hyper-parameter search (``--hpo-trials N``): `Trainer.hyperparameter_search` with the optuna backend.

Searches the learning rate, fusion type, encoder freezing and dropout. Every trial trains a fresh model from
``model_init`` (without checkpoints) and is scored on the recipe's best-model metric; the table of trials is saved
as ``hpo/results.csv`` and ``hpo/results.json`` under ``--output-dir``, and the best configuration is then retrained
as a normal run (checkpoints, final evaluation, saved model).

Under ``torchrun`` every process trains each trial; process 0 runs optuna (transformers sends the other processes
each trial's values) and broadcasts the best run.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mm_hub._files import write_json, write_text

from .config import TrainConfig
from .hooks import RECIPE_HOOKS

if TYPE_CHECKING:
    from .train import Recipe

logger = logging.getLogger("training.hpo")
SEARCHED = ("learning_rate", "fusion_type", "freeze_vision_encoder", "freeze_text_encoder", "dropout")


def hp_space(config: TrainConfig):
    """The optuna search space around the recipe (asking twice for a name returns the same value)."""

    def space(trial: Any) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", config.train.learning_rate / 10, config.train.learning_rate * 10, log=True),
            "fusion_type": trial.suggest_categorical("fusion_type", list(config.train.hpo_fusion_types)),
            "freeze_vision_encoder": trial.suggest_categorical("freeze_vision_encoder", [False, True]),
            "freeze_text_encoder": trial.suggest_categorical("freeze_text_encoder", [False, True]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        }

    return space


def apply_trial(config: TrainConfig, trial: Any) -> TrainConfig:
    """The recipe with a trial's (or a best run's dict of) hyper-parameters applied."""
    params = trial if isinstance(trial, dict) else hp_space(config)(trial)
    return config.replace(**{k: v for k, v in params.items() if k in SEARCHED})


def _save_table(rows: dict[int, dict[str, Any]], folder: Path) -> None:
    """Write the trial table as CSV and JSON (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    ordered = [rows[k] for k in sorted(rows)]
    columns = ["trial", *SEARCHED, "objective"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(ordered)
    write_text(folder / "results.csv", table.getvalue())
    write_json(folder / "results.json", ordered)


def search(recipe: Recipe) -> Recipe:
    """Run ``recipe.config.train.hpo_trials`` trials, save the table, and return the recipe set to the best
    configuration."""
    config = recipe.config
    folder = Path(config.train.output_dir) / "hpo"

    def model_init(trial: Any = None) -> torch.nn.Module:  # the Trainer calls it once without a trial, then per trial
        return recipe.new_model(None if trial is None else apply_trial(config, trial))

    # Trials only compare metrics: no checkpoints, no best-model reloading, no early-stopping state.
    trainer = recipe.trainer(str(folder), model_init=model_init, save_strategy="no", load_best_model_at_end=False)
    trainer.callback_handler.callbacks = [
        cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ != "EarlyStoppingCallback"
    ]
    metric = "eval_" + trainer.args.metric_for_best_model.removeprefix("eval_")
    rows: dict[int, dict[str, Any]] = {}

    def objective(metrics: dict[str, float]) -> float:
        if metric not in metrics:
            raise ValueError(f"The search metric {metric!r} is not among the evaluation metrics {sorted(metrics)}.")
        trial = trainer._trial
        rows[trial.number] = {"trial": trial.number, **trial.params, "objective": metrics[metric]}
        return metrics[metric]

    best = trainer.hyperparameter_search(
        hp_space=hp_space(config),
        compute_objective=objective,
        n_trials=config.train.hpo_trials,
        direction="maximize" if trainer.args.greater_is_better else "minimize",
        backend="optuna",
    )
    if trainer.args.world_size > 1:  # under torchrun only process 0 runs optuna; the others return None
        shared = [best]
        torch.distributed.broadcast_object_list(shared, src=0)
        best = shared[0]
    if trainer.is_world_process_zero():
        _save_table(rows, folder)
        summary = {"metric": metric, "best_trial": int(best.run_id), "best_objective": best.objective,
                   "best_hyperparameters": best.hyperparameters}
        write_json(folder / "best.json", summary)
        logger.info("Best of %d trials: %s=%.4f with %s", len(rows), metric, best.objective, best.hyperparameters)
    # The saved train_config.yaml reproduces the retrained best run directly; its model is built from that config.
    recipe.config = apply_trial(config, best.hyperparameters).replace(hpo_trials=0)
    recipe.first_model = None
    return recipe


def search_before_training(recipe: Recipe) -> Recipe:
    """The recipe hook: with ``--hpo-trials N``, search first and train the best configuration."""
    return search(recipe) if recipe.config.train.hpo_trials > 0 else recipe


RECIPE_HOOKS.append(search_before_training)
