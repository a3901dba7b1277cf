"""LoRA adapters on the Hub: ``--lora`` through the CLI on towers named by Hub id saves an adapter folder, the push
carries it, a fresh process without mm_hub loads it by id (remote code + peft) with the same logits, ``--merge-lora``
gives them too, and a missing or different base is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi
from transformers import AutoModel, BertConfig, BertModel, ConvNextImageProcessor, ResNetConfig, ResNetModel

from mm_hub import MMHubForImageTextClassification
from mm_hub.hub import adapter_uploads, push_to_hub
from mm_hub.loading import load_model
from mm_hub.model.adapter_mm_hub import _tower_record
from mm_hub.paths import MINILM_HUB_ID, minilm_path
from tests.conftest import random_images, tokenizer
from tests.data import PULL_SCRIPT, TINY_TEXT, TINY_VISION, tiny_flags, without_random_towers
from training.export import main as export_main
from training.train import main as train_main

TEXTS = ["a red circle", "two green triangles", "a blue square", "one yellow star"]
SHAPES = ["--dataset", "shapes", "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32"]

@pytest.fixture(scope="module")
def towers(hub_server, tmp_path_factory):
    """Two tiny pretrained towers on the local test Hub (a ResNet with its image processor, a BERT with the real
    tokenizer), as a user's --vision-model / --text-model ids."""
    api, root = HfApi(), tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    towers = {"vision": (ResNetModel(ResNetConfig(**json.loads(TINY_VISION))),
                         ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0)),
              "text": (BertModel(BertConfig(vocab_size=len(tokenizer()), **json.loads(TINY_TEXT))), tokenizer())}
    ids = {}
    for side, (model, preprocessor) in towers.items():
        folder, ids[side] = root / side, f"{hub_server.user}/tiny-{side}-tower"
        model.save_pretrained(folder)
        preprocessor.save_pretrained(folder)
        api.create_repo(ids[side], exist_ok=True)
        api.upload_folder(repo_id=ids[side], folder_path=str(folder))
    return ids


@pytest.fixture(scope="module")
def adapter_runs(towers, tmp_path_factory):
    """The same --lora run twice (same seed): saved as an adapter, and merged (--merge-lora)."""
    root = tmp_path_factory.mktemp("lora_runs")
    runs = {}
    for name, extra in (("adapter", []), ("merged", ["--merge-lora"])):
        flags = without_random_towers(tiny_flags(root / name))
        train_main([*SHAPES, "--vision-model", towers["vision"], "--text-model", towers["text"], "--lora",
                    "--lora-r", "4", *extra, *flags])
        runs[name] = root / name
    images = root / "images"
    images.mkdir()
    for index, image in enumerate(random_images(len(TEXTS), seed=3)):
        image.save(images / f"{index}.png")
    runs["images"] = images
    return runs


def _logits(source, runs: dict) -> torch.Tensor:
    """The classifier's logits on the runs' images and `TEXTS`, loaded from a folder or Hub id by `load_model`."""
    from PIL import Image

    model, processor = load_model(source)
    images = [Image.open(path) for path in sorted(runs["images"].glob("*.png"))]
    with torch.no_grad():
        return model(**processor(images=images, text=TEXTS, return_tensors="pt")).logits


def test_adapter_folder_is_small_and_loads_like_the_merged_model(adapter_runs, towers):
    adapter, merged = adapter_runs["adapter"], adapter_runs["merged"]
    files = {path.name for path in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "adapter_mm_hub.py"} <= files
    assert "model.safetensors" not in files and "README.md" not in files
    config = json.loads((adapter / "config.json").read_text())
    assert {side: record["name_or_path"] for side, record in config["pretrained_towers"].items()} == towers
    info = json.loads((adapter / "training_info.json").read_text())
    assert info["lora"]["merged"] is False and 0 < info["trainable_parameters"] < info["total_parameters"]
    assert (adapter / "adapter_model.safetensors").stat().st_size < (merged / "model.safetensors").stat().st_size / 4
    model = MMHubForImageTextClassification.from_pretrained(adapter)  # the plain model: adapters merged in
    assert not any("lora" in name or "modules_to_save" in name for name in model.state_dict())
    assert type(AutoModel.from_pretrained(adapter)) is MMHubForImageTextClassification
    # The same run saved merged gives the same logits: the frozen towers (their BatchNorm statistics too) are what
    # the ids load, and everything that trained is in the adapter file.
    torch.testing.assert_close(_logits(adapter, adapter_runs), _logits(merged, adapter_runs), rtol=0, atol=1e-5)
    export_main([str(adapter), "--out", str(adapter.parent / "onnx")])  # serving takes an adapter like any model
    assert json.loads((adapter.parent / "onnx" / "onnx_config.json").read_text())["architecture"] == type(model).__name__


@pytest.mark.slow
def test_adapter_pushed_and_loaded_by_id_in_a_fresh_process(adapter_runs, hub_repo_id, hub_server, tmp_path):
    adapter = adapter_runs["adapter"]
    expected = _logits(adapter, adapter_runs)
    push_to_hub(adapter, hub_repo_id)
    files = hub_server.files(hub_repo_id)
    assert "model.safetensors" not in files
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == hub_repo_id
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] is None  # untouched
    assert "## LoRA adapters" in files["README.md"].decode()
    out = tmp_path / "loaded.json"
    result = subprocess.run([sys.executable, "-c", PULL_SCRIPT, hub_repo_id, str(adapter_runs["images"]), str(out),
                             json.dumps(TEXTS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(out.read_text())
    assert loaded["model_module"].startswith("transformers_modules.")  # no mm_hub there: the repo's code and peft
    assert [p["label"] for p in loaded["predictions"][0]]  # its pipeline too
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(hub_repo_id, adapter_runs), expected, rtol=0, atol=1e-5)  # with mm_hub: its own classes
    # The merged model pushed over it replaces the adapter: no adapter file is left to take precedence.
    push_to_hub(adapter_runs["merged"], hub_repo_id)
    assert not {"adapter_config.json", "adapter_model.safetensors"} & set(hub_server.files(hub_repo_id))
    torch.testing.assert_close(_logits(hub_repo_id, adapter_runs), expected, rtol=0, atol=1e-5)


def test_a_missing_or_different_base_is_named(adapter_runs, towers, tmp_path):
    config_path = "config.json"
    for case, change, error in (
        ("missing", {"name_or_path": "mm-tester/no-such-tower"}, OSError),
        ("different", {"sha256": "0" * 64}, ValueError),
        ("another tower", {"name_or_path": towers["text"]}, OSError),  # refused on its config: no weights fetched
    ):
        folder = tmp_path / case
        shutil.copytree(adapter_runs["adapter"], folder)
        config = json.loads((folder / config_path).read_text())
        config["pretrained_towers"]["vision"].update(change)
        (folder / config_path).write_text(json.dumps(config))
        with pytest.raises(error) as raised:
            MMHubForImageTextClassification.from_pretrained(folder)
        message = str(raised.value)
        assert str(folder) in message and config["pretrained_towers"]["vision"]["name_or_path"] in message
        assert "different base" in message or "could not be loaded" in message
        assert case != "another tower" or "another vision tower" in message


def test_an_adapter_on_an_unnamed_tower_or_of_another_kind_is_refused(adapter_runs, tmp_path):
    for case, change in (("unnamed tower", lambda config, adapter: config["pretrained_towers"].pop("vision")),
                         ("prompt tuning", lambda config, adapter: adapter.update(peft_type="PROMPT_TUNING"))):
        folder = tmp_path / case.replace(" ", "-")
        shutil.copytree(adapter_runs["adapter"], folder)
        config, adapter = (json.loads((folder / name).read_text()) for name in ("config.json", "adapter_config.json"))
        change(config, adapter)
        for name, value in (("config.json", config), ("adapter_config.json", adapter)):
            (folder / name).write_text(json.dumps(value))
        with pytest.raises(ValueError, match="names no pretrained vision tower|must hold LoRA adapters"):
            MMHubForImageTextClassification.from_pretrained(folder)


def test_an_adapter_from_the_hub_never_loads_a_local_folder(tmp_path):
    record = {"name_or_path": str(tmp_path), "revision": None, "sha256": "0" * 64}
    with pytest.raises(ValueError, match="from the Hub only"):
        _tower_record("org/hostile", "vision", record, from_hub=True)
    assert _tower_record("./adapter", "vision", record, from_hub=False)[0] == str(tmp_path)  # a local adapter may
    with pytest.raises(ValueError, match="pretrained_towers"):
        _tower_record("org/hostile", "vision", {"name_or_path": 3}, from_hub=True)


def test_the_hub_never_gets_an_adapter_on_local_towers(adapter_runs, tmp_path):
    folder = adapter_runs["adapter"]
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_towers"]["text"]["name_or_path"] = str(tmp_path)  # a folder on this machine
    files = [path.relative_to(folder) for path in folder.iterdir()]
    with pytest.raises(ValueError, match="local tower folders"):
        adapter_uploads(folder, files, "org/name", config)
    config["pretrained_towers"]["text"]["name_or_path"] = minilm_path()  # the packaged MiniLM: named by its Hub id
    uploads = adapter_uploads(folder, files, "org/name", config)
    assert json.loads(uploads["config.json"])["pretrained_towers"]["text"]["name_or_path"] == MINILM_HUB_ID
    assert json.loads(uploads["adapter_config.json"])["base_model_name_or_path"] == "org/name"
