"""The app's examples: rows of the shapes data a model was trained on, each with its expected answer.

The rows are the first ones of the ``eval`` split (two true captions, two false ones: the data alternates them) and
the first of the ``heldout`` split (a caption naming a colour+shape pair no training caption named: the honest hard
case). The generator is deterministic and each split has its own random stream, so these rows are the very ones the
model's ``eval_results.json`` scored, whatever the split sizes. Images keep their size and pixels (the browser
enlarges them for display): enlarged files would reach the model resampled, not as scored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from ._files import write_bytes

# (split, row) of the examples, in the order the app lists them.
EXAMPLE_ROWS = (("eval", 0), ("eval", 1), ("eval", 2), ("eval", 3), ("heldout", 0))
# The Describe tab's: (split, row, what is asked: its caption or its question).
DESCRIBE_ROWS = (("eval", 0, "caption"), ("eval", 0, "question"), ("eval", 1, "question"), ("heldout", 0, "caption"),
                 ("heldout", 0, "question"))
HELDOUT_NOTE = " (held-out pair: never named in training)"
EXAMPLE_KEYS = ("image_size", "seed", "partial_caption_rate")  # the config values that change these rows
MIN_SIDE, MAX_SIDE = 16, 512


def shapes_examples(dataset_config: str | None = None, folder: str | os.PathLike | None = None,
                    task: str = "classification") -> list[list[str]]:
    """``[[image_path, text, expected], ...]``: rows of the shapes data made with ``dataset_config`` (e.g.
    ``"num_train=30000,image_size=48"``; only ``image_size``, ``seed`` and ``partial_caption_rate`` change these
    rows), rendered once into ``folder`` (default: ``mm_hub.paths.cache_dir() / "examples"``) and reused, with
    `HELDOUT_NOTE` on a held-out row's ``expected``.

    ``task`` ``"classification"``: the `EXAMPLE_ROWS`, a caption each, ``expected`` its label (``match`` /
    ``mismatch``); ``"captioning"``: the `DESCRIBE_ROWS`, ``text`` empty (``expected``: the scene's caption) or a
    question (``expected``: its answer).

    Raises:
        ValueError: a malformed ``dataset_config`` (see `mm_hub.shapes.parse_shapes_config`), or an ``image_size``
            outside `MIN_SIDE`..`MAX_SIDE`.
    """
    from .paths import cache_dir
    from .shapes import LABELS, make_shapes_dataset, parse_shapes_config

    # Only what changes these rows is kept, bounded: the config comes from a model's training_info.json, which a
    # hostile repo could fill with a 100,000-pixel image size.
    kwargs = {key: value for key, value in parse_shapes_config(dataset_config).items() if key in EXAMPLE_KEYS}
    if not MIN_SIDE <= kwargs.get("image_size", 64) <= MAX_SIDE:
        raise ValueError(f"The examples' image_size must be {MIN_SIDE} to {MAX_SIDE} pixels, got {kwargs['image_size']}.")
    if task not in ("classification", "captioning"):
        raise ValueError(f"The examples are of the classification or captioning data, not {task!r}.")
    chosen = EXAMPLE_ROWS if task == "classification" else DESCRIBE_ROWS
    sizes = {split: 1 + max(spec[1] for spec in chosen if spec[0] == split) for split in ("eval", "heldout")}
    kwargs.update(num_train=0, num_eval=sizes["eval"], num_heldout=sizes["heldout"], task=task)
    key = hashlib.sha256(json.dumps(sorted(kwargs.items())).encode()).hexdigest()[:12]
    folder = (Path(folder) if folder is not None else cache_dir() / "examples") / key
    index_file = folder / "examples.json"
    if index_file.is_file():
        return [[str(folder / name), text, expected] for name, text, expected in json.loads(index_file.read_text())]
    data = make_shapes_dataset(**kwargs)
    rows = []
    for number, (split, row, *asked) in enumerate(chosen):
        example = data[split][row]
        buffer = io.BytesIO()
        example["image"].convert("RGB").save(buffer, format="PNG")
        name = f"shapes_{split}_{row}.png"
        write_bytes(folder / name, buffer.getvalue())  # written whole: concurrent starts never see half a file
        if task == "classification":
            text, expected = example["text"], LABELS[example["label"]]
        else:
            text, expected = ("", example["caption"]) if asked == ["caption"] else (example["question"],
                                                                                    example["answer"])
        rows.append([name, text, expected + (HELDOUT_NOTE if split == "heldout" else "")])
    write_bytes(index_file, json.dumps(rows).encode())
    return [[str(folder / name), text, expected] for name, text, expected in rows]


__all__ = ["DESCRIBE_ROWS", "EXAMPLE_ROWS", "HELDOUT_NOTE", "shapes_examples"]
