"""Spaces and datasets through the local Hub: `training.space` uploads a working app for a pushed model, and the
project's shapes datasets round-trip through `DatasetDict.push_to_hub` / `load_dataset`."""

from __future__ import annotations

import re

import ast
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from mm_hub.cli import run
import torch
from datasets import load_dataset
from huggingface_hub import HfApi, SpaceCard, snapshot_download

from mm_hub import MMHubForImageTextClassification
from mm_hub.hub import HubAuthError, push_to_hub
from mm_hub.loading import resolve_model_sources
from mm_hub.predictor import Predictor
from mm_hub.shapes import make_shapes_dataset
from tests.conftest import random_images, tiny_config, tiny_processor
from training import space as space_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pushed_model(hub_server, tmp_path_factory):
    """A tiny classifier pushed twice (two revisions), with its local copy."""
    torch.manual_seed(0)
    model = MMHubForImageTextClassification(tiny_config("gated", num_labels=2)).eval()
    processor = tiny_processor()
    folder = tmp_path_factory.mktemp("space_model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    repo_id = f"{hub_server.user}/space-model"
    first = push_to_hub(folder, repo_id)
    second = push_to_hub(folder, repo_id, commit_message="same weights, second commit")
    return {"repo_id": repo_id, "model": model, "processor": processor, "first": first, "second": second}


def _local_imports(source: str) -> set[str]:
    """Top-level names of mm_hub / training modules a Python file imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("mm_hub", "training")}


def test_space_uploads_app_package_config_and_header(pushed_model, hub_repo_id, hub_server, tmp_path):
    commit = space_cli.create_space(pushed_model["repo_id"], hub_repo_id, revision=pushed_model["first"])
    files = hub_server.files(hub_repo_id, repo_type="space")
    assert hub_server.commits(hub_repo_id, repo_type="space")[0].sha == commit
    assert files["app.py"] == (REPO_ROOT / "app.py").read_bytes()
    assert files["requirements.txt"] == (REPO_ROOT / "requirements.txt").read_bytes()
    expected_config = {"model": pushed_model["repo_id"], "revision": pushed_model["first"]}
    assert json.loads(files["space_config.json"]) == {"models": [expected_config]}
    # Every mm_hub / training module any uploaded file imports is uploaded too, and nothing else of the repo is.
    modules = {p for p in files if p.endswith(".py")}
    for path in modules:
        for name in _local_imports(files[path].decode()):
            stem = name.replace(".", "/")
            assert f"{stem}.py" in files or f"{stem}/__init__.py" in files, (path, name)
    assert {"mm_hub/__init__.py", "mm_hub/model/modeling_mm_hub.py", "mm_hub/predictor.py"} <= modules
    assert not any(p.startswith(("tests/", "benchmarks/")) for p in files)

    card = SpaceCard.load(hub_repo_id, repo_type="space")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.sdk_version == version("gradio")
    assert tuple(int(x) for x in str(card.data.python_version).split(".")) >= (3, 11)
    assert card.data.models == [pushed_model["repo_id"]]
    assert HfApi().space_info(hub_repo_id).sdk == "gradio"

    # The app, started from the Space's files, serves the pushed model at the pinned revision.
    space_dir = Path(snapshot_download(hub_repo_id, repo_type="space", local_dir=tmp_path / "space"))
    [source] = resolve_model_sources(app_dir=space_dir)
    assert (source.model, source.revision, source.origin) == (*expected_config.values(), "space_config")
    [predictor] = Predictor.from_sources([source])
    image, text = random_images(1, seed=3)[0], "a red circle"
    with torch.no_grad():
        logits = pushed_model["model"](**pushed_model["processor"](images=[image], text=[text])).logits
    expected = logits.softmax(-1)[0].tolist()
    scores = predictor.classify(image, text)
    assert [scores[pushed_model["model"].config.id2label[i]] for i in range(2)] == pytest.approx(expected, abs=1e-6)


def test_space_update_repins_and_removes_stale_modules(pushed_model, hub_repo_id, hub_server, capsys):
    space_cli.main(["--model", pushed_model["repo_id"], "--space-id", hub_repo_id])
    HfApi().upload_file(path_or_fileobj=b"print('old')\n", path_in_repo="mm_hub/removed_module.py",
                        repo_id=hub_repo_id, repo_type="space")
    space_cli.main(["--model", pushed_model["repo_id"], "--space-id", hub_repo_id, "--revision",
                    pushed_model["second"], "--commit-message", "pin the second commit"])
    assert f"{hub_server.url}/spaces/{hub_repo_id}" in capsys.readouterr().out
    files = hub_server.files(hub_repo_id, repo_type="space")
    assert "mm_hub/removed_module.py" not in files
    assert json.loads(files["space_config.json"])["models"][0]["revision"] == pushed_model["second"]
    assert hub_server.commits(hub_repo_id, repo_type="space")[0].title == "pin the second commit"


def test_a_space_serves_several_models_side_by_side(tmp_path):
    models = [("org/classifier", None), ("org/retrieval", "v2")]
    files = space_cli.space_files(models, "org/app")
    (tmp_path / "space_config.json").write_bytes(files["space_config.json"])
    sources = resolve_model_sources(app_dir=tmp_path)
    assert [(source.model, source.revision) for source in sources] == models
    card = files["README.md"].decode()
    assert "models:\n- org/classifier\n- org/retrieval" in card and "`org/retrieval` at revision `v2`" in card
    assert space_cli.parse_args(["--model", "a/b", "--model", "c/d@v1", "--space-id", "e/f"]).model == ["a/b", "c/d@v1"]
    with pytest.raises(ValueError, match="org/name@revision"):
        space_cli.create_space(["a/b", "c/d"], "e/f", revision="v1")


def test_space_needs_a_pushed_model_and_a_token(pushed_model, hub_repo_id, hub_server, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run(space_cli.main, ["--model", f"{hub_server.user}/never-pushed", "--space-id", hub_repo_id])
    assert re.match("error: model .* is not on the Hub: push it first", capsys.readouterr().err)
    with pytest.raises(HubAuthError, match="refused the request.*HTTP 401"):
        space_cli.create_space(pushed_model["repo_id"], hub_repo_id, token="hf_wrong")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="needs a Hugging Face write token"):
        space_cli.create_space(pushed_model["repo_id"], hub_repo_id)
    assert hub_repo_id not in hub_server.repos("space")


def test_space_app_closure_follows_relative_and_lazy_imports(tmp_path):
    (tmp_path / "mm_hub").mkdir()
    (tmp_path / "training" / "configs").mkdir(parents=True)
    (tmp_path / "app.py").write_text("import os\nfrom mm_hub.front import run\n")
    (tmp_path / "mm_hub" / "__init__.py").write_text("")
    (tmp_path / "mm_hub" / "front.py").write_text("from .helpers import x\ndef run():\n    from training import demo\n")
    (tmp_path / "mm_hub" / "helpers.py").write_text("x = 1\n")
    (tmp_path / "mm_hub" / "unused.py").write_text("y = 2\n")
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "demo.py").write_text("")
    (tmp_path / "training" / "configs" / "demo_classifier.yaml").write_text("task: classification\n")
    assert space_cli.app_modules(tmp_path) == [
        "app.py", "mm_hub/__init__.py", "mm_hub/front.py", "mm_hub/helpers.py", "training/__init__.py",
        "training/configs/demo_classifier.yaml", "training/demo.py",
    ]
    with pytest.raises(ValueError, match="no app.py"):
        space_cli.app_modules(tmp_path / "mm_hub")


def test_shapes_datasets_round_trip(hub_repo_id, hub_server):
    shapes = make_shapes_dataset(num_train=6, num_eval=4, num_heldout=0, image_size=32, seed=1)
    shapes.push_to_hub(hub_repo_id, private=True)
    assert hub_server.repo(hub_repo_id, repo_type="dataset").private
    assert any(p.endswith(".parquet") for p in hub_server.files(hub_repo_id, repo_type="dataset"))
    loaded = load_dataset(hub_repo_id)
    assert set(loaded) == set(shapes)
    for split in shapes:
        assert loaded[split].features == shapes[split].features
        assert loaded[split]["text"] == shapes[split]["text"] and loaded[split]["label"] == shapes[split]["label"]
        for got, want in zip(loaded[split]["image"], shapes[split]["image"]):
            assert np.array_equal(np.asarray(got), np.asarray(want))
    assert loaded["train"].features["label"].names == ["mismatch", "match"]

    retrieval = make_shapes_dataset(num_train=3, num_eval=0, num_heldout=0, image_size=32, task="retrieval")
    retrieval.push_to_hub(hub_repo_id, config_name="retrieval")
    back = load_dataset(hub_repo_id, "retrieval", split="train")
    assert back["captions"] == retrieval["train"]["captions"]
