"""Shared builders of the index / recommendation tests: a tiny retrieval model and a small catalogue."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset

from mm_hub import MMHubForImageTextRetrieval
from tests.helpers import random_images, tiny_config, tiny_processor

CATEGORIES = ("shoes", "hats", "bags")


def retrieval_model(seed: int = 0, **config_kwargs) -> MMHubForImageTextRetrieval:
    """A tiny random dual encoder (8-d embeddings unless ``projection_dim`` is given), deterministic per seed."""
    torch.manual_seed(seed)
    return MMHubForImageTextRetrieval(tiny_config(**config_kwargs)).eval()


def save_model(folder: Path, seed: int = 0) -> Path:
    """Save a tiny retrieval model + processor into ``folder``."""
    retrieval_model(seed).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


def catalogue(num_rows: int = 12) -> Dataset:
    """Rows with ``image``, ``text``, ``category`` and ``price`` columns."""
    colours = ("red", "green", "blue", "yellow")
    return Dataset.from_dict(
        {
            "image": random_images(num_rows),
            "text": [f"a {colours[i % 4]} item number {i}" for i in range(num_rows)],
            "category": [CATEGORIES[i % 3] for i in range(num_rows)],
            "price": [float(10 + i) for i in range(num_rows)],
        }
    )
