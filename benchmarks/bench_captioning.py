"""The captioning preset, timed and scored: ``python -m training.train --config training/configs/captioning.yaml`` in a
fresh process with an empty datasets cache, as a user first runs it; writes its wall time and evaluation.

    python -m benchmarks.bench_captioning --out benchmarks/results_captioning.json
    python -m benchmarks.bench_captioning --quick          # a few steps on a few scenes (what the test runs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._run import conditions, finish

ROOT = Path(__file__).resolve().parents[1]
PRESET = "training/configs/captioning.yaml"
QUICK = ["--max-steps", "3", "--dataset-config", "num_train=16,num_eval=8,num_heldout=8,image_size=48",
         "--generation-max-new-tokens", "6"]


def run(extra: list[str], work: Path) -> dict:
    """Train the preset (with ``extra`` flags) into ``work`` in a new Python process; returns what it measured."""
    command = [sys.executable, "-m", "training.train", "--config", PRESET, "--output-dir", str(work / "model"),
               "--no-progress", *extra]
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "datasets")}  # rendered afresh, as on a first run
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    info = json.loads((work / "model" / "training_info.json").read_text())
    return {"wall_s": round(wall, 1), "train_runtime_s": round(info["train_runtime_s"], 1),
            "train_rows": info["num_train_examples"], "metrics": info["metrics"]}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and (with ``--out``) write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_captioning", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps on a few scenes")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm_hub_bench_captioning_") as work:
        measured = run(QUICK if args.quick else [], Path(work))
    return finish({**conditions("bench_captioning", argv, load_before), "preset": PRESET, **measured}, args.out)


if __name__ == "__main__":
    main()
