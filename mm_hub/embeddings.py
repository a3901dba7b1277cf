"""Batched, resumable embedding pass of a dataset through an mm_hub retrieval model (dual encoder).

Rows are embedded in chunks of ``chunk_size``; each finished chunk (its rows plus their embeddings) is written to
``work_dir`` atomically, so a killed run restarts at the first missing chunk. Works on map-style and streaming
(`IterableDataset`) datasets.

Embedding columns (unit-length float32 vectors of the model's ``projection_dim``):
    ``image_embeds``: the image's embedding.
    ``text_embeds``: the text's embedding; a row holding a list of captions gets the normalised mean of its
        captions' embeddings (one vector per item, so every row stays one search result).
    ``item_embeds`` (rows with both): ``normalize(image_embeds + text_embeds)``. With unit-length inputs this is
        the direction halfway between the two, so an item's score against a query is proportional to the mean of
        its image's and its text's cosine similarity: neither modality dominates, and image-only or text-only
        queries still find items. Used by ``MultimodalIndex.search`` and ``mm_hub.recommend``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Image, IterableDataset, List, Value, concatenate_datasets, load_from_disk
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from tqdm.auto import tqdm

from ._files import folder_written_whole, write_json
from .rows import EMPTY_TEXT, UNREADABLE_IMAGE, cell_texts, image_source

EMBEDDING_COLUMNS = {"image": "image_embeds", "text": "text_embeds", "item": "item_embeds"}
# Fixed inputs whose embeddings identify a model's weights (and its processor) beyond its config.
PROBE_TEXTS = ["a red circle above a blue square", "mm_hub index probe"]
# Config keys that change when the same model is saved, moved or reloaded: left out of the config hash.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "architectures", "auto_map", "dtype", "torch_dtype"}
_MANIFEST = "manifest.json"
_SKIPPED = "skipped.json"  # in each chunk folder: {reason: row numbers left out}


def probe_image() -> np.ndarray:
    """A deterministic 64x64 RGB gradient with a square in it, the image half of the model fingerprint."""
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    image[16:40, 20:44] = (250, 30, 30)
    return image


def check_retrieval_model(model: Any) -> None:
    """Raise a TypeError unless ``model`` is a dual encoder with ``get_image_features``/``get_text_features``.

    Duck-typed, because a model loaded with ``trust_remote_code`` is a `transformers_modules` class.
    """
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise TypeError(
            f"Expected an image-text retrieval model (MMHubForImageTextRetrieval, e.g. from "
            f"mm_hub.AutoModelForImageTextRetrieval.from_pretrained(...)), got {type(model).__name__}."
        )


@torch.inference_mode()
def embed_images(model: Any, processor: Any, images: list[Any]) -> np.ndarray:
    """(N,) images of any kind the processor accepts -> (N, D) unit-length float32 embeddings."""
    model.eval()
    pixel_values = processor(images=images)["pixel_values"].to(model.device, model.dtype)
    return model.get_image_features(pixel_values).float().cpu().numpy()


@torch.inference_mode()
def embed_texts(model: Any, processor: Any, texts: list[str]) -> np.ndarray:
    """(N,) strings -> (N, D) unit-length float32 embeddings."""
    model.eval()
    batch = processor(text=texts).to(model.device)
    return model.get_text_features(batch["input_ids"], batch["attention_mask"]).float().cpu().numpy()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _stable_config(config: dict) -> dict:
    """The config without the keys (at any depth) that change when the same model is saved and reloaded."""
    return {
        key: _stable_config(value) if isinstance(value, dict) else value
        for key, value in config.items()
        if key not in _VOLATILE_CONFIG_KEYS
    }


def model_fingerprint(model: Any, processor: Any, model_id: str | None = None, revision: str | None = None) -> dict:
    """What identifies the model an index was built with: id, revision, config hash, embedding size, and the
    embeddings of fixed probe inputs (they differ when the weights or the processor differ, even under one config).

    Args:
        model: the retrieval model.
        processor: its `MMHubProcessor`.
        model_id: Hub id or path to record; defaults to ``model.name_or_path``.
        revision: revision to record (e.g. the branch or commit the model was loaded from).
    """
    check_retrieval_model(model)
    # Only the values that differ from the defaults: a field a later mm_hub adds (at its default) changes nothing.
    config = _stable_config(model.config.to_diff_dict())
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {
        "model_id": model_id or getattr(model, "name_or_path", None) or None,
        "revision": revision,
        "config_hash": config_hash,
        "embedding_dim": int(model.config.projection_dim),
        "probe_text_embeds": np.round(embed_texts(model, processor, PROBE_TEXTS), 6).tolist(),
        "probe_image_embeds": np.round(embed_images(model, processor, [probe_image()]), 6).tolist(),
    }


def _dataset_identity(dataset: Dataset | IterableDataset, dataset_id: str | None) -> str:
    """A string that changes when the rows to embed change (fingerprint for map-style datasets)."""
    if isinstance(dataset, Dataset):
        return f"{dataset_id}|{dataset._fingerprint}|{len(dataset)}"
    info = dataset.info
    return f"{dataset_id}|{info.dataset_name}|{info.config_name}|{dataset.split}|{dataset.features}"


def _check_columns(dataset: Dataset | IterableDataset, image_column: str | None, text_column: str | None) -> None:
    """Raise a ValueError for an unusable column choice."""
    if image_column is None and text_column is None:
        raise ValueError("Give an image_column, a text_column, or both; got neither.")
    names = dataset.column_names
    if names is None:  # streaming datasets without known features
        return
    for kind, column in (("image", image_column), ("text", text_column)):
        if column is not None and column not in names:
            raise ValueError(f"{kind}_column={column!r} is not a column of the dataset; its columns are {names}.")
    clashes = sorted(set(names) & set(EMBEDDING_COLUMNS.values()))
    if clashes:
        raise ValueError(f"The dataset already has column(s) {clashes}; mm_hub writes its embeddings there.")


def _embed_chunk(
    model: Any,
    processor: Any,
    rows: Dataset,
    start: int,
    columns: tuple[str | None, str | None],
    batch_size: int,
    dim: int,
    strict: bool,
    bar: tqdm,
    base_dir: Path | None = None,
) -> tuple[dict[str, np.ndarray], list[int], dict[str, list[int]]]:
    """Embed one chunk of rows in batches, leaving out rows whose image cannot be read or whose text is empty (the
    reasons of `mm_hub.rows`, as training names them).

    Returns:
        ``({embedding column: (kept rows, D)}, offsets of the kept rows in the chunk, {reason: skipped row numbers})``.
    """
    image_column, text_column = columns
    out: dict[str, list[np.ndarray]] = {name: [np.zeros((0, dim), np.float32)] for name in ("image", "text")}
    kept: list[int] = []
    skipped: dict[str, list[int]] = {}
    for offset in range(0, len(rows), batch_size):
        batch = rows[offset : offset + batch_size]
        images, per_row = [], []
        for i in range(len(next(iter(batch.values())))):
            row, reason, texts = start + offset + i, None, None
            try:
                if image_column is not None:
                    image = processor.load_image(image_source(batch[image_column][i], base_dir))
            except (ValueError, TypeError) as error:
                reason = f"{UNREADABLE_IMAGE} ({error})"
            if reason is None and text_column is not None:
                texts = cell_texts(batch[text_column][i], lists=True)
                reason = f"{EMPTY_TEXT} ({str(batch[text_column][i])[:80]!r})" if texts is None else None
            if reason is not None:
                if strict:
                    raise ValueError(f"Row {row}: {reason}; strict=True stops at the first bad row.")
                skipped.setdefault(reason.split(" (")[0], []).append(row)
                continue
            kept.append(offset + i)
            if image_column is not None:
                images.append(image)
            if text_column is not None:
                per_row.append(texts)
        if images:
            out["image"].append(embed_images(model, processor, images))
        if per_row:
            flat = embed_texts(model, processor, [text for texts in per_row for text in texts])
            bounds = np.cumsum([0] + [len(texts) for texts in per_row])
            out["text"].append(normalize(np.stack([flat[a:b].mean(0) for a, b in pairwise(bounds)])))
        bar.update(len(next(iter(batch.values()))))
    used = [kind for kind, column in zip(("image", "text"), columns) if column is not None]
    result = {EMBEDDING_COLUMNS[kind]: np.concatenate(out[kind]) for kind in used}
    if len(result) == 2:
        result[EMBEDDING_COLUMNS["item"]] = normalize(result["image_embeds"] + result["text_embeds"])
    return result, kept, skipped


def _chunk_path(work_dir: Path, number: int) -> Path:
    return work_dir / f"chunk-{number:06d}"


def _chunk_numbers(dataset: Dataset | IterableDataset, chunk_size: int, shard: tuple[int, int]) -> range | None:
    """The chunk numbers one process of ``shard = (rank, world)`` embeds (None for a stream: its length is unknown)."""
    if not isinstance(dataset, Dataset):
        return None
    return range(shard[0], -(-len(dataset) // chunk_size), shard[1])


def _finished_run(work_dir: Path) -> list[Path]:
    """The finished chunks numbered 0, 1, 2, ... without a gap (what a stream resumes after)."""
    done = sorted(work_dir.glob("chunk-[0-9][0-9][0-9][0-9][0-9][0-9]"))
    return [path for i, path in enumerate(done) if path.name == f"chunk-{i:06d}"]


def _pending_chunks(
    dataset: Dataset | IterableDataset, work_dir: Path, chunk_size: int, shard: tuple[int, int]
) -> Iterator[tuple[int, Dataset]]:
    """``(number, rows)`` of the chunks still to embed: for a map-style dataset every unfinished chunk of this
    process's share (`_chunk_numbers`), for a stream the chunks after the unbroken run of finished ones."""
    numbers = _chunk_numbers(dataset, chunk_size, shard)
    if numbers is not None:
        for number in numbers:
            if not _chunk_path(work_dir, number).is_dir():
                start = number * chunk_size
                yield number, dataset.select(range(start, min(start + chunk_size, len(dataset))))
        return
    number = len(_finished_run(work_dir))
    rows = iter(dataset.skip(number * chunk_size) if number else dataset)
    while batch := list(islice(rows, chunk_size)):
        yield number, Dataset.from_list(batch, features=dataset.features)
        number += 1


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide `datasets`' own per-operation progress bars (mm_hub shows one bar for the whole pass)."""
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _save_atomic(chunk: Dataset, skipped: dict[str, list[int]], path: Path) -> None:
    """Write a chunk (and the rows it left out) to ``path`` through a temporary folder, so a killed run never leaves
    half a chunk."""
    with folder_written_whole(path) as work:
        chunk.save_to_disk(str(work))
        write_json(work / _SKIPPED, skipped)


def _prepare_work_dir(work_dir: Path, manifest: dict, shard: tuple[int, int] = (0, 1)) -> None:
    """Create or reuse ``work_dir`` (a mismatched manifest is an error) and remove the half-written chunks this
    process of ``shard = (rank, world)`` left when it was killed (the other processes' are theirs to finish)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = work_dir / _MANIFEST
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
            changed = sorted(key for key in manifest if previous.get(key) != manifest[key])
            raise ValueError(
                f"{work_dir} holds chunks of a different embedding run (differs in {changed}); delete it or choose "
                "another work_dir."
            )
    else:
        write_json(manifest_path, manifest)  # atomic: processes writing the same manifest at once all succeed
    rank, world = shard
    for leftover in work_dir.glob(".chunk-*.partial-*"):
        number = leftover.name.split(".")[1].removeprefix("chunk-")
        if not number.isdigit() or int(number) % world == rank:
            shutil.rmtree(leftover, ignore_errors=True)


def _undecoded(dataset: Dataset | IterableDataset) -> tuple[Dataset | IterableDataset, list[str]]:
    """The dataset with its `datasets.Image` columns left undecoded, and their names: the embedding pass opens the
    images it needs itself (a bad one is skipped, not fatal) and never decodes the others."""
    features = dataset.features or {}
    names = [name for name, feature in features.items() if isinstance(feature, Image) and feature.decode]
    for name in names:
        dataset = dataset.cast_column(name, Image(decode=False))
    return dataset, names


def embed_dataset(
    model: Any,
    processor: Any,
    dataset: Dataset | IterableDataset,
    work_dir: str | os.PathLike,
    *,
    image_column: str | None = "image",
    text_column: str | None = "text",
    batch_size: int = 32,
    chunk_size: int = 1024,
    dataset_id: str | None = None,
    num_rows: int | None = None,
    progress: bool = True,
    fingerprint: dict | None = None,
    strict: bool = False,
    shard: tuple[int, int] = (0, 1),
    base_dir: str | os.PathLike | None = None,
) -> tuple[Dataset, dict[str, list[int]]] | None:
    """Embed every row's image and/or text; resumable through the chunks kept in ``work_dir``.

    A row whose image cannot be read (missing, corrupt, over the processor's size limits) or whose text is empty is
    left out and reported (`mm_hub.rows.SKIP_REASONS`, as training counts them), unless ``strict``.

    Args:
        model: an `MMHubForImageTextRetrieval` (or any model with ``get_image_features``/``get_text_features``).
        processor: its `MMHubProcessor`.
        dataset: a `datasets.Dataset` or a streaming `datasets.IterableDataset`.
        work_dir: folder for the finished chunks; running again with the same folder, model and data resumes.
        image_column: column holding images (None: embed texts only; no image is then decoded).
        text_column: column holding a caption or a list of captions (None: embed images only).
        batch_size: rows per forward pass.
        chunk_size: rows per saved chunk (the most work a killed run loses).
        dataset_id: name of the data, recorded in the resume manifest (streaming data has no fingerprint).
        num_rows: length of a streaming dataset, for the progress bar only.
        progress: show a tqdm progress bar.
        fingerprint: `model_fingerprint(model, processor)` when the caller has it already.
        strict: raise on the first unusable row (naming it) instead of leaving it out.
        base_dir: the folder a relative image path is taken from (`mm_hub.rows.load_split` gives it).
        shard: ``(rank, world)``: with ``world`` > 1 (one call per process, e.g. under ``torchrun``, all with the
            same ``work_dir``), this process embeds only chunks ``rank``, ``rank + world``, ... of a map-style
            dataset and returns None; one call with the default ``(0, 1)`` afterwards finds every chunk done and
            returns the rows, exactly as a single process would have made them.

    Returns:
        ``(rows, skipped)``: the usable rows with ``image_embeds`` / ``text_embeds`` / ``item_embeds`` columns (see
        the module docstring), and ``{reason: row numbers of the dataset}`` for the rows left out; None for a shard.

    Raises:
        ValueError: no usable rows, unknown columns, a work_dir holding another run, or (``strict``) a bad row.
        TypeError: a model that is not a retrieval model.
    """
    rank, world = shard
    if not (isinstance(world, int) and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}.")
    check_retrieval_model(model)
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"Expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}.")
    if world > 1 and not isinstance(dataset, Dataset):
        raise ValueError("Sharding the embedding pass over processes needs a map-style dataset (not --streaming): "
                         "each process embeds its own chunks of known rows.")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    _check_columns(dataset, image_column, text_column)
    if isinstance(dataset, Dataset):
        if len(dataset) == 0:
            raise ValueError("The dataset is empty: there is nothing to embed or index.")
        num_rows = len(dataset)
    dataset, image_columns = _undecoded(dataset)
    fingerprint = fingerprint or model_fingerprint(model, processor)
    manifest = {
        "model": {key: fingerprint[key] for key in ("config_hash", "probe_text_embeds", "probe_image_embeds")},
        "dataset": _dataset_identity(dataset, dataset_id),
        "image_column": image_column,
        "text_column": text_column,
        "chunk_size": chunk_size,
    }
    work_dir = Path(work_dir)
    _prepare_work_dir(work_dir, manifest, shard)
    numbers = _chunk_numbers(dataset, chunk_size, shard)
    if numbers is None:  # a stream: the rows before the first unfinished chunk are done
        total, initial = num_rows, len(_finished_run(work_dir)) * chunk_size
    else:
        sizes = {n: min(chunk_size, len(dataset) - n * chunk_size) for n in numbers}
        total = sum(sizes.values())
        initial = sum(size for n, size in sizes.items() if _chunk_path(work_dir, n).is_dir())
    dim = fingerprint["embedding_dim"]
    bar = tqdm(total=total, initial=initial, unit="row", desc="Embedding", disable=not progress)
    with bar, quiet_datasets():
        for number, rows in _pending_chunks(dataset, work_dir, chunk_size, shard):
            vectors, kept, skipped = _embed_chunk(
                model, processor, rows, number * chunk_size, (image_column, text_column), batch_size, dim, strict, bar,
                None if base_dir is None else Path(base_dir),
            )
            features = Features({name: List(Value("float32"), length=dim) for name in vectors})
            embeds = Dataset.from_dict(vectors, features=features)
            _save_atomic(concatenate_datasets([rows.select(kept), embeds], axis=1), skipped,
                         _chunk_path(work_dir, number))
    if world > 1:
        return None
    done = _finished_run(work_dir)
    skipped: dict[str, list[int]] = {}
    for path in done:
        for reason, rows_left_out in json.loads((path / _SKIPPED).read_text()).items():
            skipped.setdefault(reason, []).extend(rows_left_out)
    with quiet_datasets():
        rows = concatenate_datasets([load_from_disk(str(path)) for path in done]) if done else None
        if rows is None or len(rows) == 0:
            left_out = f" (every row was left out: {skipped})" if skipped else ""
            raise ValueError(f"The dataset is empty: there is nothing to embed or index{left_out}.")
        for name in image_columns:  # back to PIL images for the index's users; the embedded ones all decode
            rows = rows.cast_column(name, Image())
    return rows, skipped


__all__ = [
    "EMBEDDING_COLUMNS",
    "check_retrieval_model",
    "embed_dataset",
    "embed_images",
    "embed_texts",
    "model_fingerprint",
    "normalize",
    "quiet_datasets",
]
