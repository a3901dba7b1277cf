"""Runs the README's "Use it from Python" section as written, with its Hub ids served by the local test Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import ConvNextImageProcessor, ResNetModel

from mm_hub.paths import minilm_path
from tests.conftest import assert_same_outputs, readme_code_blocks, tiny_vision_config

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out

MINILM_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json"]


@pytest.fixture(scope="module")
def readme_hub_models(hub_server, tmp_path_factory):
    """Publish the two checkpoints the README names on the local Hub: a tiny ResNet standing in for
    microsoft/resnet-18 (its real weights cannot be fetched here) and the real all-MiniLM-L6-v2 files."""
    api = HfApi()
    resnet = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    ResNetModel(tiny_vision_config()).save_pretrained(resnet)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(resnet)
    api.create_repo("microsoft/resnet-18", exist_ok=True)
    api.upload_folder(repo_id="microsoft/resnet-18", folder_path=resnet)
    api.create_repo("sentence-transformers/all-MiniLM-L6-v2", exist_ok=True)
    api.upload_folder(
        repo_id="sentence-transformers/all-MiniLM-L6-v2", folder_path=minilm_path(), allow_patterns=MINILM_FILES
    )


def test_usage_section_runs(readme_hub_models, tmp_path, monkeypatch, capsys):
    blocks = readme_code_blocks("usage")
    assert blocks, "the usage section has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md[usage]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "'label': 'm" in printed and "'score'" in printed
    assert namespace["logits"].shape == (1, 2)
    assert namespace["image_embeds"].shape == namespace["text_embeds"].shape == (1, 256)
    saved = {p.name for p in Path("my-mm-model").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_mm_hub.py", "pipeline_mm_hub.py", "processor_config.json"} <= saved
    with torch.no_grad():
        again = namespace["reloaded"](**namespace["inputs"]).logits
    assert_same_outputs(again, namespace["logits"])
