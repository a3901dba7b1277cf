"""Accuracy of the demo models served from their ONNX exports (fp32 and int8) against torch, on the splits their
presets score: the classifier's eval and held-out accuracy, the retrieval model's recall@1, the captioner's caption
F1 and answer exact match (the tasks' own scoring, `mm_hub.tasks`). int8 twice: the matrix products only, and with the
convolutions calibrated on the first train images too.

    python -m benchmarks.bench_onnx_accuracy --out benchmarks/results_onnx_accuracy.json

The demo models are the app's (trained once into mm_hub's cache, `training.demo_model`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks._run import conditions, finish

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "onnx_fp32", "onnx_int8", "onnx_int8_calibrated")
CALIBRATION_IMAGES = 32  # the first images of the preset's train split
BATCH = 50


def _splits(preset: str, task: str, with_train: bool = False) -> dict[str, Any]:
    """The eval (and held-out, and with ``with_train`` train) splits of the shapes data the model's preset trains
    on."""
    from mm_hub.shapes import load_shapes

    saved = yaml.safe_load((ROOT / "training" / "configs" / f"{preset}.yaml").read_text())["data"]
    data = load_shapes(saved["dataset_config"], task)
    names = ("train", "eval", "heldout") if with_train else ("eval", "heldout")
    return {name: data[name] for name in names if name in data and len(data[name])}


def _batches(split: Any) -> list[list[dict[str, Any]]]:
    rows = list(split)
    return [rows[start:start + BATCH] for start in range(0, len(rows), BATCH)]


def classifier_accuracy(model: Any, processor: Any, split: Any) -> dict[str, float]:
    right = 0
    for rows in _batches(split):
        inputs = processor(images=[row["image"] for row in rows], text=[row["text"] for row in rows],
                           return_tensors="pt")
        with torch.no_grad():
            predicted = model(**inputs).logits.argmax(-1).numpy()
        right += int((predicted == np.array([row["label"] for row in rows])).sum())
    return {"accuracy": right / len(split)}


def retrieval_recall(model: Any, processor: Any, split: Any) -> dict[str, float]:
    from mm_hub.tasks import TASKS

    evaluation = TASKS["retrieval"].evaluation
    with torch.no_grad():
        parts = [evaluation.predict(model, processor, [{"image": row["image"], "text": row["captions"]}
                                                       for row in rows]) for rows in _batches(split)]
    return evaluation.score(parts)


def captioner_scores(model: Any, processor: Any, split: Any) -> dict[str, float]:
    from mm_hub.tasks import TASKS
    from mm_hub.tasks.generation import PAIR

    evaluation = TASKS["generation"].evaluation
    parts = []
    with torch.no_grad():
        for rows in _batches(split):
            parts.append(evaluation.predict(model, processor, [{"image": row["image"], "target": row["caption"],
                                                                PAIR: "none:caption"} for row in rows]))
            parts.append(evaluation.predict(model, processor, [
                {"image": row["image"], "text": row["question"], "target": row["answer"], PAIR: "question:answer"}
                for row in rows]))
    return evaluation.score(parts)


MODELS = {  # demo folder index -> (name, its preset, shapes task, scorer)
    0: ("classifier", "demo_classifier", "classification", classifier_accuracy),
    1: ("retrieval", "demo_retrieval", "retrieval", retrieval_recall),
    2: ("captioner", "demo_captioner", "captioning", captioner_scores),
}


def main(argv: list[str] | None = None) -> dict:
    """Score each demo model through each runtime; print and (with ``--out``) write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_onnx_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)
    from mm_hub.loading import load_model
    from mm_hub.onnx_serving import OnnxServedModel
    from mm_hub.export import export_onnx
    from training.demo_model import demo_models

    load_before = os.getloadavg()
    folders = demo_models()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mm_hub_bench_onnx_") as work:
        for index, (name, preset, shapes_task, scorer) in MODELS.items():
            model, processor = load_model(folders[index])
            splits = _splits(preset, shapes_task, with_train=True)
            started = time.perf_counter()
            export_onnx(folders[index], Path(work) / name, quantize="int8")
            results[name] = {"export_s": round(time.perf_counter() - started, 1)}
            export_onnx(folders[index], Path(work) / f"{name}_calibrated", quantize="int8",
                        calibration_images=splits.pop("train").select(range(CALIBRATION_IMAGES))["image"])
            served = {"torch": model,
                      "onnx_fp32": OnnxServedModel(model, Path(work) / name, quantized=False),
                      "onnx_int8": OnnxServedModel(model, Path(work) / name, quantized=True),
                      "onnx_int8_calibrated": OnnxServedModel(model, Path(work) / f"{name}_calibrated", quantized=True)}
            for split_name, split in splits.items():
                results[name][split_name] = {runtime: scorer(served[runtime], processor, split) for runtime in RUNTIMES}
                print(name, split_name, results[name][split_name], flush=True)
    return finish({**conditions("bench_onnx_accuracy", argv, load_before), "models": results}, args.out)


if __name__ == "__main__":
    main()
