"""Processor tests: every image kind and mode it accepts, text truncation, and the errors for bad input."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from mm_hub import MMHubProcessor, load_rgb_image
from tests.conftest import IMAGE_SIZE, tiny_processor


@pytest.fixture(scope="module")
def processor() -> MMHubProcessor:
    return tiny_processor(max_length=8)


def _image(mode: str) -> Image.Image:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    if mode == "F":
        return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0)
    if mode == "P_transparent":
        image = rgb.convert("P")
        image.info["transparency"] = 0
        return image
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "P_transparent", "CMYK", "1", "I;16", "F", "YCbCr"])
def test_any_pil_mode_becomes_a_normalised_rgb_tensor(processor, mode):
    pixels = processor(images=_image(mode))["pixel_values"]
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert pixels.dtype == torch.float32 and torch.isfinite(pixels).all()


def test_transparent_pixels_become_white(processor):
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    white = Image.new("RGB", (8, 8), "white")
    assert torch.allclose(processor(images=transparent)["pixel_values"], processor(images=white)["pixel_values"])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((20, 30), dtype=np.uint8),
        np.zeros((20, 30, 1), dtype=np.uint8),
        np.zeros((20, 30, 3), dtype=np.uint8),
        np.zeros((20, 30, 4), dtype=np.uint8),
        np.zeros((3, 20, 30), dtype=np.uint8),
        np.full((20, 30, 3), 0.5, dtype=np.float32),
        np.ones((20, 30), dtype=bool),
        np.full((20, 30), 40000, dtype=np.uint16),
        torch.rand(3, 20, 30),
    ],
    ids=["HW", "HW1", "HWC", "HWC4", "CHW", "float01", "bool", "uint16", "torch_CHW"],
)
def test_arrays_and_tensors_are_accepted(processor, array):
    assert processor(images=array)["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_float_array_in_unit_range_matches_the_uint8_image(processor):
    array = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    from_uint8 = processor(images=array)["pixel_values"]
    from_float = processor(images=array.astype(np.float32) / 255.0)["pixel_values"]
    assert torch.allclose(from_uint8, from_float, atol=1e-6)


@pytest.fixture
def image_server(tmp_path):
    """Serve tmp_path over HTTP on 127.0.0.1, for the URL case."""
    Image.new("RGB", (16, 16), "blue").save(tmp_path / "blue.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_paths_and_urls_load_the_same_pixels(processor, tmp_path, image_server):
    from_url = processor(images=f"{image_server}/blue.png")["pixel_values"]
    from_path = processor(images=str(tmp_path / "blue.png"))["pixel_values"]
    from_pathlib = processor(images=tmp_path / "blue.png")["pixel_values"]
    from_pil = processor(images=Image.new("RGB", (16, 16), "blue"))["pixel_values"]
    assert torch.equal(from_url, from_pil) and torch.equal(from_path, from_pil) and torch.equal(from_pathlib, from_pil)


def test_single_items_and_lists(processor):
    single = processor(images=Image.new("RGB", (10, 10)), text="a cat")
    assert single["pixel_values"].shape[0] == 1 and single["input_ids"].shape[0] == 1
    batch = processor(images=[Image.new("RGB", (10, 10))] * 2, text=("a cat", "a much longer sentence here"))
    assert batch["pixel_values"].shape[0] == 2 and batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # padded to the longest
    assert "token_type_ids" not in batch
    assert set(processor(text="only text")) == {"input_ids", "attention_mask"}
    assert set(processor(images=Image.new("RGB", (10, 10)))) == {"pixel_values"}


def test_long_text_is_truncated_to_max_length(processor):
    encoded = processor(text="word " * 500)
    assert encoded["input_ids"].shape == (1, 8)
    assert encoded["input_ids"][0, -1].item() == processor.tokenizer.sep_token_id


def test_save_and_load_keep_settings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = MMHubProcessor.from_pretrained(tmp_path)
    assert loaded.max_length == 8
    assert loaded.image_processor.size == processor.image_processor.size
    image = Image.new("RGB", (20, 12), "green")
    for key in ("pixel_values", "input_ids"):
        assert torch.equal(loaded(images=image, text="hello")[key], processor(images=image, text="hello")[key])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "Give `images`, `text`, or both"),
        ({"images": []}, ValueError, "`images` is an empty list"),
        ({"text": []}, ValueError, "`text` is an empty list"),
        ({"images": [Image.new("RGB", (4, 4))] * 2, "text": ["one"]}, ValueError, "Got 2 images and 1 texts"),
        ({"images": 42}, TypeError, "Expected an image .* got int"),
        ({"images": [{"url": "x"}]}, TypeError, "got dict"),
        ({"text": ["ok", 3]}, TypeError, "Each text must be a str, got int"),
        ({"images": "/no/such/file.png"}, ValueError, "Cannot read an image from '/no/such/file.png'"),
        ({"images": np.zeros((2, 3, 5, 5))}, ValueError, "array of shape"),
        ({"images": np.zeros((0, 5, 3))}, ValueError, "array of shape"),
        ({"images": np.full((4, 4), np.nan)}, ValueError, "NaN"),
    ],
)
def test_bad_input_raises_clear_errors(processor, kwargs, error, message):
    with pytest.raises(error, match=message):
        processor(**kwargs)


def test_corrupt_file_raises_value_error(processor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="Cannot read an image from"):
        processor(images=str(broken))


def test_truncated_file_raises_value_error(processor, tmp_path):
    buffer = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.read_bytes()[:300])
    with pytest.raises(ValueError, match="Cannot read an image from .*truncated.png"):
        processor(images=str(truncated))
    with pytest.raises(ValueError, match="Cannot read an image"):
        processor(images=Image.open(truncated))


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees on display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    buffer.seek(0)
    assert load_rgb_image(Image.open(buffer)).size == (20, 40)


def test_data_uri_is_accepted(processor):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    expected = processor(images=Image.new("RGB", (16, 16), "blue"))["pixel_values"]
    assert torch.equal(processor(images=uri)["pixel_values"], expected)
