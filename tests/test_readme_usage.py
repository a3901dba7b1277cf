"""Runs the README's "Use it from Python" and "Describe images" sections as written, with their Hub ids served by the
local test Hub."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import ConvNextImageProcessor, ResNetModel

from mm_hub import MMHubForImageTextClassification
from mm_hub.paths import minilm_path
from tests.conftest import assert_same_outputs, readme_code_blocks, readme_commands, run_command, tiny_vision_config
from tests.data import readme_line_flags, without_random_towers
from training.config import read_preset
from training.train import main

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
    assert type(namespace["reloaded"]) is MMHubForImageTextClassification
    saved = {p.name for p in Path("my-mm-model").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_mm_hub.py", "pipeline_mm_hub.py", "processor_config.json"} <= saved
    with torch.no_grad():
        again = namespace["reloaded"](**namespace["inputs"]).logits
    assert_same_outputs(again, namespace["logits"])


def test_generate_section_runs(readme_hub_models, tmp_path, monkeypatch, capsys):
    (block,) = readme_code_blocks("generate")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md[generate]", "exec"), namespace)
    assert torch.isfinite(namespace["loss"])
    prompt = namespace["processor"](images=namespace["image"], text="what colour is it?")["input_ids"]
    ids = namespace["ids"]  # the decoder's prefix ([CLS] prompt [SEP]), then at most 8 new tokens
    assert torch.equal(ids[:, : prompt.shape[1]], prompt) and prompt.shape[1] < ids.shape[1] <= prompt.shape[1] + 8
    assert {"generation_config.json", "generation_mm_hub.py", "processor_config.json"} <= {
        p.name for p in Path("my-describer").iterdir()}
    assert "'generated_text'" in capsys.readouterr().out

    lines = readme_commands("generate")
    assert len(lines) == 2
    for line in lines:  # the captioning preset (captions and answers), then captions alone: tiny sizes, 16 scenes
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "training.train"], line
        main([*argv[3:], *readme_line_flags(argv[3:]), "--decoder-hidden-size", "16", "--decoder-num-heads", "2"])
    for folder, pairs, scores in (
        ("outputs/captioning", ["none:caption", "question:answer"], {"eval_caption_structural_f1",
                                                                     "heldout_answer_exact_match"}),
        ("outputs/captions", ["none:caption"], {"eval_structural_f1", "heldout_structural_f1"}),
    ):
        info = json.loads(Path(folder, "training_info.json").read_text())
        assert info["task"] == "image-text-to-text" and read_preset(Path(folder, "train_config.yaml")).data.target_pairs == pairs
        assert {"eval_bleu4", "eval_cider", "heldout_bleu4", *scores} <= set(info["metrics"])


def test_big_towers_section_runs(readme_hub_models, hub_server, tmp_path, monkeypatch, capsys):
    """The --lora line trains on the preset's towers by id (the ResNet stand-in and MiniLM, tiny sizes otherwise),
    saves and pushes an adapter; the next line loads it by id from the Hub."""
    from mm_hub.shapes import make_shapes_dataset

    monkeypatch.chdir(tmp_path)
    make_shapes_dataset(num_train=16, num_eval=8, num_heldout=8, image_size=32).push_to_hub("your-name/shapes")
    train, load = readme_commands("big_towers")
    argv = shlex.split(train)
    assert argv[:3] == ["python", "-m", "training.train"] and "--lora" in argv, train
    main([*argv[3:], *without_random_towers(readme_line_flags(argv[3:]))])
    pushed = set(hub_server.files("your-name/mm-hub-lora"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= pushed and "model.safetensors" not in pushed
    run_command(shlex.split(load), monkeypatch)
    assert "MMHubForImageTextClassification" in capsys.readouterr().out
