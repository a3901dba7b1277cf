"""Processor of mm_hub models: an image processor (resize / crop / normalise) plus a pretrained tokenizer.

This file travels with pushed models (``trust_remote_code``): third-party imports only.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps
from transformers import BatchFeature, ProcessorMixin

ACCEPTED_IMAGES = "a PIL.Image, a numpy array (H, W), (H, W, C) or (C, H, W), a torch tensor, or a file path / URL"


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


def _open_source(source: str) -> Image.Image:
    """Open an image from an http(s) URL, a ``data:image/...;base64,`` URI or a file path."""
    if source.startswith(("http://", "https://")):
        response = httpx.get(source, timeout=30.0, follow_redirects=True)
        response.raise_for_status()
        return Image.open(io.BytesIO(response.content))
    if source.startswith("data:image/"):
        return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
    return Image.open(source)


def load_rgb_image(image: Any) -> Image.Image:
    """Turn one image of any accepted kind into an RGB PIL image (EXIF rotation applied, alpha over white).

    Raises:
        TypeError: for objects that are not images (naming the type received).
        ValueError: for files or URLs that cannot be read, truncated or oversized (decompression-bomb) images, and
            arrays of the wrong shape.
    """
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        try:
            image = _open_source(name)
        except Exception as error:  # PIL, httpx and the OS raise many types; say which source failed and why
            raise ValueError(f"Cannot read an image from {name[:200]!r}: {error}") from error
    else:
        name = None
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif type(image).__module__.startswith("torch"):
        image = _array_to_pil(image.detach().cpu().numpy())
    elif not isinstance(image, Image.Image):
        raise TypeError(f"Expected an image ({ACCEPTED_IMAGES}), got {type(image).__name__}.")
    if 0 in image.size:
        raise ValueError(f"The image has an empty side (size {image.size}).")
    try:  # decoding is lazy in PIL: truncated files fail here
        return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError) as error:
        where = f" from {name[:200]!r}" if name else ""
        raise ValueError(f"Cannot read an image{where}: {error}") from error


def _as_list(value: Any, kinds: tuple[type, ...]) -> list[Any]:
    """A single item (of one of ``kinds``) becomes a one-element list; lists and tuples are copied."""
    if isinstance(value, kinds):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


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

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn images and/or texts into model inputs.

        Args:
            images: one image or a list of them (see ``ACCEPTED_IMAGES``; any PIL mode is converted to RGB).
            text: one string or a list of strings, truncated to ``max_length`` tokens and padded to the longest.
            return_tensors: ``"pt"`` (default), ``"np"`` or None.
            **kwargs: passed to the tokenizer (e.g. ``padding="max_length"``).

        Returns:
            A `BatchFeature` with ``pixel_values`` (B, 3, H, W) and/or ``input_ids``/``attention_mask`` (B, T).

        Raises:
            ValueError: nothing given, an empty list, or different numbers of images and texts.
            TypeError: an item that is not an image, or a text that is not a string.
        """
        if images is None and text is None:
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
            rgb = [load_rgb_image(image) for image in image_list]
            data.update(self.image_processor(images=rgb, return_tensors=return_tensors))
        if text_list is not None:
            for item in text_list:
                if not isinstance(item, str):
                    raise TypeError(f"Each text must be a str, got {type(item).__name__}.")
            tokenizer_kwargs = {"padding": True, "truncation": True, "max_length": self.max_length, **kwargs}
            data.update(
                self.tokenizer(text_list, return_tensors=return_tensors, return_token_type_ids=False, **tokenizer_kwargs)
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        """The keys ``__call__`` returns."""
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["MMHubProcessor", "load_rgb_image", "to_rgb"]
