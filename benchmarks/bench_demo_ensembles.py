"""What averaging two demo models buys: train the demo recipe with stage-1 seeds 0..N-1 (stage 2 with seed 0), then
score every member alone and every pair as an `MMHubEnsembleForImageTextClassification` (the demo model is the pair
of seeds 0 and 1) on the preset's eval and held-out splits and on a fresh draw of the shapes data. About 2.5 minutes
per member on 2 CPU cores; the README's "The demo model" quotes these runs.

    python -m benchmarks.bench_demo_ensembles --seeds 0 1 2 3 4 5 6 7 --out benchmarks/results_demo_ensembles.json
    python -m benchmarks.bench_demo_ensembles --work-dir /tmp/members   # keep the members; reruns reuse them
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_demo_seeds import (
    demo_parser,
    demo_shapes,
    fresh_draw,
    probabilities,
    run_and_report,
    train_pair,
)
from mm_hub import (
    AutoModelForImageTextClassification,
    MMHubEnsembleForImageTextClassification,
    MMHubProcessor,
)
from training.demo_model import STAGE1_SEEDS

SPLITS = ("preset_eval", "preset_heldout", "draw_eval", "draw_heldout")


def evaluation_splits(draw_seed: int, draw_size: int) -> dict[str, Any]:
    """The preset's own eval / held-out splits and a fresh draw's."""
    own, draw = demo_shapes(num_train=0), fresh_draw(draw_seed, draw_size)
    return {"preset_eval": own["eval"], "preset_heldout": own["heldout"],
            "draw_eval": draw["eval"], "draw_heldout": draw["heldout"]}


def run(
    seeds: list[int], draw_seed: int, draw_size: int, work: Path, stage1: dict | None = None, **stage2: Any
) -> dict[str, Any]:
    """Train (or reuse) one member per stage-1 seed (preset values replaced by ``stage1`` / ``stage2``); score
    members and pairs; return them with min / mean / max and how many reach 95 %."""
    splits = evaluation_splits(draw_seed, draw_size)
    labels = {name: torch.tensor(split["label"]) for name, split in splits.items()}
    folders, scores = {}, {}
    for seed in seeds:
        folder = work / f"stage2-seed{seed}-0"
        if not (folder / "eval_results.json").is_file():
            folder, _ = train_pair(seed, 0, work, stage1, **stage2)
        folders[seed] = folder
        model = AutoModelForImageTextClassification.from_pretrained(folder).eval()
        processor = MMHubProcessor.from_pretrained(folder)
        scores[seed] = {name: probabilities(model, processor, split) for name, split in splits.items()}

    def accuracy(probs: torch.Tensor, name: str) -> float:
        return int((probs.argmax(-1) == labels[name]).sum()) / len(labels[name])  # exact: 1900 / 2000 is 0.95

    members = [{"stage1_seed": s, **{n: accuracy(scores[s][n], n) for n in SPLITS}} for s in seeds]
    pairs = [{"stage1_seeds": [a, b], **{n: accuracy((scores[a][n] + scores[b][n]) / 2, n) for n in SPLITS}}
             for a, b in itertools.combinations(seeds, 2)]
    for row in members + pairs:
        print(json.dumps(row), flush=True)
    shipped = list(STAGE1_SEEDS)
    if set(shipped) <= set(seeds):  # the averaged scores above are what the ensemble class computes
        model = MMHubEnsembleForImageTextClassification.from_members(
            [AutoModelForImageTextClassification.from_pretrained(folders[s]) for s in shipped]
        )
        processor = MMHubProcessor.from_pretrained(folders[shipped[0]])
        row = next(p for p in pairs if p["stage1_seeds"] == shipped)
        for name, split in splits.items():
            assert abs(accuracy(probabilities(model, processor, split), name) - row[name]) < 1e-9, name

    def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
        return {n: {"min": min(r[n] for r in rows), "mean": statistics.fmean(r[n] for r in rows),
                    "max": max(r[n] for r in rows), "at_least_95": sum(r[n] >= 0.95 for r in rows)} for n in SPLITS}

    return {"draw_seed": draw_seed, "draw_size": draw_size, "members": members, "pairs": pairs,
            "summary": {"members": summary(members), "pairs": summary(pairs)}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; prints one JSON line per member and pair, then the summary."""
    parser = demo_parser(__doc__, "Where the members go (default: a temporary folder, removed at the end); members "
                                  "already trained there are reused.")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)), help="Stage-1 seeds (default 0-7).")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds needs two or more seeds to form a pair.")
    return run_and_report(args, lambda work: run(args.seeds, args.draw_seed, args.draw_size, work))


if __name__ == "__main__":
    main()
