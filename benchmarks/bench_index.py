"""Scale benchmark of mm_hub's FAISS index types: recall@10 of the approximate indexes against exact search, query
latency, build time and memory, at 100k and 1M synthetic embeddings.

    python benchmarks/bench_index.py                       # 100k and 1M vectors, dim 256, flat / ivf / hnsw
    python benchmarks/bench_index.py --sizes 20000 --dim 64  # quick look

The indexes are exactly those `MultimodalIndex.build(..., index_type=...)` makes (`mm_hub.faiss_index`, default
parameters). Data: unit vectors in 2,000 Gaussian clusters (real image/text embeddings are clustered, and uniform
random vectors are the unrealistic worst case for any approximate index); queries are 1,000 fresh draws from the
same distribution, not in the index. Latency: one query at a time on one thread (p50 / p95, as a search box issues
them); throughput: the 1,000 queries as one batch on all threads. Memory: the serialised index size (what the
index holds in RAM) and the process's peak RSS. Results go to ``benchmarks/results_index.json``; the README quotes
them with the machine load recorded there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from mm_hub._files import write_json
from mm_hub.faiss_index import INDEX_TYPES, configure_faiss_index, new_faiss_index

RESULTS = Path(__file__).with_name("results_index.json")


def clustered_unit_vectors(
    num: int,
    dim: int,
    num_clusters: int,
    rng: np.random.Generator,
    centers: np.ndarray | None = None,
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(num, dim) float32 unit vectors around ``num_clusters`` random unit centres, plus Gaussian noise of norm
    ~``noise`` (1.0: two points of one cluster have cosine ~0.5, of different clusters ~0, so clusters overlap
    and the exact top 10 depend on the noise, as with real embeddings); returns (vectors, centres)."""
    if centers is None:
        centers = rng.standard_normal((num_clusters, dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((num, dim), dtype=np.float32)
    for start in range(0, num, 100_000):  # in blocks, to keep the temporaries small at 1M
        end = min(start + 100_000, num)
        block = centers[rng.integers(0, num_clusters, end - start)]
        block += rng.standard_normal(block.shape, dtype=np.float32) * (noise / np.sqrt(dim))
        out[start:end] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, centers


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k contains."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(
    index_type: str,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray | None,
    k: int,
    latency_queries: int,
    threads: int,
    sweep: dict[str, list[int]] | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Build one index over ``data`` and measure it; returns (row of results, its top-k ids for the queries)."""
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index, params = new_faiss_index(data, index_type)
    for start in range(0, len(data), 100_000):
        index.add(data[start : start + 100_000])
    build_s = time.perf_counter() - started
    index_bytes = faiss.serialize_index(index).nbytes
    # The query-time knob of each type (HNSW ef_search, IVF nprobe): the default first, then any swept values.
    knob = {"hnsw": "ef_search", "ivf": "nprobe"}.get(index_type)
    values = [params.get(knob)] + [v for v in (sweep or {}).get(knob, []) if v != params.get(knob)]
    rows, first_found = [], None
    for value in values:
        run_params = dict(params, **({knob: value} if knob else {}))
        configure_faiss_index(index, run_params)
        started = time.perf_counter()
        _, found = index.search(queries, k)  # batch, all threads
        batch_s = time.perf_counter() - started
        first_found = found if first_found is None else first_found
        faiss.omp_set_num_threads(1)
        latencies = []
        for query in queries[:latency_queries]:
            started = time.perf_counter()
            index.search(query[None], k)
            latencies.append((time.perf_counter() - started) * 1000)
        faiss.omp_set_num_threads(threads)
        rows.append(
            {
                "index_type": index_type,
                "params": run_params,
                "num_vectors": len(data),
                "build_s": round(build_s, 2),
                "index_mib": round(index_bytes / 2**20, 1),
                "query_ms_p50": round(float(np.percentile(latencies, 50)), 3),
                "query_ms_p95": round(float(np.percentile(latencies, 95)), 3),
                "batch_qps": round(len(queries) / batch_s, 1),
                f"recall@{k}": 1.0 if truth is None else round(recall_at_k(found, truth), 4),
                "peak_rss_mib": round(peak_rss_mib(), 1),
            }
        )
    return rows, first_found


def markdown_table(results: dict) -> str:
    """The results as the README's markdown table (one row per size and index type)."""
    lines = [
        "| vectors | index | params | build | index memory | query p50 / p95 (1 thread) | batch QPS | recall@10 |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["results"]:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items() if k not in ("index_type", "dim")) or "exact"
        lines.append(
            f"| {row['num_vectors']:,} | {row['index_type']} | {params} | {row['build_s']:.1f} s | "
            f"{row['index_mib']:.0f} MiB | {row['query_ms_p50']:.2f} / {row['query_ms_p95']:.1f} ms | "
            f"{row['batch_qps']:,.0f} | {row['recall@10']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write the results JSON; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--types", nargs="+", default=list(INDEX_TYPES), choices=INDEX_TYPES)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm around the cluster centres")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--ef-search", type=int, nargs="*", default=[], help="also measure HNSW at these ef_search")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[], help="also measure IVF at these nprobe")
    parser.add_argument("--table", action="store_true", help="print the README table of the --out results and exit")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(args.out.read_text())
        print(markdown_table(results))
        return results
    if "flat" not in args.types:
        parser.error("--types must include flat: it gives the exact results recall is measured against")

    load_before = os.getloadavg()
    baseline_rss = peak_rss_mib()  # the interpreter with torch / mm_hub imported, before any vectors exist
    rows = []
    for size in tqdm(args.sizes, desc="sizes"):
        rng = np.random.default_rng(size)
        data, centers = clustered_unit_vectors(size, args.dim, args.clusters, rng, noise=args.noise)
        queries, _ = clustered_unit_vectors(args.queries, args.dim, args.clusters, rng, centers, args.noise)
        truth = None
        for index_type in ["flat"] + [t for t in args.types if t != "flat"]:
            sweep = {"ef_search": args.ef_search, "nprobe": args.nprobe}
            measured, found = bench_one(index_type, data, queries, truth, 10, args.latency_queries, args.threads, sweep)
            truth = found if index_type == "flat" else truth
            rows.extend(measured)
            for row in measured:
                tqdm.write(json.dumps(row))
        del data
    results = {
        "command": "python benchmarks/bench_index.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"faiss {faiss.__version__}",
        "threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "baseline_rss_mib": round(baseline_rss, 1),
        "dim": args.dim,
        "clusters": args.clusters,
        "noise": args.noise,
        "queries": args.queries,
        "results": rows,
    }
    write_json(args.out, results)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
