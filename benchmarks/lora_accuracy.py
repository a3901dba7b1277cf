"""LoRA against full fine-tuning at the same steps, on the fusion table's two tasks (shapes, digits), with towers of
the pretrained shapes: the pretrained all-MiniLM-L6-v2 (shipped offline) and a ResNet-18 (random init: no pretrained
vision weights can be fetched here), concat fusion, the classification preset.

    python -m benchmarks.lora_accuracy --out benchmarks/results_lora_accuracy.json   # ~1 h on 2 cores
    python -m benchmarks.lora_accuracy --quick                                         # tiny towers (the test)

Rows: ``full fine-tuning`` (every weight trains) and ``LoRA`` (``--lora``: rank 8 on MiniLM's attention projections;
the new ResNet, projections, fusion and head train fully, as `mm_hub.lora` trains a tower built from a config;
merged for scoring); same data, steps, learning rates and seed. Scored on the eval split and the task's second split
(held-out pairs / unseen digits). A run whose folder in ``--work-dir`` already holds its results is read, not
trained again (a killed benchmark resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks._run import conditions, finish
from benchmarks.fusion_table import QUICK_TASKS, TASKS, _end_with_parent, _quiet, make_task_data
from mm_hub.model.configuration_mm_hub import RESNET18_KWARGS

ROWS = {"full fine-tuning": {}, "LoRA": {"lora": True, "merge_lora": True}}
STEPS, QUICK_STEPS = 600, 2
CHANGES = {"eval_strategy": "no", "logging_steps": 1000, "max_length": 16, "augment": False,
           "early_stopping_patience": None, "fusion_type": "concat", "vision_config": RESNET18_KWARGS}
QUICK_CHANGES = {"vision_config": {"layer_type": "basic", "depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8},
                 "fusion_hidden_size": 16, "fusion_num_heads": 2, "batch_size": 4, "eval_batch_size": 16}


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (task, row, seed) in this process; returns its accuracies, trained parameters and training time."""
    from training.config import read_preset
    from training.train import run_training

    _quiet()
    spec = job["spec"]
    output = Path(job["work"]) / f"{job['task']}-{job['row'].replace(' ', '-')}-seed{job['seed']}"
    config = read_preset("classification").replace(
        **{**CHANGES, **job["changes"]}, **ROWS[job["row"]], dataset=str(Path(job["folder"]) / "data"),
        dataset_config=None, train_split="train", eval_split="eval", extra_eval_splits=[spec["extra_split"]],
        image_size=spec["image_size"], max_steps=job["steps"], seed=job["seed"], progress=False,
        output_dir=str(output))
    if not (output / "eval_results.json").is_file():
        run_training(config)
    metrics = json.loads((output / "eval_results.json").read_text())
    info = json.loads((output / "training_info.json").read_text())
    return {"task": job["task"], "row": job["row"], "seed": job["seed"],
            "accuracy": {split: metrics[f"{split}_accuracy"] for split in ("eval", spec["extra_split"])},
            "trained_parameters": info["trainable_parameters"], "total_parameters": info["total_parameters"],
            "train_s": info["train_runtime_s"]}


def run(seeds: list[int], workers: int, quick: bool, work: Path) -> dict[str, Any]:
    """Make both tasks' data, train every (task, row, seed) ``workers`` at a time, and summarise per task and row:
    mean accuracy per split over the seeds, and LoRA's gap to full fine-tuning in points."""
    tasks = QUICK_TASKS if quick else TASKS
    _quiet()
    folders = {task: make_task_data(task, spec, work / task) for task, spec in tasks.items()}
    jobs = [{"task": task, "row": row, "seed": seed, "spec": spec, "folder": str(folders[task]),
             "work": str(work / "runs"), "steps": QUICK_STEPS if quick else STEPS,
             "changes": QUICK_CHANGES if quick else {}}
            for seed in seeds for task, spec in reversed(tasks.items()) for row in ROWS]  # digits first
    started, runs = time.perf_counter(), []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_end_with_parent) as pool:
        for result in pool.map(train_one, jobs):
            runs.append(result)
            print(f"{result['task']:7s} {result['row']:17s} seed {result['seed']}: "
                  + ", ".join(f"{s} {100 * a:.1f} %" for s, a in result["accuracy"].items())
                  + f" ({result['train_s']:.0f} s)", file=sys.stderr, flush=True)
    table: dict[str, Any] = {}
    for task, spec in tasks.items():
        splits = ("eval", spec["extra_split"])
        rows = {row: [r for r in runs if r["task"] == task and r["row"] == row] for row in ROWS}
        table[task] = {"splits": list(splits), "rows": {row: {
            "mean": {s: statistics.fmean(r["accuracy"][s] for r in mine) for s in splits},
            "trained_parameters": mine[0]["trained_parameters"], "total_parameters": mine[0]["total_parameters"],
            "train_s": statistics.fmean(r["train_s"] for r in mine)} for row, mine in rows.items()}}
        full, lora = (table[task]["rows"][row]["mean"] for row in ROWS)
        table[task]["lora_minus_full_points"] = {s: 100 * (lora[s] - full[s]) for s in splits}
    return {"steps": QUICK_STEPS if quick else STEPS, "changes": CHANGES, "seeds": seeds, "workers": workers,
            "wall_s": time.perf_counter() - started, "table": table, "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m benchmarks.lora_accuracy``: train both rows on both tasks; print (with --out, write) the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Seeds per row (default: 0).")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="Runs trained at once, one thread each (default: 2).")
    parser.add_argument("--quick", action="store_true", help="Tiny towers, data and budgets: checks the plumbing.")
    parser.add_argument("--work-dir", default=None, help="Where data and runs go (default: a temporary folder).")
    parser.add_argument("--out", default=None, help="Write the results JSON here.")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm_hub-lora-") as scratch:
        results = run(args.seeds, args.workers, args.quick, Path(args.work_dir or scratch))
    return finish({**conditions("lora_accuracy", argv, load_before), **results}, args.out)


if __name__ == "__main__":
    main()
