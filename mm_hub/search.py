"""Multimodal search index: a `datasets.Dataset` with embedding columns and FAISS indexes over them.

Build it from a retrieval model (dual encoder) and its processor over any dataset of images and/or texts, then:

- ``search_text(query, k)``: text -> the rows whose *images* match best;
- ``search_image(image, k)``: image -> the rows whose *texts* match best;
- ``search(image=..., text=..., k)``: either or both -> the rows whose fused *items* match best;
- ``mm_hub.recommend(index, item, k)``: items like an item (see `mm_hub.recommend`).

Each result is a dict with ``score`` (cosine similarity), ``row`` (row number in the dataset) and the dataset's
own columns. Saved folders are Hub datasets: ``data/*.parquet`` (rows + embeddings), ``faiss/<column>.faiss``,
``mm_hub_index.json`` (model fingerprint, columns, index parameters) and a README card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from ._files import folder_written_whole, write_json
from .embeddings import (
    EMBEDDING_COLUMNS,
    check_retrieval_model,
    embed_dataset,
    embed_images,
    embed_texts,
    model_fingerprint,
    normalize,
    quiet_datasets,
)
from .faiss_index import check_index_type, configure_faiss_index, new_faiss_index

logger = logging.getLogger(__name__)

METADATA_FILE = "mm_hub_index.json"
FORMAT_VERSION = 2  # 2: FAISS files carry a SHA-256 in the metadata
READABLE_VERSIONS = (1, 2)
# Probe embeddings of the query model must match the stored ones this closely (cosine) to count as the same model.
_PROBE_TOLERANCE = 1e-3
_SHARD_BYTES = 500 * 2**20


class MultimodalIndex:
    """Rows of a dataset with their image/text/item embeddings and a FAISS index per embedding column.

    Build with `MultimodalIndex.build`, reopen with `MultimodalIndex.load` (a folder or a Hub dataset id).

    Attributes:
        dataset: the rows with embedding columns, each embedding column carrying a FAISS index of the same name
            (so ``index.dataset.get_nearest_examples("image_embeds", vector, k)`` works too).
        metadata: the model fingerprint, column names and index parameters saved in ``mm_hub_index.json``.
    """

    def __init__(
        self,
        rows: Dataset,
        metadata: dict,
        model: Any = None,
        processor: Any = None,
        *,
        faiss_indexes: dict[str, Any] | None = None,
        faiss_dir: str | os.PathLike | None = None,
    ):
        """Wrap embedded rows; use `build` or `load` rather than calling this directly.

        Args:
            rows: the dataset with embedding columns.
            metadata: as written by `build` (``embedding_columns``, ``index_params``, ``model`` fingerprint, ...).
            model, processor: the query model (checked by `attach_model`).
            faiss_indexes: {embedding column: trained, empty FAISS index} to fill from the rows (when building), or
            faiss_dir: the folder of saved ``<column>.faiss`` files (when loading).
        """
        self._rows = rows  # no FAISS index attached: `datasets` forbids select/shard on indexed datasets
        self.dataset = rows.with_format(None)
        for column in metadata["embedding_columns"]:
            with quiet_datasets():
                if faiss_dir is not None:
                    self.dataset.load_faiss_index(column, Path(faiss_dir) / f"{column}.faiss")
                elif faiss_indexes is not None:
                    self.dataset.add_faiss_index(column, custom_index=faiss_indexes[column], batch_size=10_000)
                else:
                    raise ValueError("Give faiss_indexes (to build) or faiss_dir (to load).")
            configure_faiss_index(self.dataset.get_index(column).faiss_index, metadata["index_params"])
        self.metadata = metadata
        self.model = None
        self.processor = None
        self._work_dir = None
        payload = [name for name in rows.column_names if name not in EMBEDDING_COLUMNS.values()]
        self._payload = rows.select_columns(payload)
        if model is not None or processor is not None:
            self.attach_model(model, processor)

    # ----------------------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        model: Any,
        processor: Any,
        dataset: Dataset | IterableDataset,
        *,
        image_column: str | None = "image",
        text_column: str | None = "text",
        index_type: str = "auto",
        batch_size: int = 32,
        chunk_size: int = 1024,
        work_dir: str | os.PathLike | None = None,
        model_id: str | None = None,
        model_revision: str | None = None,
        dataset_id: str | None = None,
        num_rows: int | None = None,
        progress: bool = True,
        strict: bool = False,
        base_dir: str | os.PathLike | None = None,
        **index_kwargs: Any,
    ) -> MultimodalIndex:
        """Embed a dataset (see `mm_hub.embeddings.embed_dataset`) and index every embedding column.

        Args:
            model, processor: an `MMHubForImageTextRetrieval` and its `MMHubProcessor`.
            dataset: a `datasets.Dataset` or a streaming `IterableDataset`.
            image_column, text_column: columns to embed (None skips that modality; a text cell may be a list of
                captions).
            index_type: ``"auto"`` (the default: exact ``"flat"`` search up to 20,000 rows, ``"ivf"`` above; see
                `mm_hub.faiss_index.choose_index_type`), ``"flat"``, ``"ivf"`` or ``"hnsw"`` (see
                `mm_hub.faiss_index.new_faiss_index`).
            batch_size, chunk_size, num_rows, progress: as in `embed_dataset`.
            work_dir: where finished chunks are kept so that an interrupted build resumes; default: a temporary
                folder that lives as long as this index.
            model_id, model_revision: recorded in the metadata (default ``model.name_or_path``); `load` uses them
                to reload the model.
            dataset_id: name of the data, recorded in the metadata and the card.
            strict: fail on the first row whose image cannot be read or whose text is empty; by default such rows
                are left out of the index and listed in ``metadata["skipped_rows"]`` (rows of ``dataset``).
            base_dir: the folder relative image paths are taken from (`mm_hub.rows.load_split` gives it).
            **index_kwargs: ``nlist``, ``nprobe`` (IVF), ``hnsw_m``, ``ef_construction``, ``ef_search`` (HNSW).

        Raises:
            ValueError: no usable rows, unknown column or index type, a bad row with ``strict``; TypeError: not a
                retrieval model.
        """
        check_index_type(index_type)
        check_retrieval_model(model)
        temporary = None
        if work_dir is None:
            temporary = tempfile.TemporaryDirectory(prefix="mm_hub_index_")
            work_dir = temporary.name
        started = time.perf_counter()
        fingerprint = model_fingerprint(model, processor, model_id, model_revision)
        rows, skipped = embed_dataset(
            model,
            processor,
            dataset,
            work_dir,
            image_column=image_column,
            text_column=text_column,
            batch_size=batch_size,
            chunk_size=chunk_size,
            dataset_id=dataset_id,
            num_rows=num_rows,
            progress=progress,
            fingerprint=fingerprint,
            strict=strict,
            base_dir=base_dir,
        )
        faiss_indexes = {}
        for column in (name for name in EMBEDDING_COLUMNS.values() if name in rows.column_names):
            faiss_indexes[column], params = new_faiss_index(_column_matrix(rows, column), index_type, **index_kwargs)
        metadata = {
            "format_version": FORMAT_VERSION,
            "model": fingerprint,
            "dataset": dataset_id,
            "image_column": image_column,
            "text_column": text_column,
            "embedding_columns": list(faiss_indexes),
            "num_rows": len(rows),
            "skipped_rows": skipped,
            "index_type": params["index_type"],  # what "auto" chose
            "index_params": params,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        index = cls(rows, metadata, faiss_indexes=faiss_indexes)
        index.model, index.processor = model, processor  # the fingerprint above is this model's own
        index._work_dir = temporary  # keeps the memory-mapped chunks alive as long as the index
        return index

    def __len__(self) -> int:
        """Number of indexed rows."""
        return len(self._rows)

    def __repr__(self) -> str:
        return (
            f"MultimodalIndex(rows={len(self)}, columns={self.metadata['embedding_columns']}, "
            f"index_type={self.metadata['index_type']!r}, model={self.metadata['model']['model_id']!r})"
        )

    # ------------------------------------------------------------------------------------------ model checks
    def attach_model(self, model: Any, processor: Any) -> None:
        """Use this model + processor to embed queries, after checking it is the one the index was built with.

        Raises:
            ValueError: a different embedding size, config or weights (the message names both models).
            TypeError: not a retrieval model.
        """
        if model is None or processor is None:
            raise ValueError("Give both the retrieval model and its processor.")
        check_retrieval_model(model)
        stored = self.metadata["model"]
        given_id = getattr(model, "name_or_path", None) or "<unsaved model>"
        names = f"the index was built with {stored['model_id']!r}, the query model is {given_id!r}"
        dim = int(model.config.projection_dim)
        if dim != stored["embedding_dim"]:
            raise ValueError(
                f"Model mismatch: the index holds {stored['embedding_dim']}-d embeddings but the query model makes "
                f"{dim}-d ones ({names}). Query with the model the index was built with, or rebuild the index."
            )
        current = model_fingerprint(model, processor)
        if current["config_hash"] != stored["config_hash"]:
            raise ValueError(
                f"Model mismatch: the query model's config differs from the index's ({names}; config hash "
                f"{current['config_hash']} vs {stored['config_hash']}). Rebuild the index with this model."
            )
        for key in ("probe_text_embeds", "probe_image_embeds"):
            similarity = (np.asarray(current[key]) * np.asarray(stored[key])).sum(-1).min()
            if similarity < 1 - _PROBE_TOLERANCE:
                raise ValueError(
                    f"Model mismatch: the query model has the same config but different weights or preprocessing "
                    f"({names}; its embeddings of a fixed probe input have cosine {similarity:.4f} with the stored "
                    "ones). Query with the model the index was built with, or rebuild the index."
                )
        if stored["model_id"] and given_id != stored["model_id"]:
            logger.info("Query model %r has the same config and weights as %r.", given_id, stored["model_id"])
        self.model, self.processor = model, processor

    def _require_model(self) -> None:
        """Load the model recorded in the metadata when none is attached."""
        if self.model is not None:
            return
        stored = self.metadata["model"]
        if not stored.get("model_id"):
            raise ValueError("This index has no query model: call attach_model(model, processor) first.")
        from .loading import load_model
        from .tasks import TASKS

        try:  # the one loader: safetensors only, one message for every failure
            model, processor = load_model(stored["model_id"], revision=stored["revision"],
                                          head=TASKS["retrieval"].heads)
        except OSError as error:
            raise ValueError(
                f"Cannot load the index's model {stored['model_id']!r} (revision {stored['revision']!r}): {error}. "
                "Call attach_model(model, processor) with it."
            ) from error
        self.attach_model(model, processor)

    # --------------------------------------------------------------------------------------------- queries
    def embed_query(self, image: Any = None, text: str | None = None) -> np.ndarray:
        """(D,) query embedding: the image's, the text's, or the normalised sum of both (the item embedding)."""
        if image is None and text is None:
            raise ValueError("Give an image, a text, or both.")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}.")
        if text is not None and not text.strip():
            raise ValueError("text is empty; give a non-empty query.")
        self._require_model()
        parts = []
        if image is not None:
            parts.append(embed_images(self.model, self.processor, [image])[0])
        if text is not None:
            parts.append(embed_texts(self.model, self.processor, [text])[0])
        return normalize(np.sum(parts, axis=0))

    def search_text(self, query: str, k: int = 10) -> list[dict]:
        """Text -> the ``k`` rows whose images match it best (needs an image column)."""
        return self.search_embedding(self.embed_query(text=query), "image_embeds", k)

    def search_image(self, image: Any, k: int = 10) -> list[dict]:
        """Image -> the ``k`` rows whose texts match it best (needs a text column)."""
        if image is None:
            raise ValueError("Give an image to search with.")
        return self.search_embedding(self.embed_query(image=image), "text_embeds", k)

    def search(self, image: Any = None, text: str | None = None, k: int = 10) -> list[dict]:
        """(image and/or text) -> the ``k`` rows whose fused item embeddings match best (needs both columns)."""
        return self.search_embedding(self.embed_query(image=image, text=text), "item_embeds", k)

    def search_embedding(
        self,
        embedding: np.ndarray,
        column: str,
        k: int = 10,
        *,
        exclude_rows: tuple[int, ...] | list[int] = (),
        filter: dict[str, Any] | None = None,
    ) -> list[dict]:
        """Nearest rows to a query embedding in one embedding column.

        Args:
            embedding: (D,) unit-length query vector.
            column: ``"image_embeds"``, ``"text_embeds"`` or ``"item_embeds"``.
            k: number of results (fewer when fewer rows qualify).
            exclude_rows: row numbers never returned (e.g. the query item).
            filter: ``{column: value}`` or ``{column: [values]}``; only rows matching every entry are returned.
                Filtered queries are exact over the matching rows (an approximate index could miss them when a
                filter leaves few).

        Returns:
            Up to ``k`` dicts ``{"score", "row", <dataset columns>}``, best first.
        """
        if column not in self.metadata["embedding_columns"]:
            needs = {
                "image_embeds": "an image column",
                "text_embeds": "a text column",
                "item_embeds": "both an image and a text column",
            }
            raise ValueError(
                f"This index has no {column!r} (that query needs {needs.get(column, 'it')}); it has "
                f"{self.metadata['embedding_columns']}."
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.metadata["model"]["embedding_dim"]:
            raise ValueError(
                f"The query embedding has {query.shape[0]} dimensions; this index holds "
                f"{self.metadata['model']['embedding_dim']}-d embeddings."
            )
        excluded = {int(row) for row in exclude_rows}
        if filter:
            allowed = np.flatnonzero(self._filter_mask(filter))
            allowed = allowed[~np.isin(allowed, list(excluded))]
            vectors = _column_matrix(self._rows, column, allowed)
            scores = vectors @ query
            order = np.argsort(-scores, kind="stable")[:k]
            hits = [(float(scores[i]), int(allowed[i])) for i in order]
        else:
            want = min(k + len(excluded), len(self))
            result = self.dataset.search(column, query, k=want)
            hits = [(float(s), int(r)) for s, r in zip(result.scores, result.indices) if r >= 0 and r not in excluded]
        return [{"score": score, "row": row, **self._payload[row]} for score, row in hits[:k]]

    def row(self, row: int) -> dict:
        """One indexed row as ``{"row", <dataset columns>}`` (what a search result holds, without its score)."""
        row = self._checked_row(row)
        return {"row": row, **self._payload[row]}

    def _checked_row(self, row: Any) -> int:
        """``row`` as an int, ValueError when it is not a row number of this index."""
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < len(self):
            raise ValueError(f"Row {row!r} is out of range: the index has rows 0..{len(self) - 1}.")
        return int(row)

    def embedding(self, row: int, column: str = "item_embeds") -> np.ndarray:
        """(D,) stored embedding of one row in one embedding column."""
        if column not in self.metadata["embedding_columns"]:
            raise ValueError(
                f"{column!r} is not one of this index's embedding columns {self.metadata['embedding_columns']}."
            )
        return _column_matrix(self._rows, column, np.array([self._checked_row(row)]))[0]

    def _filter_mask(self, filter: dict[str, Any]) -> np.ndarray:
        """(N,) bool: rows whose columns hold the wanted value(s)."""
        if not isinstance(filter, dict):
            raise TypeError(f"filter must be a dict {{column: value or list of values}}, got {type(filter).__name__}.")
        mask = np.ones(len(self), dtype=bool)
        for name, wanted in filter.items():
            if name not in self._payload.column_names:
                raise ValueError(
                    f"Cannot filter on {name!r}: not a column; the columns are {self._payload.column_names}."
                )
            values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            data = self._rows.data.column(name)
            try:
                matches = pc.is_in(data, value_set=pa.array(values, type=data.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
                raise ValueError(f"Cannot filter column {name!r} ({data.type}) by {values!r}: {error}") from error
            mask &= matches.to_numpy(zero_copy_only=False).astype(bool)
        return mask

    # ------------------------------------------------------------------------------------ save / load / push
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index as a Hub-dataset folder, atomically (a temp folder replaces ``directory`` at the end).

        Returns:
            The folder.
        """
        directory = Path(directory).resolve()
        with folder_written_whole(directory) as work:
            self._write(work)
        return directory

    def _write(self, folder: Path) -> None:
        """Parquet shards (images embedded as bytes, as `push_to_hub` does), FAISS files, metadata and card."""
        from .cards import index_card

        (folder / "data").mkdir()
        with quiet_datasets():
            self._write_shards(folder / "data")
        (folder / "faiss").mkdir()
        checksums = {}
        for column in self.metadata["embedding_columns"]:
            path = folder / "faiss" / f"{column}.faiss"
            self.dataset.save_faiss_index(column, path)
            checksums[column] = _sha256(path)
        self.metadata.update(format_version=FORMAT_VERSION, faiss_sha256=checksums)
        write_json(folder / METADATA_FILE, self.metadata)
        (folder / "README.md").write_text(index_card(self.metadata, self._payload.features))

    def _write_shards(self, folder: Path) -> None:
        """Rows as parquet shards of at most ~500 MB, external image files embedded as bytes."""
        from datasets.table import embed_table_storage

        shards = max(1, math.ceil(self._rows.data.nbytes / _SHARD_BYTES))
        for number in range(shards):
            shard = self._rows.shard(num_shards=shards, index=number, contiguous=True).with_format("arrow")
            shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
            shard.to_parquet(str(folder / f"train-{number:05d}-of-{shards:05d}.parquet"))

    @classmethod
    def load(
        cls,
        path_or_repo_id: str | os.PathLike,
        model: Any = None,
        processor: Any = None,
        *,
        revision: str | None = None,
        token: str | None = None,
    ) -> MultimodalIndex:
        """Open a saved index folder, or download a pushed one (a Hub dataset repo id).

        Args:
            path_or_repo_id: a folder written by `save`, or ``"org/name"`` of a dataset pushed by `push_to_hub`.
            model, processor: the query model; checked against the stored fingerprint. Without them the model
                recorded in the metadata is loaded at the first query.
            revision, token: for a Hub repo.

        Raises:
            ValueError: not an mm_hub index, or a mismatched model.
        """
        folder = Path(path_or_repo_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import HfHubHTTPError

            try:
                folder = Path(
                    snapshot_download(str(path_or_repo_id), repo_type="dataset", revision=revision, token=token)
                )
            except (HfHubHTTPError, OSError, ValueError) as error:
                raise ValueError(
                    f"{path_or_repo_id!r} is neither an index folder nor a dataset repo on the Hub: {error}"
                ) from error
        metadata_path = folder / METADATA_FILE
        if not metadata_path.exists():
            raise ValueError(f"{path_or_repo_id} is not an mm_hub index: it has no {METADATA_FILE}.")
        metadata = _checked_metadata(folder, str(path_or_repo_id))
        files = sorted(str(path) for path in (folder / "data").glob("*.parquet"))
        with quiet_datasets():
            rows = Dataset.from_parquet(files)
        return cls(rows, metadata, model, processor, faiss_dir=folder / "faiss")

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str | None = None,
        token: str | None = None,
    ) -> str:
        """Upload the index as a Hub dataset (rows, FAISS files, metadata, card) in one commit.

        Returns:
            The commit id.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mm_hub_index_push_") as tmp:
            self._write(Path(tmp))
            info = api.upload_folder(
                folder_path=tmp,
                repo_id=repo_id,
                repo_type="dataset",
                revision=revision,
                commit_message=commit_message or f"Upload mm_hub index ({len(self)} rows)",
            )
        return info.oid


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _checked_metadata(folder: Path, name: str) -> dict:
    """``mm_hub_index.json`` of an index folder, after checking what a hostile or damaged folder could get wrong:
    the format, that every embedding column is one mm_hub writes (their names become file names), and that each
    FAISS file has the checksum recorded when it was written.

    Raises:
        ValueError: naming the problem.
    """
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{name} is not an mm_hub index: cannot read its {METADATA_FILE} ({error}).") from error
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{name} has index format {version!r}; this mm_hub reads {READABLE_VERSIONS}.")
    columns = metadata.get("embedding_columns")
    if not isinstance(columns, list) or not columns or not set(columns) <= set(EMBEDDING_COLUMNS.values()):
        raise ValueError(
            f"{name} is not a valid mm_hub index: its embedding columns {columns!r} are not among "
            f"{sorted(EMBEDDING_COLUMNS.values())}."
        )
    checksums = metadata.get("faiss_sha256") or {}
    if version < 2:
        logger.warning("%s predates FAISS checksums (index format %s): its files cannot be verified.", name, version)
    for column in columns:
        path = folder / "faiss" / f"{column}.faiss"
        if not path.is_file():
            raise ValueError(f"{name} is incomplete: it has no faiss/{column}.faiss.")
        if version >= 2 and _sha256(path) != checksums.get(column):
            raise ValueError(
                f"{name} is damaged: faiss/{column}.faiss does not have the checksum recorded when the index was "
                "written. Download or build the index again."
            )
    return metadata


def _column_matrix(rows: Dataset, column: str, ids: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float32 matrix of a fixed-size-list embedding column (or of the rows ``ids``)."""
    data = rows.data.column(column)
    if ids is not None:
        data = data.take(pa.array(ids, type=pa.int64()))
    values = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    dim = values.type.list_size
    return np.ascontiguousarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def is_saved_index(path_or_repo_id: str) -> bool:
    """Whether ``path_or_repo_id`` is a saved (folder) or pushed (Hub dataset) mm_hub index."""
    if Path(path_or_repo_id).is_dir():
        return (Path(path_or_repo_id) / METADATA_FILE).exists()
    from huggingface_hub import file_exists
    from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled

    try:
        return file_exists(path_or_repo_id, METADATA_FILE, repo_type="dataset")
    except (HFValidationError, OfflineModeIsEnabled):  # not a Hub id, or offline: a plain dataset (a refused token,
        return False  # an unreachable Hub or a server error are not hidden: they say so)


def cached_index(
    model: Any,
    processor: Any,
    dataset: str | os.PathLike | None = None,
    split: str | None = None,
    image_column: str = "image",
    text_column: str | None = None,
    max_rows: int | None = None,
    cache: bool = True,
    progress: bool = True,
    model_id: str | None = None,
    revision: str | None = None,
) -> MultimodalIndex:
    """An index of a dataset for searching with ``model``, built once: it is saved under ``cache_dir() / "indexes"``
    keyed by the model's fingerprint and the dataset, and reopened on later starts (the app's Search tab).

    Args:
        model, processor: a retrieval model and its processor.
        dataset: a saved or pushed mm_hub index (folder or Hub dataset id with ``mm_hub_index.json``, used as
            is), any Hub dataset id or local dataset folder (``datasets.load_dataset``), or None for the
            built-in shapes retrieval data (200 generated scenes with 3 captions each).
        split: split to index (default ``"train"``; ``"eval"`` for the shapes data).
        image_column: the image column.
        text_column: the text column (a string or a list of captions); default ``"text"``, ``"caption"`` or
            ``"captions"``, whichever exists.
        max_rows: index only the first rows.
        cache: reuse / write the cached index.
        progress: show the embedding progress bar.
        model_id, revision: the model's id and revision, recorded in the index.

    Raises:
        ValueError: the dataset cannot be loaded, or has no image and text columns.
    """
    from .paths import cache_dir
    from .rows import load_split

    if dataset is not None and is_saved_index(str(dataset)):
        return MultimodalIndex.load(str(dataset), model, processor)
    fingerprint = model_fingerprint(model, processor)
    spec = {"dataset": str(dataset), "split": split, "image": image_column, "text": text_column, "rows": max_rows}
    key = hashlib.sha256(
        json.dumps([spec, fingerprint["config_hash"], fingerprint["probe_image_embeds"]]).encode()
    ).hexdigest()[:20]
    folder = cache_dir() / "indexes" / key
    if cache and (folder / METADATA_FILE).exists():
        try:
            return MultimodalIndex.load(folder, model, processor)
        except ValueError as error:  # a stale or damaged cache entry is rebuilt rather than trusted
            warnings.warn(f"Rebuilding the cached search index {folder}: {error}")
    dataset_id = str(dataset) if dataset is not None else "mm_hub shapes (retrieval, eval split)"
    try:
        if dataset is None:
            rows, base_dir = load_split("shapes", "num_train=0,num_eval=200,num_heldout=0", split or "eval")
        else:
            rows, base_dir = load_split(str(dataset), None, split or "train")
    except (OSError, ValueError) as error:  # missing, unreachable, unreadable: one message for the person
        raise ValueError(f"Cannot load the dataset {dataset_id!r} to index: {error}") from error
    if max_rows is not None:
        rows = rows.select(range(min(max_rows, len(rows))))
    text_column = text_column or next((c for c in ("text", "caption", "captions") if c in rows.column_names), None)
    if image_column not in rows.column_names or text_column not in rows.column_names:
        raise ValueError(
            f"Cannot search {dataset_id}: it needs an image column ({image_column!r}) and a text column (text, "
            f"caption or captions); its columns are {rows.column_names}."
        )
    index = MultimodalIndex.build(model, processor, rows, image_column=image_column, text_column=text_column,
                                  model_id=model_id, model_revision=revision, dataset_id=dataset_id,
                                  progress=progress, base_dir=base_dir)
    if cache:
        index.save(folder)
    return index


__all__ = ["METADATA_FILE", "MultimodalIndex", "cached_index", "is_saved_index"]
