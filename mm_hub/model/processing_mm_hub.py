"""Processor of mm_hub models: an image processor (resize / crop / normalise) plus a pretrained tokenizer.

Also the one place that opens an image (`load_rgb_image`) and bounds what it may cost: the app, training and the
search index all open images through it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps
from transformers import BatchFeature, ProcessorMixin

ACCEPTED_IMAGES = (
    "a PIL.Image, a numpy array (H, W), (H, W, C) or (C, H, W), a torch tensor, bytes, or a file path / URL"
)
# The formats read from files, bytes and URLs, chosen by decoder (whatever a file's name says): those the app
# advertises. Containers such as ICO and ICNS declare one size in their header and hold an image of another.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (multi-picture JPEG)
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# Decoding costs memory in proportion to an image's pixels, not its file size (a few hundred bytes of PNG can hold
# gigapixels): what a file's decoder will need is computed from its header and refused above this, before decoding.
MAX_DECODE_BYTES = 160_000_000
# Peak bytes a decoder needs per pixel (measured with VmHWM): PIL keeps up to 4 bytes a pixel; its WebP decoder
# holds the RGBA frame four times (libwebp's buffer, a bytes copy, a stream, the image).
_DECODE_BYTES_PER_PIXEL = {"WEBP": 16}
# 40 MP of the other formats; everything after decoding works on an image the processor bounds.
MAX_IMAGE_PIXELS = MAX_DECODE_BYTES // 4
ACCEPTED_FILES = (f"{FORMAT_NAMES} images of at most {MAX_IMAGE_PIXELS:,} pixels "
                  f"({MAX_DECODE_BYTES // _DECODE_BYTES_PER_PIXEL['WEBP']:,} for WebP)")
# Resizing the short side to the model's size multiplies the long side of a thin strip (a 1 x 200,000 PNG would
# grow to gigabytes): images more elongated than this are cropped around their centre first.
MAX_ASPECT_RATIO = 10
# PIL decodes an image row by row with a pointer per row: a 1 x 40,000,000 strip costs 480 MB to open. Images with
# a longer side than this are refused from their header too.
MAX_IMAGE_SIDE = 30_000
# A URL's answer is read up to this many bytes (an image within the pixel limits compresses to far less).
MAX_DOWNLOAD_BYTES = 100_000_000
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBa", "La", "CMYK", "YCbCr", "I", "F")
_REDUCE_AS = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}
_BAND_PIXELS = 2**22  # pixels per band of `_reduce` (16 MB at 4 bytes a pixel)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array to uint8: floats in [0, 1] are multiplied by 255, wider integers are rescaled to 0-255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("The image array contains NaN or infinite values.")
    if array.size and array.min() >= 0 and array.max() <= 1.0:
        return np.round(array * 255).astype(np.uint8)
    low, high = (0.0, 255.0) if array.min() >= 0 and array.max() <= 255 else (array.min(), array.max())
    return np.round((array - low) / max(high - low, 1e-12) * 255).astype(np.uint8)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """(H, W), (H, W, C) or (C, H, W) arrays with 1, 3 or 4 channels -> PIL image."""
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(
            f"Cannot read an image from an array of shape {array.shape}; expected (H, W), (H, W, C) or (C, H, W) "
            "with C in 1, 3, 4 and non-zero sides."
        )
    return Image.fromarray(_to_uint8(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to RGB; transparent areas become white, 16-bit and float images are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return _array_to_pil(np.asarray(image)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _download(url: str) -> bytes:
    """The body of an http(s) URL, refused beyond `MAX_DOWNLOAD_BYTES` (read as it streams, whatever the headers say)."""
    with httpx.stream("GET", url, timeout=30.0, follow_redirects=True) as response:
        response.raise_for_status()
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_DOWNLOAD_BYTES:
                raise ValueError(f"the answer is larger than {MAX_DOWNLOAD_BYTES:,} bytes")
    return bytes(body)


def _open_source(source: str | bytes) -> Image.Image:
    """Open (lazily: header only) an image from bytes, an http(s) URL, a ``data:image/...;base64,`` URI or a path,
    trying only the decoders of `ACCEPTED_FORMATS`."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif source.startswith(("http://", "https://")):
        source = io.BytesIO(_download(source))
    elif source.startswith("data:image/"):
        source = io.BytesIO(base64.b64decode(source.split(",", 1)[1]))
    try:
        return Image.open(source, formats=ACCEPTED_FORMATS)
    except Image.UnidentifiedImageError:
        raise ValueError(f"not a {FORMAT_NAMES} image") from None


def decode_cost(image: Image.Image) -> int:
    """Peak bytes decoding ``image`` (opened, not yet loaded) will take, from its header: its pixels times what its
    format's decoder needs per pixel."""
    width, height = image.size
    return width * height * _DECODE_BYTES_PER_PIXEL.get(image.format or "", 4)


def _open_checked(source: str | bytes) -> Image.Image:
    """`_open_source`, refusing images whose decoding would cost more than `MAX_DECODE_BYTES`, or with a side longer
    than `MAX_IMAGE_SIDE`, from their header (before decoding)."""
    try:
        with warnings.catch_warnings():  # PIL warns from ~89 MP and refuses from ~179 MP; ours is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_source(source)
    except Image.DecompressionBombError as error:
        raise ValueError(f"the image is too large ({error}); the limit is {MAX_IMAGE_PIXELS:,} pixels") from None
    width, height = image.size
    per_pixel = _DECODE_BYTES_PER_PIXEL.get(image.format or "", 4)
    if decode_cost(image) > MAX_DECODE_BYTES or max(width, height) > MAX_IMAGE_SIDE:
        image.close()
        raise ValueError(
            f"the image is too large: {width} x {height} = {width * height:,} pixels; the limit for {image.format} "
            f"is {MAX_DECODE_BYTES // per_pixel:,} pixels and {MAX_IMAGE_SIDE:,} on a side"
        )
    return image


def fit_image(image: Image.Image, side: int | None) -> Image.Image:
    """Bound what an image can cost the processor: when its short side is 4x ``side`` or more, shrink it by a whole
    factor (box filter) that keeps it at least 2x ``side``; then crop it to `MAX_ASPECT_RATIO` around its centre.

    ``side`` is the short side the image processor resizes to (see `MMHubProcessor.fit_side`); None only crops.
    Returns the image itself when nothing needs to change.
    """
    factor = min(image.size) // (2 * side) if side else 0
    if factor >= 2:  # shrunk before cropping, so that no full-size copy is ever made
        image = _reduce(image, factor)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long > MAX_ASPECT_RATIO * short:
        keep = MAX_ASPECT_RATIO * short
        start = (long - keep) // 2
        image = image.crop((start, 0, start + keep, height) if width > height else (0, start, width, start + keep))
    return image


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """``image.reduce(factor)`` (each output pixel the mean of a factor x factor block), a band of rows at a time:
    PIL would copy a whole image to convert it to a mode that reduces (palette, 1-bit, 16-bit) or to premultiply its
    alpha, and at 40 MP each copy is 160 MB."""
    mode = image.mode
    if mode not in _REDUCIBLE_MODES:  # the smallest mode that reduces
        transparent = mode == "PA" or "transparency" in image.info
        mode = _REDUCE_AS.get(mode, "RGBA" if transparent else "RGB")
    width, height = image.size
    rows = factor * max(1, _BAND_PIXELS // (width * factor))  # a whole number of blocks per band
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        reduced.paste((band if band.mode == mode else band.convert(mode)).reduce(factor), (0, top // factor))
    return reduced


def load_rgb_image(image: Any, fit_to: int | None = None) -> Image.Image:
    """Turn one image of any accepted kind into an RGB PIL image (EXIF rotation applied, alpha over white).

    Files, bytes and URLs are read only as `ACCEPTED_FORMATS`, and refused from their header, before any pixel is
    decoded, when decoding them would take more than `MAX_DECODE_BYTES` (`MAX_IMAGE_PIXELS` pixels; a quarter of that
    for WebP); every image is cropped to at most `MAX_ASPECT_RATIO` around its centre (see `fit_image`), and with
    ``fit_to`` (the short side the image processor resizes to) a much larger image is shrunk first, so that no
    input costs more than a bounded amount of memory and time.

    Raises:
        TypeError: for objects that are not images (naming the type received).
        ValueError: for files or URLs that cannot be read, in another format, truncated or oversized
            (decompression-bomb) images, and arrays of the wrong shape.
    """
    name = None
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        name = "bytes" if isinstance(image, (bytes, bytearray)) else str(image)
        try:
            image = _open_checked(image if name == "bytes" else name)
        except Exception as error:  # PIL, httpx and the OS raise many types; say which source failed and why
            raise ValueError(f"Cannot read an image from {name[:200]!r}: {error}") from error
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif type(image).__module__.startswith("torch"):
        image = _array_to_pil(image.detach().cpu().numpy())
    elif not isinstance(image, Image.Image):
        raise TypeError(f"Expected an image ({ACCEPTED_IMAGES}), got {type(image).__name__}.")
    if 0 in image.size:
        raise ValueError(f"The image has an empty side (size {image.size}).")
    try:  # decoding is lazy in PIL: truncated or malformed files fail here
        if fit_to and getattr(image, "format", None) == "JPEG":
            scale = min(image.size) // (2 * fit_to)
            if scale >= 2:  # decode a large JPEG at 1/2, 1/4 or 1/8 scale instead of in full
                image.draft(image.mode, (image.size[0] // scale, image.size[1] // scale))
        return to_rgb(ImageOps.exif_transpose(fit_image(image, fit_to)))
    except Exception as error:  # OSError, ValueError, SyntaxError, DecompressionBombError, ... from the decoders
        where = f" from {name[:200]!r}" if name else ""
        raise ValueError(f"Cannot read an image{where}: {error}") from error


def _as_list(value: Any, kinds: tuple[type, ...]) -> list[Any]:
    """A single item (of one of ``kinds``) becomes a one-element list; sequences (lists, tuples, a dataset's
    column) are copied into a list."""
    if isinstance(value, kinds):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


# The JSON files a saved processor is read from (the tokenizer's vocabulary lives in tokenizer.json).
PROCESSOR_JSON_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json",
                        "special_tokens_map.json", "added_tokens.json")


def check_tokenizer(tokenizer: Any, source: str) -> None:
    """Refuse a tokenizer with no vocabulary besides its special tokens: what loading gives, without a word of
    warning, when a model's tokenizer.json is missing (every word would read as ``[UNK]``).

    Raises:
        ValueError: naming ``source`` and the files to restore.
    """
    vocabulary = set(tokenizer.get_vocab().values())
    if vocabulary <= set(tokenizer.all_special_ids):
        raise ValueError(
            f"The tokenizer of {source} has no vocabulary, only its {len(vocabulary)} special tokens: its "
            f"tokenizer.json (or vocabulary file) is missing or unreadable, so every word would read as "
            f"{tokenizer.unk_token}. Save the processor into it again (`processor.save_pretrained`)."
        )


def _unreadable_json(source: str | os.PathLike, kwargs: dict[str, Any]) -> str | None:
    """The first of `PROCESSOR_JSON_FILES` that ``source`` (a folder or Hub id) holds and that is not JSON."""
    from transformers.utils import cached_file

    hub = {key: kwargs[key] for key in ("revision", "token", "cache_dir", "local_files_only", "subfolder")
           if key in kwargs}
    for name in PROCESSOR_JSON_FILES:
        try:
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **hub)
            if path is not None:
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)
        except (OSError, ValueError):  # not JSON, not UTF-8, unreadable
            return name
    return None


class MMHubProcessor(ProcessorMixin):
    r"""Prepares (image, text) inputs for mm_hub models.

    Args:
        image_processor: the vision encoder's image processor (for ResNet a `ConvNextImageProcessor`).
        tokenizer: the pretrained tokenizer of the text side.
        max_length (`int`, defaults to 64): texts longer than this many tokens are truncated.
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = 64, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> MMHubProcessor:
        """`ProcessorMixin.from_pretrained`, refusing what cannot work: a processor file that is not JSON is an error
        naming it, and so is a tokenizer without a vocabulary (`check_tokenizer`).

        Raises:
            ValueError: a file that cannot be read, or a tokenizer without a vocabulary.
        """
        try:
            processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except Exception as error:  # the tokenizers' Rust errors are plain Exceptions
            broken = _unreadable_json(pretrained_model_name_or_path, kwargs)
            if broken is None:
                raise
            raise ValueError(f"{broken} of {pretrained_model_name_or_path} cannot be read ({error}); save the "
                             "processor into it again (`processor.save_pretrained`).") from error
        check_tokenizer(processor.tokenizer, str(pretrained_model_name_or_path))
        return processor

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        text_target: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn images and/or texts into model inputs.

        Args:
            images: one image or a list of them (see ``ACCEPTED_IMAGES``; any PIL mode is converted to RGB).
            text: one string or a list of strings, truncated to ``max_length`` tokens and padded to the longest. For
                generation, the prompts (questions; none for captions).
            return_tensors: ``"pt"`` (default), ``"np"`` or None.
            text_target: for training `MMHubForConditionalGeneration`: the text to write for each image (after its
                prompt, if any).
            **kwargs: passed to the tokenizer (e.g. ``padding="max_length"``).

        Returns:
            A `BatchFeature` with ``pixel_values`` (B, 3, H, W) and/or ``input_ids``/``attention_mask`` (B, T); with
            ``text_target`` also ``decoder_input_ids`` / ``decoder_attention_mask`` / ``labels`` (see
            `teacher_forcing`).

        Raises:
            ValueError: nothing given, an empty list, or different numbers of images and texts.
            TypeError: an item that is not an image, or a text that is not a string.
        """
        if images is None and text is None and text_target is None:
            raise ValueError("Give `images`, `text`, or both.")
        image_list = None if images is None else _as_list(images, (Image.Image, str, os.PathLike, np.ndarray))
        text_list = None if text is None else _as_list(text, (str,))
        if image_list is not None and not image_list:
            raise ValueError("`images` is an empty list; give at least one image.")
        if text_list is not None and not text_list:
            raise ValueError("`text` is an empty list; give at least one string.")
        if image_list is not None and text_list is not None and len(image_list) != len(text_list):
            raise ValueError(f"Got {len(image_list)} images and {len(text_list)} texts; pairs need one image per text.")

        data: dict[str, Any] = {}
        if image_list is not None:
            rgb = [self.load_image(image) for image in image_list]
            data.update(self.image_processor(images=rgb, return_tensors=return_tensors))
        if text_list is not None:
            for item in text_list:
                if not isinstance(item, str):
                    raise TypeError(f"Each text must be a str, got {type(item).__name__}.")
            tokenizer_kwargs = {"padding": True, "truncation": True, "max_length": self.max_length, **kwargs}
            data.update(
                self.tokenizer(text_list, return_tensors=return_tensors, return_token_type_ids=False, **tokenizer_kwargs)
            )
        if text_target is not None:
            targets = _as_list(text_target, (str,))
            prompts = text_list if text_list is not None else [""] * len(targets)
            if len(prompts) != len(targets):
                raise ValueError(f"Got {len(prompts)} prompts and {len(targets)} targets; give one target per prompt.")
            data.update(self.teacher_forcing(prompts, targets))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def teacher_forcing(self, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, list[list[int]]]:
        """What a generation model trains on, per row: it reads ``[CLS] prompt [SEP] target`` (``decoder_input_ids``)
        and predicts each next token of ``target [SEP]`` (``labels``; -100 over the prompt and the padding, which
        the loss leaves out). Prompt and target are each truncated to ``max_length`` tokens; rows are padded to the
        longest.

        Raises:
            TypeError: a prompt or target that is not a string.
        """
        for item in (*prompts, *targets):
            if not isinstance(item, str):
                raise TypeError(f"Each prompt and target must be a str, got {type(item).__name__}.")
        tokenizer, end = self.tokenizer, self.tokenizer.sep_token_id
        if end is None:
            end = tokenizer.eos_token_id
        prompt_ids = tokenizer(list(prompts), truncation=True, max_length=self.max_length)["input_ids"]
        target_ids = tokenizer(list(targets), add_special_tokens=False, truncation=True,
                               max_length=self.max_length - 1)["input_ids"]
        rows = [(prompt + target + [end], len(prompt)) for prompt, target in zip(prompt_ids, target_ids)]
        width = max(len(sequence) for sequence, _ in rows) - 1
        pad = tokenizer.pad_token_id or 0
        batch: dict[str, list[list[int]]] = {"decoder_input_ids": [], "decoder_attention_mask": [], "labels": []}
        for sequence, prompt_length in rows:
            fill = width - (len(sequence) - 1)
            batch["decoder_input_ids"].append(sequence[:-1] + [pad] * fill)
            batch["decoder_attention_mask"].append([1] * (len(sequence) - 1) + [0] * fill)
            batch["labels"].append([-100] * (prompt_length - 1) + sequence[prompt_length:] + [-100] * fill)
        return batch

    @property
    def fit_side(self) -> int | None:
        """The short side, in pixels, the image processor resizes images to: ``shortest_edge`` (over ``crop_pct``
        where the processor crops, as ConvNeXt / ResNet ones do), else the larger of ``height`` and ``width``, else
        ``longest_edge``; None when its ``size`` says none of these."""
        size = getattr(self.image_processor, "size", None) or {}
        value = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
        if value("shortest_edge"):
            crop_pct = getattr(self.image_processor, "crop_pct", None) or 1.0
            return math.ceil(value("shortest_edge") / crop_pct)
        if value("height") and value("width"):
            return max(value("height"), value("width"))
        return value("longest_edge") or None

    def load_image(self, image: Any) -> Image.Image:
        """One image of any accepted kind as the RGB image this processor will resize: bounded in size first (see
        `load_rgb_image`), so that no input costs more than a fixed amount of memory.

        Raises:
            TypeError, ValueError: as `load_rgb_image`.
        """
        return load_rgb_image(image, fit_to=self.fit_side)

    @property
    def model_input_names(self) -> list[str]:
        """The keys ``__call__`` returns."""
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = [
    "ACCEPTED_FILES",
    "ACCEPTED_FORMATS",
    "FORMAT_NAMES",
    "MAX_ASPECT_RATIO",
    "MAX_DECODE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MMHubProcessor",
    "PROCESSOR_JSON_FILES",
    "check_tokenizer",
    "decode_cost",
    "fit_image",
    "load_rgb_image",
    "to_rgb",
]
