"""Average classifiers trained apart: ``python -m training.ensemble MODEL_DIR MODEL_DIR [...] --output-dir OUT``.

Each MODEL_DIR is a folder written by ``training.train`` (the same recipe with other seeds, say). The members must
agree on architecture, labels and processor. OUT receives an `MMHubEnsembleForImageTextClassification` (one model:
``from_pretrained``, ``pipeline``, the app and ``trust_remote_code`` load it as any mm_hub classifier) with the first
member's processor, scored on the first member's recipe (its ``train_config.yaml``: dataset, eval split and extra
eval splits, by the same metrics as training) into ``eval_results.json`` and ``training_info.json`` for the model
card. The folder is written beside OUT and moved into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mm_hub import (
    MMHubEnsembleForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubProcessor,
)
from mm_hub._files import folder_written_whole, write_json
from mm_hub.loading import load_model

from .config import TrainConfig

RECIPE_FILE = "train_config.yaml"


def _architectures(folder: Path) -> list[str] | None:
    """The ``architectures`` of the model saved in ``folder`` (None without a ``config.json``)."""
    config = folder / "config.json"
    return json.loads(config.read_text()).get("architectures") if config.is_file() else None


def load_members(folders: list[str | os.PathLike]) -> tuple[list[MMHubForImageTextClassification], MMHubProcessor]:
    """The trained classifiers in ``folders`` and their (shared) processor; raises ValueError for a folder that is not
    an mm_hub classifier or whose processor differs from the first one's."""
    if len(folders) < 2:
        raise ValueError(f"An ensemble needs two or more model folders, got {len(folders)}.")
    models, processor = [], None
    for folder in folders:
        architectures = _architectures(Path(folder))
        if architectures != [MMHubForImageTextClassification.__name__]:
            raise ValueError(
                f"{folder} is not a saved MMHubForImageTextClassification (config.json architectures: "
                f"{architectures}); ensemble members are classifiers written by training.train."
            )
        model, own = load_model(folder, head=MMHubForImageTextClassification)
        models.append(model)
        if processor is None:
            processor = own
        elif _processor_state(own) != _processor_state(processor):
            raise ValueError(f"{folder} has another processor than {folders[0]} (tokenizer, image size or max_length).")
    return models, processor


def _processor_state(processor: MMHubProcessor) -> tuple[Any, ...]:
    """What a processor's output depends on: its image processor settings, vocabulary and max_length."""
    image = {k: v for k, v in processor.image_processor.to_dict().items() if not k.startswith("_")}
    return json.dumps(image, sort_keys=True, default=str), processor.tokenizer.get_vocab(), processor.max_length


def evaluate_ensemble(
    model: MMHubEnsembleForImageTextClassification, processor: MMHubProcessor, recipe: TrainConfig
) -> dict[str, float]:
    """Score ``model`` on ``recipe``'s eval split and extra eval splits, as training scores a model."""
    from .train import Recipe, evaluate_splits

    with tempfile.TemporaryDirectory(prefix="mm-hub-ensemble-eval-") as scratch:
        evaluation = Recipe(recipe, built=(model, processor))
        return evaluate_splits(evaluation.trainer(scratch), evaluation)


def training_info(folders: list[Path], metrics: dict[str, float]) -> dict[str, Any]:
    """The ensemble's ``training_info.json``: the first member's, with every member's seed and training time, and
    the words any member read."""
    infos = [json.loads((f / "training_info.json").read_text()) if (f / "training_info.json").is_file() else {}
             for f in folders]
    info = dict(infos[0])
    hyper = dict(info.get("hyperparameters") or {})
    hyper["seed"] = [member.get("hyperparameters", {}).get("seed") for member in infos]
    info.update(
        hyperparameters=hyper,
        metrics=metrics,
        train_runtime_s=sum(float(member.get("train_runtime_s", 0.0)) for member in infos),
        ensemble_members=[f.name for f in folders],
    )
    vocabularies = [member.get("text_vocabulary") for member in infos]
    known = all(isinstance(vocabulary, list) for vocabulary in vocabularies)
    info["text_vocabulary"] = sorted(set().union(*vocabularies)) if known else None
    return info


def build_ensemble(
    folders: list[str | os.PathLike], output_dir: str | os.PathLike, evaluate: bool = True, progress: bool = True
) -> dict[str, float]:
    """Save the ensemble of the classifiers in ``folders`` (see the module docstring) into ``output_dir``.

    Args:
        folders: two or more model folders written by ``training.train``.
        output_dir: the ensemble's folder; an earlier ensemble there is replaced, anything else is refused.
        evaluate: score it on the first member's recipe (needs its ``train_config.yaml``).
        progress: show the evaluation progress bars.

    Returns:
        The ensemble's metrics (empty without ``evaluate``).
    """
    folders, output = [Path(f) for f in folders], Path(output_dir)
    if output.resolve() in {f.resolve() for f in folders}:
        raise ValueError(f"--output-dir {output} is one of the members; write the ensemble elsewhere.")
    earlier = _architectures(output) == [MMHubEnsembleForImageTextClassification.__name__]
    if output.is_dir() and any(output.iterdir()) and not earlier:
        raise ValueError(f"--output-dir {output} holds files but no earlier ensemble; refusing to replace it.")
    members, processor = load_members(folders)
    model = MMHubEnsembleForImageTextClassification.from_members(members)
    metrics: dict[str, float] = {}
    if evaluate:
        recipe_file = folders[0] / RECIPE_FILE
        if not recipe_file.is_file():
            raise ValueError(f"{folders[0]} has no {RECIPE_FILE} to evaluate on; pass evaluate=False (--no-eval).")
        recipe = TrainConfig.from_dict(yaml.safe_load(recipe_file.read_text())).replace(progress=progress)
        metrics = evaluate_ensemble(model, processor, recipe)
    with folder_written_whole(output) as work:
        model.save_pretrained(work)
        processor.save_pretrained(work)
        write_json(work / "eval_results.json", metrics)
        write_json(work / "training_info.json", training_info(folders, metrics))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    """CLI entry point: ``python -m training.ensemble --help``."""
    parser = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("members", nargs="+", help="Two or more model folders written by training.train.")
    parser.add_argument("--output-dir", required=True,
                        help="Folder of the ensemble (an earlier ensemble there is replaced).")
    parser.add_argument("--no-eval", action="store_true", help="Do not score it on the first member's recipe.")
    parser.add_argument("--push-to-hub", action="store_true", help="Push the ensemble (needs --hub-model-id).")
    parser.add_argument("--hub-model-id", help="ORG/NAME to push to.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the evaluation progress bars.")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id ORG/NAME.")
    metrics = build_ensemble(args.members, args.output_dir, evaluate=not args.no_eval, progress=not args.no_progress)
    print(f"Saved the ensemble of {len(args.members)} to {args.output_dir}; eval metrics: "
          + (", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) or "none"))
    if args.push_to_hub:
        from mm_hub.hub import push_to_hub

        commit = push_to_hub(args.output_dir, args.hub_model_id, commit_message="Ensemble of trained mm_hub models")
        print(f"Pushed {args.output_dir} to {args.hub_model_id} (commit {commit}).")
    return metrics


if __name__ == "__main__":
    from mm_hub.cli import run

    run(main)
