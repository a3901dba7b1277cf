"""How much the demo recipe's accuracy depends on its seeds: for each (stage-1 seed, stage-2 seed) pair, train both
demo presets (`training/configs/demo_retrieval.yaml`, then `demo.yaml`) and score the model on the preset's own eval
and held-out splits and on a fresh draw of the shapes data. About 2.5 minutes per pair on 2 CPU cores; the README's
"The demo model" quotes these runs.

    python benchmarks/bench_demo_seeds.py                       # pairs 0:0 0:1 0:2 1:0 2:0, fresh draw with seed 2
    python benchmarks/bench_demo_seeds.py --pairs 0:0 3:0 --draw-seed 1 --out benchmarks/results_demo_seeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mm_hub import AutoModelForImageTextClassification, MMHubProcessor
from mm_hub._files import write_json
from mm_hub.shapes import make_shapes_dataset, parse_shapes_config
from training.config import read_preset
from training.demo_model import DEMO_PRESET, train_stages


def demo_shapes(**changes: Any) -> Any:
    """The demo preset's shapes data (its image size, caption mix and split sizes), with ``changes`` to the
    `make_shapes_dataset` arguments."""
    spec = parse_shapes_config(read_preset(DEMO_PRESET).data.dataset_config)
    return make_shapes_dataset(**{**spec, "task": "classification", **changes})


def fresh_draw(seed: int, size: int) -> Any:
    """The demo preset's shapes data drawn again with another dataset seed: ``size`` eval and ``size`` held-out
    captions."""
    return demo_shapes(seed=seed, num_train=0, num_eval=size, num_heldout=size)


def probabilities(model: torch.nn.Module, processor: MMHubProcessor, split: Any, batch_size: int = 500) -> torch.Tensor:
    """(rows, labels) softmax scores of ``model`` on ``split``'s (image, text) rows."""
    scores = []
    for start in range(0, len(split), batch_size):
        rows = split[start : start + batch_size]
        inputs = processor(images=rows["image"], text=rows["text"], return_tensors="pt")
        with torch.no_grad():
            scores.append(model(**inputs).logits.softmax(-1))
    return torch.cat(scores)


def accuracy(folder: Path, split: Any) -> float:
    """Share of ``split``'s (image, text) rows whose label the model in ``folder`` predicts."""
    model = AutoModelForImageTextClassification.from_pretrained(folder).eval()
    predicted = probabilities(model, MMHubProcessor.from_pretrained(folder), split).argmax(-1)
    return int((predicted == torch.tensor(split["label"])).sum()) / len(split)


def train_pair(
    stage1_seed: int, stage2_seed: int, work: Path, stage1: dict | None = None, **stage2: Any
) -> tuple[Path, dict[str, float]]:
    """Train stage 1 with ``stage1_seed`` (pairs sharing it share the run), then stage 2 on it with ``stage2_seed``
    (preset values replaced by ``stage1`` / ``stage2``); returns the stage-2 folder and its eval metrics."""
    second = work / f"stage2-seed{stage1_seed}-{stage2_seed}"
    metrics = train_stages(
        work / f"stage1-seed{stage1_seed}", second, progress=False,
        stage1={**(stage1 or {}), "seed": stage1_seed}, **{**stage2, "seed": stage2_seed},
    )
    return second, metrics


def run(
    pairs: list[tuple[int, int]], draw_seed: int, draw_size: int, work: Path, stage1: dict | None = None, **stage2: Any
) -> dict[str, Any]:
    """Train and score every pair; returns per-pair accuracies and their min / mean / max."""
    draw = fresh_draw(draw_seed, draw_size)
    runs = []
    for stage1_seed, stage2_seed in pairs:
        folder, metrics = train_pair(stage1_seed, stage2_seed, work, stage1, **stage2)
        result = {
            "stage1_seed": stage1_seed,
            "stage2_seed": stage2_seed,
            "preset_eval": metrics.get("eval_accuracy"),
            "preset_heldout": metrics.get("heldout_accuracy"),
            "draw_eval": accuracy(folder, draw["eval"]),
            "draw_heldout": accuracy(folder, draw["heldout"]),
        }
        print(json.dumps(result), flush=True)
        runs.append(result)
    summary = {}
    for key in ("preset_eval", "preset_heldout", "draw_eval", "draw_heldout"):
        values = [result[key] for result in runs if result[key] is not None]
        if values:
            summary[key] = {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}
    return {"draw_seed": draw_seed, "draw_size": draw_size, "runs": runs, "summary": summary}


def parse_pair(text: str) -> tuple[int, int]:
    """``"1:0"`` -> ``(1, 0)``: stage-1 seed, stage-2 seed."""
    try:
        first, second = text.split(":")
        return int(first), int(second)
    except ValueError:
        raise argparse.ArgumentTypeError(f"A pair is STAGE1_SEED:STAGE2_SEED, e.g. 1:0; got {text!r}.") from None


def demo_parser(description: str, work_help: str) -> argparse.ArgumentParser:
    """A parser with the options the demo benchmarks share: the fresh draw, the work folder and the output file."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draw-seed", type=int, default=2, help="Dataset seed of the fresh draw (the presets use 0).")
    parser.add_argument("--draw-size", type=int, default=2000, help="Eval and held-out captions in the fresh draw.")
    parser.add_argument("--work-dir", help=work_help)
    parser.add_argument("--out", help="Also write the results to this JSON file.")
    return parser


def run_and_report(args: argparse.Namespace, run_in: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``run_in(work folder)`` (``--work-dir`` or a temporary one), then print its summary and write ``--out``."""
    with tempfile.TemporaryDirectory() as scratch:
        results = run_in(Path(args.work_dir or scratch))
    print(json.dumps(results["summary"], indent=2))
    if args.out:
        write_json(args.out, results)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; prints one JSON line per pair, then the summary."""
    parser = demo_parser(__doc__, "Where the models go (default: a temporary folder, removed at the end).")
    parser.add_argument("--pairs", nargs="+", type=parse_pair, default=[(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)],
                        help="STAGE1_SEED:STAGE2_SEED pairs to train (default: 0:0 0:1 0:2 1:0 2:0).")
    args = parser.parse_args(argv)
    return run_and_report(args, lambda work: run(args.pairs, args.draw_seed, args.draw_size, work))


if __name__ == "__main__":
    main()
