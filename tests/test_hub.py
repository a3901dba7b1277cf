"""Hub round trip against the local Hub-compatible server: push, pull (with and without mm_hub), model card,
revisions, offline reload from cache, auth errors, private repos and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoModel, AutoProcessor

from mm_hub import ImageTextClassificationPipeline, MMHubForImageTextClassification, MMHubForImageTextRetrieval
from mm_hub.cli import run
from mm_hub.hub import HubAuthError, check_model_folder, model_files, push_to_hub
from mm_hub.loading import load_model
from mm_hub.paths import MINILM_HUB_ID, minilm_path
from tests.conftest import random_images, save_tiny_model, tiny_config, tiny_processor
from tests.data import PULL_SCRIPT
from training import push as push_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a red circle above a blue square", "two green triangles"]
EVAL_RESULTS = {"eval_accuracy": 0.75, "eval_macro_f1": 0.5, "eval_loss": 0.61, "eval_runtime": 0.2, "epoch": 1.0,
                "heldout_accuracy": 0.6, "heldout_macro_f1": 0.4}
REMOTE_CODE = ("configuration_mm_hub.py", "modeling_mm_hub.py", "processing_mm_hub.py", "pipeline_mm_hub.py")

def _train(model: torch.nn.Module, processor, steps: int = 3, seed: int = 0) -> None:
    """A few Adam steps on random pairs: enough to move every weight away from its initialisation."""
    torch.manual_seed(seed)
    inputs = processor(images=random_images(4, seed=seed), text=TEXTS * 2, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _save(model, processor, folder: Path, training_info: bool = True) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if training_info:
        (folder / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
        info = {"task": "image-text-classification", "dataset": "mm-tester/shapes", "dataset_config": None,
                "train_split": "train", "eval_split": "validation",
                "base_models": ["random-init-resnet", minilm_path()],
                "hyperparameters": {"learning_rate": 0.01, "max_steps": 3}, "metrics": EVAL_RESULTS,
                "train_runtime_s": 1.5, "num_train_examples": 4}
        (folder / "training_info.json").write_text(json.dumps(info))
    return folder


def _logits(model, processor, images) -> torch.Tensor:
    with torch.no_grad():
        return model(**processor(images=images, text=TEXTS, return_tensors="pt")).logits


def _digest(folder: Path) -> dict[str, str]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny attention-fusion classifier trained a few steps, saved with training_info/eval_results, plus the
    evaluation images written as PNG files for subprocesses."""
    config = tiny_config("attention", id2label={0: "mismatch", 1: "match", 2: "unsure"},
                         label2id={"mismatch": 0, "match": 1, "unsure": 2})
    torch.manual_seed(0)
    model = MMHubForImageTextClassification(config)
    processor = tiny_processor()
    _train(model, processor)
    folder = _save(model, processor, tmp_path_factory.mktemp("trained") / "model")
    image_dir = tmp_path_factory.mktemp("images")
    images = random_images(len(TEXTS), seed=7)
    for i, image in enumerate(images):
        image.save(image_dir / f"{i}.png")
    return {"model": model, "processor": processor, "folder": folder, "image_dir": image_dir,
            "images": images, "logits": _logits(model, processor, images)}


@pytest.fixture(scope="module")
def pushed(trained, hub_server):
    """The trained model pushed once to a fresh repo (shared by the pull tests)."""
    repo_id = f"{hub_server.user}/pushed-classifier"
    commit = push_to_hub(trained["folder"], repo_id, commit_message="first version")
    return {"repo_id": repo_id, "commit": commit}


def _pull_without_mm_hub(repo_id: str, trained: dict, tmp_path: Path, **env: str) -> dict:
    out = tmp_path / "pulled.json"
    result = subprocess.run(
        [sys.executable, "-c", PULL_SCRIPT, repo_id, str(trained["image_dir"]), str(out), json.dumps(TEXTS)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_push_uploads_everything_in_one_commit(trained, pushed, hub_server):
    files = hub_server.files(pushed["repo_id"])
    expected = {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
                "training_info.json", "eval_results.json", *REMOTE_CODE}
    assert expected <= set(files), sorted(files)
    assert files["model.safetensors"] == (trained["folder"] / "model.safetensors").read_bytes()
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModel"].endswith("MMHubForImageTextClassification")
    assert "image-text-classification" in config["custom_pipelines"]
    history = hub_server.commits(pushed["repo_id"])
    assert [c.title for c in history] == ["first version", "initial commit"]
    assert history[0].sha == pushed["commit"]
    assert "README.md" not in os.listdir(trained["folder"])  # the card is generated in memory only


@pytest.mark.slow
def test_pull_without_mm_hub_then_offline_from_cache(trained, pushed, tmp_path, hub_server):
    pulled = _pull_without_mm_hub(pushed["repo_id"], trained, tmp_path)
    assert pulled["model_module"].startswith("transformers_modules.")
    assert pulled["processor_module"].startswith("transformers_modules.")
    assert pulled["model_class"] == "MMHubForImageTextClassification"
    torch.testing.assert_close(torch.tensor(pulled["logits"]), trained["logits"], rtol=0, atol=1e-6)
    local = ImageTextClassificationPipeline(model=trained["model"], processor=trained["processor"])
    expected = local([{"image": im, "text": t} for im, t in zip(trained["images"], TEXTS)], top_k=3)
    labels = [[p["label"] for p in row] for row in expected]
    assert [[p["label"] for p in row] for row in pulled["predictions"]] == labels
    for row, expected_row in zip(pulled["predictions"], expected):
        assert [p["score"] for p in row] == pytest.approx([p["score"] for p in expected_row], abs=1e-6)

    # Again with HF_HUB_OFFLINE=1: model, processor, remote code and pipeline all come from the cache.
    served = len(hub_server.requests)
    offline = _pull_without_mm_hub(pushed["repo_id"], trained, tmp_path, HF_HUB_OFFLINE="1")
    assert offline["logits"] == pulled["logits"] and offline["predictions"] == pulled["predictions"]
    # The server was not asked anything about the repo (other threads of the session may use the server meanwhile).
    assert not [r for r in hub_server.requests[served:] if pushed["repo_id"] in r[1]], hub_server.requests[served:]


def test_pull_with_mm_hub_runs_no_remote_code(trained, pushed):
    model = AutoModel.from_pretrained(pushed["repo_id"]).eval()  # no trust_remote_code: mm_hub's own classes
    processor = AutoProcessor.from_pretrained(pushed["repo_id"])
    assert type(model) is MMHubForImageTextClassification
    assert not any(name.startswith("transformers_modules") and "pushed" in name for name in sys.modules)
    torch.testing.assert_close(_logits(model, processor, trained["images"]), trained["logits"], rtol=0, atol=1e-6)
    model2, processor2 = load_model(pushed["repo_id"])
    torch.testing.assert_close(_logits(model2, processor2, trained["images"]), trained["logits"], rtol=0, atol=1e-6)


def test_model_card_metadata_and_prose(pushed):
    card = ModelCard.load(pushed["repo_id"])
    data = card.data
    assert data.library_name == "transformers"
    assert {"mm_hub", "image-text-classification", "fusion-attention"} <= set(data.tags)
    assert data.pipeline_tag == "other"
    assert data.license == "apache-2.0"
    assert data.datasets == ["mm-tester/shapes"]
    assert data.base_model == [MINILM_HUB_ID]  # the local MiniLM folder maps to its Hub id; non-Hub names drop
    metrics = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert metrics == {("validation", "accuracy"): 0.75, ("validation", "macro_f1"): 0.5,
                       ("heldout", "accuracy"): 0.6, ("heldout", "macro_f1"): 0.4}
    text = card.text
    assert "`attention` fusion" in text and "| learning_rate | 0.01 |" in text
    assert "| Metric | validation | heldout |" in text and "| accuracy | 0.7500 | 0.6000 |" in text
    assert "| loss | 0.6100 | - |" in text
    assert f'AutoModel.from_pretrained("{pushed["repo_id"]}", trust_remote_code=True)' in text
    assert f'pipeline("image-text-classification", model="{pushed["repo_id"]}", trust_remote_code=True)' in text
    assert "## Limitations" in text


def test_revision_pinning_and_branches(trained, hub_repo_id, tmp_path, hub_server):
    first = push_to_hub(trained["folder"], hub_repo_id)
    model = MMHubForImageTextClassification.from_pretrained(trained["folder"])
    _train(model, trained["processor"], steps=2, seed=1)
    second = push_to_hub(_save(model, trained["processor"], tmp_path / "v2"), hub_repo_id, commit_message="v2")
    new_logits = _logits(model, trained["processor"], trained["images"])
    assert not torch.allclose(new_logits, trained["logits"])

    def logits_at(revision):
        pulled = AutoModel.from_pretrained(hub_repo_id, revision=revision).eval()
        return _logits(pulled, trained["processor"], trained["images"])

    torch.testing.assert_close(logits_at(first), trained["logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits_at(None), new_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits_at(second), new_logits, rtol=0, atol=1e-6)
    # A branch push leaves main alone; the branch is created on the way.
    branch_commit = push_to_hub(trained["folder"], hub_repo_id, revision="experiment")
    assert hub_server.branches(hub_repo_id) == {"main": second, "experiment": branch_commit}
    torch.testing.assert_close(logits_at("experiment"), trained["logits"], rtol=0, atol=1e-6)
    pr = push_to_hub(trained["folder"], hub_repo_id, create_pr=True)
    assert hub_server.branches(hub_repo_id)["refs/pr/1"] == pr and hub_server.branches(hub_repo_id)["main"] == second


def test_push_without_token_fails_clearly_and_leaves_folder(trained, hub_repo_id, hub_server, monkeypatch):
    before = _digest(trained["folder"])
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="needs a Hugging Face write token"):
        push_to_hub(trained["folder"], hub_repo_id)
    with pytest.raises(HubAuthError, match="refused the request.*HTTP 401.*token is valid"):
        push_to_hub(trained["folder"], hub_repo_id, token="hf_wrong")
    assert hub_repo_id not in hub_server.repos()
    assert _digest(trained["folder"]) == before


def test_private_repo_is_hidden_without_token(trained, hub_repo_id):
    push_to_hub(trained["folder"], hub_repo_id, private=True)
    api = HfApi()
    assert api.model_info(hub_repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id, token=False)
    with pytest.raises(OSError, match=hub_repo_id):
        AutoModel.from_pretrained(hub_repo_id, token=False)


def test_push_cli(trained, hub_repo_id, hub_server, capsys, tmp_path):
    commit = push_cli.main(["--model-dir", str(trained["folder"]), "--repo-id", hub_repo_id, "--private",
                            "--commit-message", "from the CLI"])
    assert f"{hub_server.url}/{hub_repo_id}" in capsys.readouterr().out
    last = hub_server.commits(hub_repo_id)[0]
    assert (last.title, last.sha) == ("from the CLI", commit)
    assert hub_server.repo(hub_repo_id).private
    with pytest.raises(SystemExit) as exited:  # the command line's boundary: one line, exit status 2
        run(push_cli.main, ["--model-dir", str(tmp_path), "--repo-id", hub_repo_id])
    assert exited.value.code == 2 and re.match(r"error: .*holds no config.json", capsys.readouterr().err)


def test_retrieval_model_card_and_stale_weights(hub_repo_id, hub_server, tmp_path):
    model = MMHubForImageTextRetrieval(tiny_config("concat"))
    folder = _save(model, tiny_processor(), tmp_path / "retrieval", training_info=False)
    push_to_hub(folder, hub_repo_id)
    card = ModelCard.load(hub_repo_id)
    assert card.data.pipeline_tag == "zero-shot-image-classification" and card.data.eval_results is None
    assert "zero-shot-image-classification" in card.text and "No evaluation results" in card.text
    # Re-saving as two shards removes the old single weights file from the repo.
    model.save_pretrained(folder, max_shard_size="100KB")
    (folder / "model.safetensors").unlink()
    push_to_hub(folder, hub_repo_id)
    names = set(hub_server.files(hub_repo_id))
    assert "model.safetensors" not in names and "model.safetensors.index.json" in names
    reloaded = AutoModel.from_pretrained(hub_repo_id)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


def test_invalid_folders_and_repo_ids(trained, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        push_to_hub(tmp_path / "missing", "org/name")
    with pytest.raises(ValueError, match="no config.json"):
        check_model_folder(tmp_path)
    with pytest.raises(ValueError, match="'org/name'"):
        push_to_hub(trained["folder"], "no-namespace")
    with pytest.raises(TypeError, match="repo_id must be a str"):
        push_to_hub(trained["folder"], 42)
    assert "README.md" not in {p.name for p in model_files(trained["folder"])}


@pytest.mark.parametrize("head", ["classification", "retrieval", "generation"])
def test_the_cards_code_runs_on_the_pushed_model(head, hub_repo_id, tmp_path, monkeypatch, capsys):
    folder = save_tiny_model(tmp_path / head, head)
    push_to_hub(folder, hub_repo_id)
    card = ModelCard.load(hub_repo_id)
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 2, card.text
    monkeypatch.chdir(tmp_path)
    random_images(1)[0].save("photo.jpg")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"card[{head}]", "exec"), namespace)
    assert type(namespace["model"]).__name__ == type(load_model(folder)[0]).__name__
    printed = capsys.readouterr().out
    if head == "retrieval":
        assert "'label': 'a red circle'" in printed and namespace["image_embeds"].shape == (1, 8)
