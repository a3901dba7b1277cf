"""The fusion table of generation: every registered fusion as the encoder of one model that captions and answers
questions, and the levers tried for unseen colour+shape pairs, over three seeds.

    python -m benchmarks.fusion_table --task generation --out benchmarks/results_generation_table.json  # ~40 min
    python -m benchmarks.fusion_table --task generation --quick                                         # the test

Every row trains the captioning preset (`training/configs/captioning.yaml`: a small random-init ResNet, a BiLSTM over
MiniLM's frozen word embeddings, a 2-layer decoder) on the same shapes scenes, each giving two examples (the caption
without a prompt, and a question with its answer: ``--target-pairs none:caption question:answer``), with the same
step budget; only the fusion that makes the decoder's memory, or one lever (`LEVERS`), changes. Scored on the ``eval``
scenes and on the ``heldout`` scenes, each holding a colour+shape pair no training scene holds: the captions'
structural F1 (colour, shape, position triples right) and the answers' exact match.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

PRESET = "captioning"
DATA = "num_train=4000,num_eval=200,num_heldout=200,image_size=48"  # the demo captioner's 4,000 scenes
PAIRS = ["none:caption", "question:answer"]
METRICS = {"caption F1": "caption_structural_f1", "answer EM": "answer_exact_match"}
SPLITS = ("eval", "heldout")
# Rows beside the fusions: a change to the preset (on its own fusion), tried for the held-out pairs.
LEVERS: dict[str, dict[str, Any]] = {
    "decoder token dropout 0.7": {"decoder_token_dropout": 0.7},
}
QUICK = {"dataset_config": "num_train=16,num_eval=8,num_heldout=8,image_size=48", "max_steps": 2,
         "generation_max_new_tokens": 6, "vision_config": {"layer_type": "basic", "depths": [1], "hidden_sizes": [8],
                                                          "embedding_size": 8},
         "lstm_hidden_size": 8, "fusion_hidden_size": 16, "fusion_num_heads": 2, "decoder_hidden_size": 16,
         "decoder_num_heads": 2, "decoder_num_layers": 1}


def rows() -> dict[str, dict[str, Any]]:
    """The table's rows: one per registered fusion, then the `LEVERS` (on the preset's fusion)."""
    from mm_hub import FUSION_REGISTRY
    from training.config import read_preset

    own = read_preset(PRESET).model.fusion_type
    return {**{name: {"fusion_type": name} for name in FUSION_REGISTRY},
            **{f"{own} + {lever}": {"fusion_type": own, **change} for lever, change in LEVERS.items()}}


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (row, seed) in this process; returns its scores and training time."""
    from benchmarks.fusion_table import _quiet
    from training.config import read_preset
    from training.train import run_training

    _quiet()
    output = Path(job["work"]) / f"{job['row'].replace(' ', '-')}-seed{job['seed']}"
    config = read_preset(PRESET).replace(**{
        "dataset_config": DATA, "target_pairs": PAIRS, **job["changes"], **job["quick"], "seed": job["seed"],
        "progress": False, "output_dir": str(output), "torch_threads": 1,
    })
    metrics = run_training(config)
    info = json.loads((output / "training_info.json").read_text())
    return {"row": job["row"], "seed": job["seed"], "train_s": info["train_runtime_s"],
            "scores": {name: {split: metrics.get(f"{split}_{key}", 0.0) for split in SPLITS}
                       for name, key in METRICS.items()}}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row: each score's mean and std over seeds per split, and the mean training time."""
    table = {}
    for row in dict.fromkeys(run["row"] for run in runs):
        mine = [run for run in runs if run["row"] == row]
        table[row] = {"seeds": [run["seed"] for run in mine], "train_s": statistics.fmean(r["train_s"] for r in mine),
                      **{name: {split: {"mean": statistics.fmean(v := [r["scores"][name][split] for r in mine]),
                                        "std": statistics.stdev(v) if len(v) > 1 else 0.0} for split in SPLITS}
                         for name in METRICS}}
    return table


def run(seeds: list[int], workers: int, quick: bool, work: Path) -> dict[str, Any]:
    """Train every (row, seed), ``workers`` at a time, seed by seed with the rows interleaved; summarise."""
    from benchmarks.fusion_table import _end_with_parent

    jobs = [{"row": row, "changes": changes, "seed": seed, "work": str(work), "quick": QUICK if quick else {}}
            for seed in seeds for row, changes in rows().items()]
    started, runs = time.perf_counter(), []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_end_with_parent) as pool:
        for result in pool.map(train_one, jobs):
            runs.append(result)
            print(f"{result['row']:32s} seed {result['seed']}: " + ", ".join(
                f"{name} {split} {100 * result['scores'][name][split]:.1f}" for name in METRICS for split in SPLITS)
                  + f" ({result['train_s']:.0f} s)", file=sys.stderr, flush=True)
    table = summarise(runs)
    best = max(table, key=lambda row: table[row]["caption F1"]["heldout"]["mean"])
    return {"task": "generation", "preset": PRESET, "data": DATA, "pairs": PAIRS, "workers": workers,
            "wall_s": time.perf_counter() - started, "table": table, "best_heldout_caption_row": best, "runs": runs}


__all__ = ["LEVERS", "METRICS", "rows", "run"]
