"""Load on the Gradio app: N concurrent `gradio_client` clients each send M `/classify` requests; reports errors and
latency percentiles. `tests/test_app_load.py` runs it on a tiny model with a time bound.

    python -m benchmarks.bench_app_load --out benchmarks/results_app_load.json   # the demo model, 8 x 25 requests
    python -m benchmarks.bench_app_load --runtime torch onnx   # the app on torch, then on ONNX Runtime, one run
    python -m benchmarks.bench_app_load --model org/name --clients 4 --requests 10
    python -m benchmarks.bench_app_load --url http://127.0.0.1:7860/   # an app that is already running
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_load(url: str, image_path: str, text: str, clients: int = 8, requests: int = 25) -> dict:
    """Send ``clients`` x ``requests`` ``/classify`` calls, each client on its own thread and connection.

    Returns:
        ``{"requests", "errors", "error_messages", "p50_s", "p95_s", "max_s", "wall_s", "throughput_rps"}``.
    """
    from gradio_client import Client, handle_file

    def one_client(_: int) -> tuple[list[float], list[str]]:
        client = Client(url, verbose=False)
        latencies, errors = [], []
        for _ in range(requests):
            start = time.perf_counter()
            try:
                client.predict(handle_file(image_path), text, api_name="/classify")
                latencies.append(time.perf_counter() - start)
            except Exception as error:  # counted and reported: the point is to see whether any request fails
                errors.append(f"{type(error).__name__}: {error}")
        return latencies, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - started
    latencies = sorted(t for times, _ in results for t in times)
    errors = [message for _, messages in results for message in messages]
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {
        "requests": clients * requests,
        "errors": len(errors),
        "error_messages": errors[:5],
        "p50_s": statistics.median(latencies) if latencies else float("nan"),
        "p95_s": quantiles[18] if latencies else float("nan"),
        "max_s": latencies[-1] if latencies else float("nan"),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
    }


def classify_ms(model: str | None, runtime: str, image_path: str, text: str, calls: int = 50) -> float:
    """Milliseconds of one `Predictor.classify` in this process (the model's share of a request), median of
    ``calls``."""
    from PIL import Image

    from mm_hub.predictor import Predictor
    from training.demo_model import demo_models

    predictor = Predictor.from_pretrained(model or demo_models()[0])
    if runtime == "onnx":
        predictor.use_onnx()
    with Image.open(image_path) as image:
        image.load()
        predictor.classify(image, text)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            predictor.classify(image, text)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Serve the app in this process (unless ``--url``) and print the load results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Hub id or folder (default: the demo model)")
    parser.add_argument("--url", help="load an app that is already running instead")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--runtime", nargs="+", default=["torch"], choices=["torch", "onnx"],
                        help="serve the model with torch and/or from its ONNX export (app.py --runtime), in turn")
    parser.add_argument("--out", help="write the results, the command and the machine to this JSON file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._run import conditions
    from mm_hub._files import write_json
    from mm_hub.examples import shapes_examples

    image_path, text, _ = shapes_examples()[0]
    results = {}
    for runtime in args.runtime:
        demo = None
        if args.url is None:
            import app

            demo = app.create_demo(model=args.model, runtime=runtime)
            app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        try:
            result = results[runtime] = run_load(args.url or demo.local_url, image_path, text, args.clients,
                                                 args.requests)
        finally:
            if demo is not None:
                demo.close()
        print(
            f"{runtime}: {result['requests']} requests from {args.clients} clients: {result['errors']} errors, "
            f"p50 {result['p50_s'] * 1000:.0f} ms, p95 {result['p95_s'] * 1000:.0f} ms, "
            f"max {result['max_s'] * 1000:.0f} ms, {result['throughput_rps']:.1f} req/s ({result['wall_s']:.1f} s)"
        )
        for message in result["error_messages"]:
            print("  error:", message)
        if args.url is None:
            result["classify_ms"] = classify_ms(args.model, runtime, image_path, text)
            print(f"  Predictor.classify alone: {result['classify_ms']:.1f} ms")
    if args.out:
        first = results[args.runtime[0]]
        record = {
            **conditions("bench_app_load", argv, load_before),
            "model": args.model or args.url or "the demo model",
            "clients": args.clients,
            "runtime": args.runtime[0],
            **first,
        }
        if len(results) > 1:  # the same load on each runtime, one after the other in this process
            record["runtimes"] = results
        write_json(args.out, record)


if __name__ == "__main__":
    main()
