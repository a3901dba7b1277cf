"""Memory of the app under hostile and normal requests: each request's own peak, the peak of a mixed load, and what
stays resident after it. `tests/test_app_memory.py` runs it on a tiny model with a short time bound.

    python -m benchmarks.bench_app_memory --out benchmarks/results_app_memory.json   # the demo models, 60 s of load
    python -m benchmarks.bench_app_memory --model DIR --seconds 10

It runs ``python app.py`` in a subprocess and reads its memory from ``/proc`` (Linux):

1. **One at a time**: every hostile upload of `benchmarks.hostile.hostile_uploads` (bombs, containers, the largest
   accepted images), an oversized request body and a normal request, each to ``/classify`` and ``/explain`` with the
   process's peak reset before it: each request's own peak (VmHWM minus VmRSS before it) against the budget.
2. **Mixed**: ``--clients`` threads send a seeded random mix of those requests (half of them normal) for
   ``--seconds``; every answer is checked (a hostile request must be refused with its message, a normal one must
   succeed), and the process's peak and resident memory are read before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from benchmarks.hostile import RETAINED_BUDGET_MB, UPLOAD_BUDGET_MB, AppProcess, hostile_uploads, png_bytes

NORMAL = "normal"
BIG_BODY = "100 MB text body"


def _scene() -> bytes:
    return png_bytes(Image.new("RGB", (48, 40), (200, 30, 30)))


ENDPOINTS = ("classify", "explain")  # explain runs the model most (ablations, leave-one-out)


class Requests:
    """The requests the benchmark sends, by name: `send` makes one and says whether the app answered as it must."""

    def __init__(self, app: AppProcess):
        self.app = app
        self.files = {NORMAL: (_scene(), "complete"), **hostile_uploads()}
        self.big_body = ('{"data": [null, "' + "x" * 100_000_000 + '"]}').encode()

    @property
    def names(self) -> list[str]:
        return [*self.files, BIG_BODY]

    def send(self, name: str, endpoint: str = "classify") -> str | None:
        """Make request ``name`` to ``endpoint``; None when the app answered as it must, else what went wrong."""
        if name == BIG_BODY:
            answer = httpx.post(f"{self.app.url}/gradio_api/call/{endpoint}", content=self.big_body, timeout=120,
                                headers={"Content-Type": "application/json"})
            return None if answer.status_code == 413 else f"{name}: HTTP {answer.status_code}, not 413"
        content, expected = self.files[name]
        kind, answer = self.app.call(endpoint, self.app.upload(content, name), "a red square")
        if (kind == "complete") if expected == "complete" else (kind == "error" and expected in str(answer)):
            return None
        return f"{name} /{endpoint}: {kind} {str(answer)[:200]}"


def one_at_a_time(requests: Requests) -> dict[str, dict[str, Any]]:
    """Each request alone to each of `ENDPOINTS`, the peak reset before it: ``{"name /endpoint": {"peak_mb",
    "problem"}}``."""
    rows = {}
    for name in requests.names:
        for endpoint in ENDPOINTS:
            requests.app.reset_peak()
            before = requests.app.rss_mb()
            problem = requests.send(name, endpoint)
            rows[f"{name} /{endpoint}"] = {"peak_mb": round(requests.app.peak_rss_mb() - before, 1),
                                           "problem": problem}
    return rows


def mixed(requests: Requests, clients: int, seconds: float, seed: int = 0) -> dict[str, Any]:
    """``clients`` threads sending a random mix (half of them normal requests, to a random endpoint of `ENDPOINTS`)
    until ``seconds`` have passed; ``{"requests", "by_kind", "problems", "problem_examples"}``."""
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    problems: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed + index)
        hostile = [name for name in requests.names if name != NORMAL]
        while time.monotonic() < deadline:
            name = NORMAL if rng.random() < 0.5 else rng.choice(hostile)
            try:
                problem = requests.send(name, rng.choice(ENDPOINTS))
            except httpx.HTTPError as error:
                problem = f"{name}: {type(error).__name__}: {error}"
            with lock:
                counts[name] = counts.get(name, 0) + 1
                if problem:
                    problems.append(problem)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"requests": sum(counts.values()), "by_kind": counts, "problems": len(problems),
            "problem_examples": problems[:5]}


def measure(model: str | None, seconds: float, clients: int, seed: int = 0, idle: float = 5.0) -> dict[str, Any]:
    """Run both phases against ``python app.py [--model model]``; see the module docstring."""
    with tempfile.TemporaryDirectory() as workdir:
        app = AppProcess(model, Path(workdir))
        try:
            requests = Requests(app)
            for _ in range(2):  # warm: every code path has run, the first allocations are made
                requests.send(NORMAL)
            start_mb = app.rss_mb()
            alone = one_at_a_time(requests)
            app.reset_peak()
            mix = mixed(requests, clients, seconds, seed)
            mix_peak = app.peak_rss_mb()
            time.sleep(idle)
            for _ in range(3):
                requests.send(NORMAL)
            end_mb = app.rss_mb()
        finally:
            app.stop()
    worst = max(alone, key=lambda name: alone[name]["peak_mb"])
    return {
        "model": model or "the demo models",
        "start_rss_mb": round(start_mb, 1),
        "one_at_a_time": alone,
        "largest_request_peak_mb": alone[worst]["peak_mb"],
        "largest_request": worst,
        "mixed": {**mix, "clients": clients, "seconds": seconds, "peak_rss_mb": round(mix_peak, 1),
                  "peak_over_start_mb": round(mix_peak - start_mb, 1)},
        "end_rss_mb": round(end_mb, 1),
        "retained_mb": round(end_mb - start_mb, 1),
        "problems": sum(1 for row in alone.values() if row["problem"]) + mix["problems"],
        "targets": {"request_peak_mb": UPLOAD_BUDGET_MB, "retained_mb": RETAINED_BUDGET_MB},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (and with ``--out`` write) its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or Hub id (default: the demo models)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the mixed load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results, the command and the machine to this JSON file")
    args = parser.parse_args(argv)
    from benchmarks._run import conditions, finish

    load_before = os.getloadavg()
    results = measure(args.model, args.seconds, args.clients, args.seed)
    results = {**conditions("bench_app_memory", argv, load_before), **results}
    finish(results, args.out)
    print(f"largest request peak {results['largest_request_peak_mb']:.0f} MB ({results['largest_request']}; budget "
          f"{UPLOAD_BUDGET_MB}), mixed load of {results['mixed']['requests']} requests peaked "
          f"{results['mixed']['peak_over_start_mb']:.0f} MB over the start, {results['retained_mb']:.0f} MB retained "
          f"(budget {RETAINED_BUDGET_MB}), {results['problems']} problems")
    return results


if __name__ == "__main__":
    main()
