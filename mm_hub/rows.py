"""Reading a dataset's rows, one way for training and for indexing: where the rows come from (`load_source`,
`load_split`), what an image cell opens as (`image_source`: a relative path is taken from the dataset's own folder),
which texts a text cell holds (`cell_texts`), and why a row is left out (the `SKIP_REASONS`, counted and reported
by both)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Why a row is left out: the names training_info.json and an index's metadata count skipped rows under.
UNREADABLE_IMAGE = "unreadable image"
EMPTY_TEXT = "empty text"  # missing, not a string, or only spaces
EMPTY_TARGET = "empty target"
INVALID_LABEL = "invalid label"  # missing, NaN, infinite or out of range
SKIP_REASONS = (UNREADABLE_IMAGE, EMPTY_TEXT, EMPTY_TARGET, INVALID_LABEL)
# Single data files `load_source` reads, by suffix (a folder or a Hub id goes to `datasets.load_dataset` as it is).
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_source(source: str, config: str | None = None, *, shapes_variant: str = "classification",
                streaming: bool = False, single_split: str = "train") -> tuple[Any, Path | None]:
    """Every split of a dataset, and the folder its relative image paths are taken from (None where it has none).

    Args:
        source: ``"shapes"`` (the built-in generated data, its ``shapes_variant``; ``config`` is ``key=value,...``,
            see `mm_hub.shapes.parse_shapes_config`), a ``save_to_disk`` folder, a csv/tsv/json/jsonl/parquet file,
            or anything `datasets.load_dataset` reads (a Hub id, a folder of data files).
        config: the dataset configuration (load_dataset's ``name``).
        shapes_variant: ``"classification"``, ``"retrieval"`` or ``"captioning"``.
        streaming: stream instead of downloading (an `IterableDatasetDict`).
        single_split: the split name of a dataset saved or given as one split.

    Raises:
        ValueError: a file of another kind.
    """
    import datasets

    if source == "shapes":
        from .shapes import load_shapes

        data = load_shapes(config, shapes_variant)
        return (datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()}) if streaming
                else data), None
    path = Path(source).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.Dataset):
            data = datasets.DatasetDict({single_split: data})
        if streaming:
            data = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()})
        return data, path
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot load {path}: expected one of {sorted(FILE_BUILDERS)} or a folder.")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        data = datasets.load_dataset(builder, data_files={single_split: str(path)}, streaming=streaming, **kwargs)
        return data, path.parent
    return datasets.load_dataset(source, config, streaming=streaming), path if path.is_dir() else None


def load_split(source: str, config: str | None = None, split: str = "train", streaming: bool = False,
               shapes_variant: str = "retrieval") -> tuple[Any, Path | None]:
    """One split of `load_source` (a `Dataset`, or with ``streaming`` an `IterableDataset`) and the folder its
    relative image paths are taken from.

    Raises:
        ValueError: a split the dataset does not have (naming its splits).
    """
    data, base_dir = load_source(source, config, shapes_variant=shapes_variant, streaming=streaming)
    if split not in data:
        raise ValueError(f"{source} has no split {split!r}; its splits are {sorted(data)}.")
    return data[split], base_dir


def image_source(value: Any, base_dir: str | os.PathLike | None = None) -> Any:
    """What `load_rgb_image` opens for one image cell: the bytes (or path) of an undecoded `datasets.Image` cell, or
    the cell itself (a PIL image, an array, a path or URL); a relative path is taken from ``base_dir``, the
    dataset's folder.

    Raises:
        ValueError: an empty cell.
    """
    if isinstance(value, dict):  # undecoded datasets Image: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("the row has no image")
    if isinstance(value, str) and base_dir is not None and "://" not in value and not os.path.isabs(value):
        value = str(Path(base_dir) / value)
    return value


def cell_texts(value: Any, lists: bool = False) -> list[str] | None:
    """The texts of a text cell: one string, or (``lists``) a list of captions; None when it holds no usable text
    (missing, not a string, or only spaces; a list with any such caption): the row is skipped as `EMPTY_TEXT`."""
    texts = value if lists and isinstance(value, (list, tuple)) else [value]
    if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
        return None
    return list(texts)


__all__ = ["EMPTY_TARGET", "EMPTY_TEXT", "FILE_BUILDERS", "INVALID_LABEL", "SKIP_REASONS", "UNREADABLE_IMAGE",
           "cell_texts", "image_source", "load_source", "load_split"]
