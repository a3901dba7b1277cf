"""Loading models and reading user inputs for `mm_hub.predictor.Predictor` (and so for the Gradio app).

Model resolution (first that is set wins): an explicit model id / path (the app's ``--model`` flag) > the
``MM_HUB_MODEL`` (and ``MM_HUB_REVISION``) environment variables > a ``space_config.json`` beside ``app.py``
(``{"model": "org/name", "revision": "main" or null}``, written by mm_hub's Space command) > the built-in demo
model (``training.demo.ensure_demo_model()``, trained once and cached).

Inputs are checked before they reach the model, and every problem is an `InputError` whose message a person
understands. Not a remote-code file: pushed models never import it.
"""

from __future__ import annotations

import json
import os
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoConfig

from .modeling_mm_hub import (
    MMHubEnsembleForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
)
from .processing_mm_hub import MAX_IMAGE_PIXELS, MMHubProcessor, load_rgb_image

# Captions longer than this many characters are refused; shorter ones are truncated to the processor's max_length.
MAX_TEXT_CHARS = 1000
SPACE_CONFIG = "space_config.json"
# The one answer to a path the app will not open, whatever the reason (no oracle for the server's files).
REFUSED_FILE = (
    "The image could not be opened: only images uploaded to this app can be used. Upload a PNG, JPEG, WebP, GIF, "
    "BMP or TIFF file."
)
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


class ModelLoadError(RuntimeError):
    """The model could not be found, reached or read: one message for the person starting the app."""


class InputError(ValueError):
    """An image or text the model cannot take; the message says what was wrong and what is accepted."""


@dataclass
class ModelSource:
    """Where the app's model comes from: ``model`` None means the built-in demo model."""

    model: str | None
    revision: str | None = None
    origin: str = "demo"  # "argument" | "env" | "space_config" | "demo"


def resolve_model_source(
    model: str | None = None, revision: str | None = None, app_dir: str | os.PathLike | None = None
) -> ModelSource:
    """Pick the model to serve: ``model`` argument > ``$MM_HUB_MODEL`` > ``app_dir/space_config.json`` > demo.

    Raises:
        ModelLoadError: ``space_config.json`` exists but is not a JSON object with a string ``"model"``.
    """
    if model:
        return ModelSource(model, revision, "argument")
    if os.environ.get("MM_HUB_MODEL"):
        return ModelSource(os.environ["MM_HUB_MODEL"], revision or os.environ.get("MM_HUB_REVISION") or None, "env")
    config_path = Path(app_dir) / SPACE_CONFIG if app_dir is not None else None
    if config_path is not None and config_path.exists():
        try:
            data = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{config_path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
            raise ModelLoadError(
                f'{config_path} must be a JSON object like {{"model": "org/name", "revision": null}}, got {data!r}.'
            )
        return ModelSource(data["model"], revision or data.get("revision") or None, "space_config")
    return ModelSource(None, None, "demo")


def _load_error_message(model_id: str, revision: str | None, error: BaseException) -> str:
    """One readable paragraph: what failed, why (the first line of the cause), and what to check."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return (
        f"Could not load the model {model_id!r} (revision {revision or 'main'!r}): {type(error).__name__}: {reason}\n"
        f"Check that the Hub id or local folder is right and holds an mm_hub model, that the revision exists, that "
        f"this machine can reach {endpoint} (or has the model in its cache), and, for a private repo, that HF_TOKEN "
        "is set."
    )


def _endpoint_reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether the Hub answers at all (any HTTP status counts); one quick try, no retries."""
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # refused, unresolvable, timed out, malformed URL
        return False
    return True


def _offline_fallback(model_id: str, revision: str | None) -> bool:
    """For a Hub id: True when the Hub cannot be reached but the model is cached (load it from the cache).

    Checked up front because the Hub client retries an unreachable endpoint with backoff for ~30 s before failing;
    a person starting the app gets the answer in seconds instead.

    Raises:
        ModelLoadError: the Hub cannot be reached and the model is not in the cache.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(model_id).is_dir() or constants.HF_HUB_OFFLINE or _endpoint_reachable(constants.ENDPOINT):
        return False
    if isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str):
        return True
    raise ModelLoadError(
        f"Could not load the model {model_id!r} (revision {revision or 'main'!r}): cannot reach {constants.ENDPOINT} "
        "and the model is not in the local cache. Check the network (or HF_ENDPOINT), or pass a local folder."
    )


def load_model(
    model_id: str | os.PathLike, revision: str | None = None, token: str | None = None
) -> tuple[
    MMHubForImageTextClassification | MMHubEnsembleForImageTextClassification | MMHubForImageTextRetrieval,
    MMHubProcessor,
]:
    """Load a saved or pushed mm_hub model (the head named in its config's ``architectures``) and its processor.

    Raises:
        ModelLoadError: the id/folder does not exist, cannot be reached, or is not an mm_hub model.
    """
    model_id = str(model_id)
    hub_kwargs = {"revision": revision, "token": token, "local_files_only": _offline_fallback(model_id, revision)}
    try:
        config = AutoConfig.from_pretrained(model_id, **hub_kwargs)
    except Exception as error:  # hub, network and file errors come in many types; the user needs one message
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    if config.model_type != "mm_hub":
        raise ModelLoadError(
            f"{model_id!r} is a {config.model_type!r} model; this app serves mm_hub image+text models "
            "(config model_type 'mm_hub')."
        )
    heads = {cls.__name__: cls for cls in (MMHubForImageTextRetrieval, MMHubEnsembleForImageTextClassification)}
    head = next((heads[name] for name in config.architectures or [] if name in heads), MMHubForImageTextClassification)
    try:
        model = head.from_pretrained(model_id, **hub_kwargs)
        processor = MMHubProcessor.from_pretrained(model_id, **hub_kwargs)
    except Exception as error:
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    return model.eval(), processor


def resolved_commit(model_id: str | os.PathLike, revision: str | None = None) -> str | None:
    """The commit a Hub model was loaded from (the name of its cached snapshot folder; no network call); None for
    local folders."""
    from huggingface_hub import try_to_load_from_cache

    if Path(model_id).is_dir():
        return None
    cached = try_to_load_from_cache(str(model_id), "config.json", revision=revision)
    return Path(cached).parent.name if isinstance(cached, str) else None


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
        InputError: nothing given, a refused path, an empty or unreadable file, or more than `MAX_IMAGE_PIXELS`
            pixels.
    """
    if isinstance(image, dict):
        image = image.get("path")
    if image is None or (isinstance(image, str) and not image.strip()):
        raise InputError("No image was given: upload an image (PNG, JPEG, WebP, GIF, BMP, TIFF) or take a photo.")
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
            f"The file {name!r} could not be read as an image ({cause}). Upload a PNG, JPEG, WebP, GIF, BMP or TIFF "
            f"image of at most {MAX_IMAGE_PIXELS:,} pixels."
        ) from None


def example_pairs(folder: str | os.PathLike | None = None, image_size: int = 192) -> list[list[str]]:
    """``[[image_path, caption], ...]`` for the app's examples: scenes of the built-in shapes data, rendered once
    into ``folder`` (default: ``mm_hub.defaults.cache_dir() / "examples"``) and reused."""
    from .defaults import cache_dir
    from .shapes import render_scene

    folder = Path(folder) if folder is not None else cache_dir() / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index, (scene, caption) in enumerate(EXAMPLE_SCENES):
        path = folder / f"shapes_{index}_{image_size}.png"
        if not path.exists():
            temporary = path.with_suffix(f".tmp{os.getpid()}.png")
            render_scene(scene, image_size=image_size, seed=index).save(temporary)
            os.replace(temporary, path)  # concurrent app starts never see a half-written file
        pairs.append([str(path), caption])
    return pairs


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


def check_k(k: Any) -> int:
    """A positive number of results (whole floats from a slider are accepted)."""
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
        raise InputError(f"The number of results must be a whole number from 1 to 100, got {k!r}.")
    return k


def is_saved_index(dataset: str, metadata_file: str) -> bool:
    """Whether ``dataset`` is a saved (folder) or pushed (Hub dataset) mm_hub index."""
    if Path(dataset).is_dir():
        return (Path(dataset) / metadata_file).exists()
    from huggingface_hub import file_exists

    try:
        return file_exists(dataset, metadata_file, repo_type="dataset")
    except Exception:  # not a Hub id, unreachable Hub, ...: then it is treated as a plain dataset
        return False


def load_rows(dataset: str | os.PathLike | None, split: str | None, max_rows: int | None) -> tuple[Any, str]:
    """The rows to index and a name for them: the built-in shapes retrieval data, or ``load_dataset(dataset)``."""
    if dataset is None:
        from .shapes import make_shapes_dataset

        rows = make_shapes_dataset(num_train=0, num_eval=200, num_heldout=0, task="retrieval")[split or "eval"]
        name = "mm_hub shapes (retrieval, eval split)"
    else:
        from datasets import load_dataset

        try:
            rows = load_dataset(str(dataset), split=split or "train")
        except Exception as error:  # missing / unreachable / unreadable: one message for the person starting the app
            raise InputError(f"Cannot load the dataset {str(dataset)!r} to index: {error}") from error
        name = str(dataset)
    if max_rows is not None:
        rows = rows.select(range(min(max_rows, len(rows))))
    return rows, name


__all__ = [
    "EXAMPLE_SCENES",
    "MAX_IMAGE_PIXELS",
    "MAX_TEXT_CHARS",
    "REFUSED_FILE",
    "SPACE_CONFIG",
    "InputError",
    "ModelLoadError",
    "ModelSource",
    "check_k",
    "check_text",
    "confined_file",
    "example_pairs",
    "is_saved_index",
    "load_model",
    "load_rows",
    "read_image",
    "resolve_model_source",
    "resolved_commit",
]
