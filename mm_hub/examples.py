"""The app's examples: scenes of the built-in shapes data with captions, rendered once into mm_hub's cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ._files import write_bytes

# (scene, caption) examples from the built-in shapes data: true and false captions, one with a held-out pair.
EXAMPLE_SCENES = [
    ([("red", "circle", "left"), ("blue", "square", "right")], "a red circle on the left"),
    ([("red", "circle", "left"), ("blue", "square", "right")], "a blue circle on the right"),
    ([("green", "square", "left"), ("yellow", "circle", "center"), ("blue", "triangle", "right")], "a blue triangle"),
    (
        [("green", "square", "left"), ("yellow", "circle", "center"), ("blue", "triangle", "right")],
        "a green square on the right",
    ),
    ([("yellow", "triangle", "center")], "a yellow triangle in the center"),
]


def example_pairs(folder: str | os.PathLike | None = None, image_size: int = 192) -> list[list[str]]:
    """``[[image_path, caption], ...]`` for the app's examples: scenes of the built-in shapes data, rendered once
    into ``folder`` (default: ``mm_hub.paths.cache_dir() / "examples"``) and reused."""
    from .paths import cache_dir
    from .shapes import render_scene

    folder = Path(folder) if folder is not None else cache_dir() / "examples"
    pairs = []
    for index, (scene, caption) in enumerate(EXAMPLE_SCENES):
        path = folder / f"shapes_{index}_{image_size}.png"
        if not path.exists():  # written whole or not at all: concurrent app starts never see half a file
            buffer = io.BytesIO()
            render_scene(scene, image_size=image_size, seed=index).save(buffer, format="PNG")
            write_bytes(path, buffer.getvalue())
        pairs.append([str(path), caption])
    return pairs


__all__ = ["EXAMPLE_SCENES", "example_pairs"]
