"""What the app accepts from a request: an image it may open and a text it can read, or one clear `InputError`.

A request can name any path and send any string. `read_image` opens only files inside the folders it is allowed
(`confined_file`: one refusal for every other path, so refusals tell nothing about the server's files) and bounds
what an image may cost with the processor's limits (`MMHubProcessor.load_image`); `check_text` refuses what a
tokenizer cannot take.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .model.processing_mm_hub import ACCEPTED_FILES, FORMAT_NAMES, MMHubProcessor, load_rgb_image

# Captions longer than this many characters are refused; shorter ones are truncated to the processor's max_length.
MAX_TEXT_CHARS = 1000
# The one answer to a path the app will not open, whatever the reason (no oracle for the server's files).
REFUSED_FILE = (
    f"The image could not be opened: only images uploaded to this app can be used. Upload a {FORMAT_NAMES} file."
)


class InputError(ValueError):
    """An image or text the model cannot take; the message says what was wrong and what is accepted."""


def confined_file(path: Any, allowed_dirs: Sequence[str | os.PathLike]) -> Path:
    """``path`` with links resolved, when it names a regular file inside one of ``allowed_dirs``.

    Raises:
        InputError: `REFUSED_FILE`, the same message whatever the reason (outside the folders, missing, a folder, a
            name too long, a NUL byte, ...), so that refusals tell nothing about the server's files.
    """
    try:
        real = Path(os.path.realpath(os.fspath(path)))
        roots = [Path(os.path.realpath(root)) for root in allowed_dirs]
        if any(real.is_relative_to(root) for root in roots) and real.is_file():
            return real
    except (OSError, ValueError, TypeError):
        pass
    raise InputError(REFUSED_FILE)


def read_image(
    image: Any, processor: MMHubProcessor | None = None, allowed_dirs: Sequence[str | os.PathLike] | None = None
) -> Image.Image:
    """Open a user's image safely and return it as RGB, bounded in size for ``processor``.

    Accepts a file path, a Gradio file payload (a dict with ``"path"``), a PIL image or a numpy array. With
    ``allowed_dirs`` (what the app passes), a path must name a file inside one of those folders, else it is refused
    with one message for every reason. The pixel count is checked from the header before decoding (see
    `MMHubProcessor.load_image` for every limit); EXIF rotation is applied and any mode becomes RGB.

    Raises:
        InputError: nothing given, a refused path, an empty or unreadable file, or one outside `ACCEPTED_FILES`.
    """
    if isinstance(image, dict):
        image = image.get("path")
    if image is None or (isinstance(image, str) and not image.strip()):
        raise InputError(f"No image was given: upload an image ({FORMAT_NAMES}) or take a photo.")
    if isinstance(image, (str, os.PathLike)):
        path = confined_file(image, allowed_dirs) if allowed_dirs is not None else Path(image)
        name = path.name
        if not path.is_file():
            raise InputError(f"The image file {name!r} was not found.")
        if path.stat().st_size == 0:
            raise InputError(f"The file {name!r} is empty (0 bytes); upload an image file.")
        image = str(path)
    elif not isinstance(image, (np.ndarray, Image.Image)):
        raise InputError(f"Expected an image file, got {type(image).__name__}.")
    try:
        return processor.load_image(image) if processor is not None else load_rgb_image(image)
    except (TypeError, ValueError) as error:
        if not isinstance(image, str):
            raise InputError(f"The image array cannot be read: {error}") from None
        cause = str(error.__cause__ or error).replace(image, name)
        raise InputError(
            f"The file {name!r} could not be read as an image ({cause}). Accepted: {ACCEPTED_FILES}."
        ) from None


def check_text(text: Any, what: str = "text") -> str:
    """Return the caption (or query; ``what`` names it in messages) with control characters made spaces, stripped.

    Raises:
        InputError: not a string, longer than `MAX_TEXT_CHARS` characters, not valid Unicode (an unpaired surrogate),
            or empty once control characters are removed.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be a string, got {type(text).__name__}.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"The {what} has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}. Shorten it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"The {what} is not valid Unicode: character {error.start + 1} is an unpaired surrogate "
            f"({text[error.start]!r}). Send UTF-8 text."
        ) from None
    text = "".join(" " if unicodedata.category(char) == "Cc" else char for char in text).strip()
    if not text:
        raise InputError(f"The {what} is empty: type a few words, e.g. 'a red circle on the left'.")
    return text


def check_whole_number(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int from ``low`` to ``high``; a whole float (what a slider sends: ``3.0``) is taken, nothing is
    cast before it is checked.

    Raises:
        InputError: one message for each way it can be wrong: missing, not a number (a string, a bool), not finite,
            not whole, or out of range; each names ``what`` and the accepted range.
    """
    expected = f"a whole number from {low} to {high}"
    if value is None:
        raise InputError(f"The {what} is missing: give {expected}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"The {what} must be {expected}, got the {type(value).__name__} {value!r}.")
    if not math.isfinite(value):
        raise InputError(f"The {what} must be {expected}, got {value!r}, which is not a finite number.")
    if value != int(value):
        raise InputError(f"The {what} must be {expected}, got {value!r}, which is not whole.")
    if not low <= value <= high:
        raise InputError(f"The {what} must be {expected}, got {int(value)}.")
    return int(value)


MAX_RESULTS = 100


def check_k(k: Any) -> int:
    """A number of results, 1 to `MAX_RESULTS` (see `check_whole_number`)."""
    return check_whole_number(k, "number of results", 1, MAX_RESULTS)


MAX_CANDIDATES = 32


def check_candidates(candidates: Any) -> list[str]:
    """Candidate captions for zero-shot labelling: a list of strings, or one string with a caption per line (or,
    on one line, separated by commas); each checked by `check_text`, repeats dropped.

    Raises:
        InputError: fewer than 2 or more than `MAX_CANDIDATES` different captions, or a caption `check_text` refuses.
    """
    if isinstance(candidates, str):
        candidates = candidates.splitlines() if "\n" in candidates.strip() else candidates.split(",")
    if not isinstance(candidates, (list, tuple)):
        raise InputError(f"The candidate captions must be a string or a list of strings, got {type(candidates).__name__}.")
    texts = list(dict.fromkeys(check_text(text, "candidate caption") for text in candidates
                               if not (isinstance(text, str) and not text.strip())))
    if not 2 <= len(texts) <= MAX_CANDIDATES:
        raise InputError(f"Give 2 to {MAX_CANDIDATES} different candidate captions, one per line (or separated by "
                         f"commas); got {len(texts)}.")
    return texts


def check_row(row: Any, rows: int) -> int:
    """A row number of a collection of ``rows`` items (see `check_whole_number`).

    Raises:
        InputError: not a whole number from 0 to ``rows - 1``.
    """
    if rows < 1:
        raise InputError("There is no item to pick: the collection is empty.")
    return check_whole_number(row, "item to pick (its row number)", 0, rows - 1)


__all__ = ["MAX_CANDIDATES", "MAX_RESULTS", "MAX_TEXT_CHARS", "REFUSED_FILE", "InputError", "check_candidates",
           "check_k", "check_row", "check_text", "check_whole_number", "confined_file", "read_image"]
