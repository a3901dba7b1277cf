"""Build a multimodal search index of a dataset with a retrieval model, save it, optionally push it.

    python -m training.index --model MODEL --dataset DATA --out DIR [--split train] [--image-column image]
        [--text-column text] [--batch-size 32] [--index-type flat|ivf|hnsw] [--streaming] [--push-to-hub ORG/NAME]

MODEL is a saved or pushed `MMHubForImageTextRetrieval` (folder or Hub id). DATA is a Hub dataset id, a local
folder of data files, a `save_to_disk` folder, or ``shapes`` (the built-in generated data; ``--dataset-config
num_train=300`` sets its size). The embedding pass keeps finished chunks in ``DIR.partial`` and resumes from them
when rerun after an interruption; the index is written to DIR atomically and the chunks are then removed.

    torchrun --nproc_per_node 4 -m training.index --model MODEL --dataset DATA --out DIR   # (and --nnodes, on a shared DIR)

shards the embedding pass: each process embeds every N-th chunk into ``DIR.partial``, then the first builds and
writes the one index, the same as a single process makes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from mm_hub import MMHubForImageTextRetrieval
from mm_hub.embeddings import embed_dataset
from mm_hub.faiss_index import AUTO, FLAT_MAX_VECTORS, INDEX_TYPES
from mm_hub.hub import hub_errors
from mm_hub.loading import load_model
from mm_hub.cli import run
from mm_hub.rows import load_split
from mm_hub.search import MultimodalIndex

from .data import close_process_group


def _none_or(value: str) -> str | None:
    """``--image-column none`` -> None (skip that modality)."""
    return None if value.lower() in ("none", "") else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m training.index``."""
    parser = argparse.ArgumentParser(prog="python -m training.index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="retrieval model folder or Hub id")
    parser.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    parser.add_argument(
        "--dataset", required=True, help="Hub dataset id, local folder, save_to_disk folder, or 'shapes'"
    )
    parser.add_argument("--dataset-config", default=None, help="dataset config name (for 'shapes': key=value,...)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the index to")
    parser.add_argument("--image-column", default="image", type=_none_or, help="'none' to index texts only")
    parser.add_argument("--text-column", default="text", type=_none_or, help="'none' to index images only")
    parser.add_argument("--batch-size", default=32, type=int)
    parser.add_argument("--chunk-size", default=1024, type=int, help="rows per resumable chunk")
    parser.add_argument("--index-type", default=AUTO, choices=(*INDEX_TYPES, AUTO),
                        help=f"auto (default): exact flat search up to {FLAT_MAX_VECTORS:,} rows, ivf above")
    parser.add_argument("--nlist", default=None, type=int, help="IVF cells (default ~4*sqrt(N))")
    parser.add_argument("--nprobe", default=None, type=int, help="IVF cells scanned per query")
    parser.add_argument("--hnsw-m", default=32, type=int, help="HNSW graph degree")
    parser.add_argument("--ef-construction", default=40, type=int, help="HNSW candidates while building")
    parser.add_argument("--ef-search", default=64, type=int, help="HNSW candidates per query")
    parser.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    parser.add_argument("--max-rows", default=None, type=int, help="index only the first N rows")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="push the index as a Hub dataset")
    parser.add_argument("--private", action="store_true", help="create the pushed repo as private")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first row whose image cannot be read or whose text is missing (default: "
                        "leave such rows out and report them)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def _process_group() -> tuple[int, int]:
    """``(rank, world)``: under ``torchrun`` with several processes, after joining their (gloo) process group;
    ``(0, 1)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():  # a long embedding pass may keep the first process waiting for the others
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    return dist.get_rank(), world


def main(argv: list[str] | None = None) -> MultimodalIndex | None:
    """Run the command line; returns the built index (also saved to ``--out``), or None in the processes of a
    sharded run other than the first (which builds it)."""
    args = parse_args(argv)
    started = time.perf_counter()
    model, processor = load_model(args.model, args.revision, head=MMHubForImageTextRetrieval)
    data, base_dir = load_split(args.dataset, args.dataset_config, args.split, args.streaming)
    num_rows = None
    if args.max_rows is not None:
        if args.max_rows < 1:
            raise ValueError(f"--max-rows must be positive, got {args.max_rows}.")
        data = data.take(args.max_rows) if args.streaming else data.select(range(min(args.max_rows, len(data))))
        num_rows = args.max_rows
    elif args.streaming and data.info.splits and args.split in data.info.splits:
        num_rows = data.info.splits[args.split].num_examples or None
    index_kwargs: dict[str, Any] = {}
    if args.index_type in ("ivf", AUTO):  # auto: used when it picks ivf
        index_kwargs.update(nlist=args.nlist, nprobe=args.nprobe)
    elif args.index_type == "hnsw":
        index_kwargs.update(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search)
    work_dir = args.out.with_name(args.out.name + ".partial")
    dataset_id = args.dataset if args.dataset_config is None else f"{args.dataset} ({args.dataset_config})"
    rank, world = _process_group()
    if world > 1:
        import torch.distributed as dist

        embed_dataset(model, processor, data, work_dir, image_column=args.image_column, text_column=args.text_column,
                      batch_size=args.batch_size, chunk_size=args.chunk_size, dataset_id=dataset_id,
                      progress=not args.no_progress and rank == 0, strict=args.strict, shard=(rank, world),
                      base_dir=base_dir)
        dist.barrier()  # every chunk is written: the first process builds the index from them
        if rank != 0:
            close_process_group()
            return None
    index = MultimodalIndex.build(
        model,
        processor,
        data,
        image_column=args.image_column,
        text_column=args.text_column,
        index_type=args.index_type,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        work_dir=work_dir,
        model_id=args.model,
        model_revision=args.revision,
        dataset_id=dataset_id,
        num_rows=num_rows,
        progress=not args.no_progress,
        strict=args.strict,
        base_dir=base_dir,
        **index_kwargs,
    )
    folder = index.save(args.out)
    # The built index reads its rows from the chunks; reopen the saved copy before deleting them.
    index = MultimodalIndex.load(folder, model, processor)
    shutil.rmtree(work_dir, ignore_errors=True)
    for reason, rows in index.metadata["skipped_rows"].items():
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        print(f"Left out {len(rows)} rows ({reason}): {shown}; --strict stops at the first one instead.")
    print(
        f"Indexed {len(index)} rows ({', '.join(index.metadata['embedding_columns'])}; {index.metadata['index_type']}) "
        f"in {time.perf_counter() - started:.1f}s -> {folder}"
    )
    if args.push_to_hub:
        with hub_errors(args.push_to_hub):
            commit = index.push_to_hub(args.push_to_hub, private=args.private)
        print(f"Pushed to dataset {args.push_to_hub} (commit {commit})")
    if world > 1:  # the group of this torchrun run
        close_process_group()
    return index


if __name__ == "__main__":
    run(main)
