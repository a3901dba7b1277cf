"""Ensembles: `MMHubEnsembleForImageTextClassification` (averaging, saving, loading), ``python -m training.ensemble``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModel, pipeline

from mm_hub import (
    AutoModelForImageTextClassification,
    MMHubEnsembleForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
    MMHubProcessor,
)
from mm_hub.cards import build_model_card
from mm_hub.cli import run
from mm_hub.loading import load_model
from mm_hub.predictor import Predictor
from tests.conftest import (
    assert_same_outputs,
    random_images,
    tiny_config,
    tiny_processor,
)
from tests.data import csv_folder, tiny_flags
from training import ensemble
from training.train import main as train_main

TEXTS = ["a red circle on the left", "two blue squares", "a green triangle above a yellow star"]


@pytest.fixture(scope="module")
def batch():
    return dict(tiny_processor()(images=random_images(3), text=TEXTS))


def members(count: int = 2, fusion_type: str = "bilinear", **kwargs) -> list[MMHubForImageTextClassification]:
    """``count`` classifiers of one tiny architecture with different random weights (as other seeds give)."""
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(MMHubForImageTextClassification(tiny_config(fusion_type, **kwargs)).eval())
    return models


@pytest.mark.parametrize(
    ("kwargs", "labels", "average"),
    [
        ({}, torch.tensor([0, 2, 1]), lambda z: z.softmax(-1)),
        ({"problem_type": "multi_label_classification"}, torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 1]]),
         torch.sigmoid),
        ({"problem_type": "regression", "num_labels": 1}, torch.tensor([0.5, -1.0, 2.0]), lambda z: z),
    ],
    ids=["single-label", "multi-label", "regression"],
)
def test_the_ensemble_averages_its_members_predictions(kwargs, labels, average, batch):
    parts = members(3, **kwargs)
    model = MMHubEnsembleForImageTextClassification.from_members(parts)
    assert model.config.ensemble_size == 3 and not model.training
    with torch.no_grad():
        outputs = [part(**batch, labels=labels, output_attentions=True) for part in parts]
        out = model(**batch, labels=labels, output_attentions=True)
    expected = torch.stack([average(o.logits) for o in outputs]).mean(dim=0)
    assert torch.allclose(average(out.logits), expected, atol=1e-5)
    assert torch.allclose(out.loss, torch.stack([o.loss for o in outputs]).mean())
    pooling = torch.stack([o.fusion_attentions["pooling"][0] for o in outputs]).mean(dim=0)
    assert torch.allclose(out.fusion_attentions["pooling"][0], pooling)  # what `explain` draws


def test_training_an_ensemble_trains_every_member_and_keeps_frozen_encoders_fixed(batch):
    config = tiny_config("attention", ensemble_size=2, dropout=0.0, freeze_vision_encoder=True)
    model = MMHubEnsembleForImageTextClassification(config).train()
    first, second = model.members
    assert not torch.equal(first.classifier.weight, second.classifier.weight)  # initialised apart
    model(**batch, labels=torch.tensor([0, 2, 1])).loss.backward()
    for member in model.members:
        assert not member.mm_hub.vision_encoder.training
        assert all(p.grad is None for p in member.mm_hub.vision_encoder.parameters())
        assert member.classifier.weight.grad.abs().sum() > 0


def test_a_saved_ensemble_loads_through_every_auto_class_and_the_pipeline(batch, tmp_path):
    model = MMHubEnsembleForImageTextClassification.from_members(members(id2label={0: "a", 1: "b", 2: "c"}))
    model.save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(**batch).logits
    for loader in (MMHubEnsembleForImageTextClassification, AutoModelForImageTextClassification, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is MMHubEnsembleForImageTextClassification, loader.__name__
        with torch.no_grad():
            assert_same_outputs(loaded(**batch).logits, expected)
    loaded, _ = load_model(tmp_path)
    assert type(loaded) is MMHubEnsembleForImageTextClassification
    best = int(expected[0].argmax())
    classifier = pipeline("image-text-classification", model=str(tmp_path), trust_remote_code=True)
    result = classifier({"image": random_images(3)[0], "text": TEXTS[0]}, top_k=1)
    assert result[0]["label"] == "abc"[best]
    assert result[0]["score"] == pytest.approx(expected[0].softmax(-1)[best].item(), abs=1e-5)
    with pytest.raises(ValueError, match="ensemble of 2 models: load it with MMHubEnsembleForImageTextClassification"):
        MMHubForImageTextClassification.from_pretrained(tmp_path)


def test_the_predictor_explains_an_ensemble_with_its_members_mean_attention(tmp_path):
    model = MMHubEnsembleForImageTextClassification.from_members(members(id2label={0: "a", 1: "b", 2: "c"}))
    predictor = Predictor(model, tiny_processor())
    explanation = predictor.explain(random_images(1)[0], "a red circle")
    assert explanation.heatmap is not None and [w for w, _ in explanation.words] == ["a", "red", "circle"]
    assert predictor.info()["fusion_type"] == "bilinear" and predictor.info()["ensemble_size"] == 2
    assert "an ensemble of 2 models, probabilities averaged" in predictor.info_markdown()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: members(1), "two or more"),
        (lambda: [*members(1), MMHubForImageTextClassification(tiny_config("attention"))], r"\['fusion_type'\]"),
        (lambda: [*members(1), *members(1, id2label={0: "x", 1: "y", 2: "z"})], r"\['id2label'\]"),
        (lambda: [*members(1), MMHubForImageTextRetrieval(tiny_config())], "MMHubForImageTextRetrieval"),
    ],
    ids=["one-member", "other-fusion", "other-labels", "retrieval-model"],
)
def test_members_that_do_not_agree_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        MMHubEnsembleForImageTextClassification.from_members(build())


@pytest.mark.slow
def test_the_cli_averages_trained_folders_and_scores_them_on_the_first_recipe(tmp_path, capsys, hub_server,
                                                                              hub_repo_id):
    data = csv_folder(tmp_path / "data")
    folders = []
    for seed in (0, 1):
        folders.append(tmp_path / f"member{seed}")
        train_main(["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "Caption Text",
                    "--label-column", "Kind", "--eval-fraction", "0.25", *tiny_flags(folders[-1]), "--seed", str(seed),
                    "--no-progress"])
    out = tmp_path / "ensemble"
    metrics = ensemble.main([*map(str, folders), "--output-dir", str(out), "--no-progress"])
    assert "Saved the ensemble of 2" in capsys.readouterr().out
    assert {"eval_accuracy", "eval_macro_f1", "eval_loss"} <= set(metrics)
    assert json.loads((out / "eval_results.json").read_text()) == metrics
    info = json.loads((out / "training_info.json").read_text())
    assert info["hyperparameters"]["seed"] == [0, 1] and info["ensemble_members"] == ["member0", "member1"]
    assert info["metrics"] == metrics and info["task"] == "image-text-classification"
    members = [set(json.loads((f / "training_info.json").read_text())["text_vocabulary"]) for f in folders]
    assert info["text_vocabulary"] == sorted(members[0] | members[1])
    model = AutoModelForImageTextClassification.from_pretrained(out)
    assert type(model) is MMHubEnsembleForImageTextClassification
    assert model.config.id2label == {0: "angular", 1: "round"}
    assert not list(tmp_path.glob(".ensemble-*"))  # built beside, then moved into place
    assert out.stat().st_mode & 0o777 == folders[0].stat().st_mode & 0o777  # as open as a training output folder
    card = str(build_model_card(out, "your-name/ensemble"))
    assert "An mm_hub ensemble of 2 image + text classifiers trained apart" in card
    assert "| Labels | `angular`, `round` |" in card and 'pipeline("image-text-classification", model=' in card and "metrics:" in card

    # Rebuilding replaces the earlier ensemble (here pushed to the local Hub, then served from there); anything else
    # in the way is refused, never deleted.
    ensemble.main([*map(str, folders), "--output-dir", str(out), "--no-eval", "--push-to-hub", "--hub-model-id",
                   hub_repo_id])
    assert json.loads((out / "eval_results.json").read_text()) == {}
    assert {"model.safetensors", "modeling_mm_hub.py", "README.md"} <= set(hub_server.files(hub_repo_id))
    assert "An mm_hub ensemble of 2" in hub_server.read(hub_repo_id, "README.md").decode()
    assert Predictor.from_pretrained(hub_repo_id).info()["ensemble_size"] == 2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    shorter = tmp_path / "shorter-texts"
    shutil.copytree(folders[1], shorter)
    processor = MMHubProcessor.from_pretrained(shorter)
    processor.max_length = 8
    processor.save_pretrained(shorter)
    for argv, message in [
        ([str(folders[0]), "--output-dir", str(out)], "two or more model folders"),
        ([*map(str, folders), "--output-dir", str(folders[1])], "is one of the members"),
        ([*map(str, folders), "--output-dir", str(tmp_path / "notes")], "holds files but no earlier ensemble"),
        ([str(folders[0]), str(out), "--output-dir", str(tmp_path / "x")], "is not a saved MMHubForImageTextClassif"),
        ([str(folders[0]), str(shorter), "--output-dir", str(tmp_path / "x")], "has another processor than"),
        ([str(folders[0]), str(data), "--output-dir", str(tmp_path / "x")], "is not a saved MMHubForImageTextClassif"),
    ]:
        with pytest.raises(SystemExit):
            run(ensemble.main, argv)
        assert message in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
