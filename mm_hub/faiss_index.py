"""The FAISS index types mm_hub offers over unit-length embeddings (inner product = cosine similarity).

- ``flat``: exact search (``IndexFlatIP``); what ``auto`` (the default) picks up to `FLAT_MAX_VECTORS`.
- ``ivf``: ``IVF<nlist>,Flat``: k-means cells, a query scans the ``nprobe`` nearest cells. Fast to build.
- ``hnsw``: ``HNSW<M>,Flat``: a proximity graph; fastest queries at high recall, slower to build, more memory.

`benchmarks/bench_index.py` measures recall against ``flat``, latency, build time and memory of these at 100k and
1M vectors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

INDEX_TYPES = ("flat", "ivf", "hnsw")
# "auto" picks by collection size: exact search up to FLAT_MAX_VECTORS (a query scans them all in a few ms on one
# thread), IVF above (benchmarks/README.md: latency and recall at 100k and 1M).
AUTO = "auto"
FLAT_MAX_VECTORS = 20_000
# k-means wants ~39+ training points per centroid; FAISS warns below that and quality drops.
_POINTS_PER_CENTROID = 39
_MAX_TRAIN_POINTS_PER_CENTROID = 50


def default_nlist(num_vectors: int) -> int:
    """IVF cell count: ~4 * sqrt(N) (the usual FAISS guideline), capped so each cell gets 39+ training points."""
    return max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // _POINTS_PER_CENTROID))


def default_nprobe(nlist: int) -> int:
    """IVF cells scanned per query: ~sqrt(nlist), at least 16. At 1M vectors (nlist 4000, nprobe 63) a query took
    2.2-2.9 ms on one thread at recall@10 0.967-1.000 (benchmarks/README.md, "Search at scale")."""
    return max(16, round(math.sqrt(nlist)))


def choose_index_type(num_vectors: int) -> str:
    """The index type ``"auto"`` means for ``num_vectors`` vectors: ``flat`` up to `FLAT_MAX_VECTORS`, else ``ivf``."""
    return "flat" if num_vectors <= FLAT_MAX_VECTORS else "ivf"


def new_faiss_index(
    vectors: np.ndarray,
    index_type: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    seed: int = 0,
) -> tuple[Any, dict]:
    """An empty inner-product FAISS index for ``vectors``, trained on them where the type needs training.

    Args:
        vectors: (N, D) float32 unit-length vectors (IVF trains its cells on a sample of them).
        index_type: one of ``INDEX_TYPES``, or ``"auto"`` (`choose_index_type`; ``params`` names the type chosen).
        nlist: IVF cells (default `default_nlist(N)`); nprobe: cells scanned per query (default
            `default_nprobe`).
        hnsw_m: HNSW graph degree; ef_construction / ef_search: HNSW candidate list sizes at build / query time.
        seed: k-means seed and training sample seed.

    Returns:
        ``(index, params)``: add the vectors with ``index.add``; ``params`` (JSON-able) records the resolved
        parameters for `configure_faiss_index` after a reload.

    Raises:
        ValueError: an unknown index type, or vectors that are not a non-empty 2-D array.
    """
    import faiss

    check_index_type(index_type)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"Expected a non-empty (N, D) array of vectors, got shape {vectors.shape}.")
    num, dim = vectors.shape
    index_type = choose_index_type(num) if index_type == AUTO else index_type
    params: dict[str, Any] = {"index_type": index_type, "dim": dim}
    if index_type == "flat":
        return faiss.IndexFlatIP(dim), params
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        params.update(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
        configure_faiss_index(index, params)
        return index, params
    nlist = nlist or default_nlist(num)
    if not 1 <= nlist <= num:
        raise ValueError(f"nlist must be between 1 and the number of vectors ({num}), got {nlist}.")
    nprobe = min(nlist, nprobe or default_nprobe(nlist))
    # index_factory owns its quantizer (a Python-built IndexIVFFlat would need the quantizer kept alive).
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    sample_size = min(num, nlist * _MAX_TRAIN_POINTS_PER_CENTROID)
    sample = (
        vectors[np.random.default_rng(seed).choice(num, sample_size, replace=False)] if sample_size < num else vectors
    )
    faiss.extract_index_ivf(index).cp.seed = seed
    index.train(sample)
    params.update(nlist=nlist, nprobe=nprobe)
    configure_faiss_index(index, params)
    return index, params


def check_index_type(index_type: str) -> None:
    """ValueError naming the accepted values unless ``index_type`` is one of `INDEX_TYPES` or ``"auto"``."""
    if index_type not in (*INDEX_TYPES, AUTO):
        raise ValueError(f"index_type={index_type!r} is not supported; choose one of {(*INDEX_TYPES, AUTO)}.")


def configure_faiss_index(index: Any, params: dict) -> None:
    """Apply the query-time parameters (``nprobe`` for IVF, ``ef_search`` for HNSW) recorded in ``params``."""
    import faiss

    if params.get("index_type") == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif params.get("index_type") == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


__all__ = ["AUTO", "FLAT_MAX_VECTORS", "INDEX_TYPES", "check_index_type", "choose_index_type", "configure_faiss_index",
           "default_nlist", "default_nprobe", "new_faiss_index"]
