"""How long `python app.py` takes to serve, as a new user first runs it: empty mm_hub and datasets caches, so the
demo models are trained; then a second start on the filled caches. Each start is timed from launching the process
to the line "Running on local URL"; the served tabs' endpoints and the demo models' evaluations are recorded.

    python -m benchmarks.bench_first_start --out benchmarks/results_first_start.json
    python -m benchmarks.bench_first_start --quick    # only the second start, on a demo trained tiny
    python -m benchmarks.bench_first_start --quick --cache DIR   # ... on the demo an mm_hub cache DIR holds (the test)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._run import conditions, finish

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"Running on local URL:\s+(\S+)")
# The demo presets shrunk to seconds, for --quick (as the tests train it).
TINY_DEMO = {
    "max_steps": 2, "eval_strategy": "no", "dataset_config": "num_train=16,num_eval=8,num_heldout=8,image_size=48",
    "stage1": {"max_steps": 2, "dataset_config": "num_train=16,num_eval=8,num_heldout=0,image_size=48"},
    "captioner": {"max_steps": 2, "dataset_config": "num_train=16,num_eval=8,num_heldout=8,image_size=48",
                  "generation_max_new_tokens": 4},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(mm_hub_cache: Path, datasets_cache: Path, timeout: float) -> dict:
    """Run ``python app.py`` with these caches until it serves; returns the seconds it took and the endpoints it
    lists, then stops it. RuntimeError with the end of its output when it exits or times out first."""
    from gradio_client import Client

    env = {**os.environ, "MM_HUB_CACHE": str(mm_hub_cache), "HF_DATASETS_CACHE": str(datasets_cache)}
    for name in ("MM_HUB_MODEL", "MM_HUB_REVISION", "MM_HUB_DATASET"):
        env.pop(name, None)
    command = [sys.executable, "-u", "app.py", "--port", str(_free_port())]
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            while True:
                log.seek(0)
                found = READY.search(log.read())
                if found or process.poll() is not None or time.perf_counter() - started > timeout:
                    break
                time.sleep(0.2)
            seconds = time.perf_counter() - started
            if not found:
                log.seek(0)
                raise RuntimeError(f"python app.py did not serve within {timeout:.0f} s:\n{log.read()[-3000:]}")
            api = Client(found.group(1), verbose=False).view_api(print_info=False, return_format="dict")
        finally:
            process.terminate()
            process.wait(timeout=60)
    return {"seconds": round(seconds, 1), "endpoints": sorted(api["named_endpoints"])}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and (with ``--out``) write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_first_start", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the second start, on a demo trained tiny")
    parser.add_argument("--cache", type=Path, help="with --quick: an mm_hub cache folder whose demo is trained")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a start may take")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm_hub_bench_first_start_") as work:
        mm_hub_cache, datasets_cache = (args.cache if args.quick and args.cache else Path(work) / "mm_hub"), Path(work)
        first = None
        if not args.quick:
            first = start_app(mm_hub_cache, datasets_cache, args.timeout)
        elif args.cache is None:
            from training.demo_model import ensure_demo_model

            ensure_demo_model(mm_hub_cache, progress=False, **TINY_DEMO)
        second = start_app(mm_hub_cache, datasets_cache, args.timeout)
        demo = mm_hub_cache / "demo-model"
        measured = {name: json.loads((demo / sub / "eval_results.json").read_text())
                    for name, sub in (("classifier", ""), ("retrieval", "retrieval"), ("captioner", "captioner"))}
    results = {
        **conditions("bench_first_start", argv, load_before),
        "first_start_s": first and first["seconds"],
        "second_start_s": second["seconds"],
        "endpoints": second["endpoints"],
        "demo_models_eval": measured,  # what each served demo model measured in training (its eval_results.json)
    }
    return finish(results, args.out)


if __name__ == "__main__":
    main()
