"""The task registry: a task is declared once, and everything else reads it.

A new task here is a head class and one `register_task` entry, with no other edit: it trains through the training
command, saves, loads with `AutoModel`, gets a model card with its metric, and the app serves the tab it names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from gradio_client import Client, handle_file
from torch import nn
from transformers import AutoModel

import app
from mm_hub import MMHubModel, MMHubPreTrainedModel
from mm_hub.cards import build_model_card
from mm_hub.loading import load_model
from mm_hub.model.modeling_mm_hub import ImageTextClassifierOutput
from mm_hub.tasks import TASKS, Scoring, Task, all_heads, pair_inputs, register_task, task_named, task_of
from tests.conftest import HEADS, random_images
from tests.data import disk_dataset, tiny_flags
from tests.test_app import launch
from training.config import TrainConfig
from training.train import main as train


class ToyScoreHead(MMHubPreTrainedModel):
    """Image-text regression: how well a caption fits an image, one number from the fused embedding."""

    def __init__(self, config):
        super().__init__(config)
        self.mm_hub = MMHubModel(config)
        self.score = nn.Linear(config.fusion_hidden_size, 1)
        self.post_init()

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, labels=None, **kwargs):
        logits = self.score(self.mm_hub(pixel_values, input_ids, attention_mask).fused_embeds)  # (B, 1)
        loss = None if labels is None else F.l1_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return ImageTextClassifierOutput(loss=loss, logits=logits)


def mean_abs_error(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"mean_abs_error": float(np.abs(predictions.reshape(-1) - labels.reshape(-1)).mean())}


TOY = Task(
    name="toy_score",
    pipeline_task="image-text-scoring",
    hub_tag="other",
    heads=(ToyScoreHead,),
    scoring=Scoring(("mean_abs_error",), mean_abs_error, lower_is_better=True),
    encode=pair_inputs,
    describe=lambda config: "An mm_hub image + text model with a scoring head:",
    details=lambda config: ["| Output | one score per pair |"],
    usage="\nScore a pair: `AutoModel.from_pretrained(\"{repo_id}\")(**processor(images=..., text=...)).logits`.\n",
    tabs=("classify",),
    columns={"label": "label_column"},
)


@pytest.fixture
def toy_task():
    register_task(TOY)
    yield TOY
    TASKS.pop(TOY.name)  # the other tests see the built-in tasks only


def test_a_new_task_trains_saves_loads_gets_a_card_and_is_served(toy_task, tmp_path):
    out = tmp_path / "toy"
    data = disk_dataset(tmp_path / "data")
    metrics = train(["--task", "toy_score", "--dataset", str(data), "--label-column", "score", *tiny_flags(out),
                     "--max-steps", "3"])
    assert set(metrics) >= {"eval_mean_abs_error", "eval_loss"}
    model = AutoModel.from_pretrained(out)
    assert type(model) is ToyScoreHead and task_of(model) is toy_task
    card = str(build_model_card(out, "someone/toy"))
    assert "pipeline_tag: other" in card and "mean_abs_error" in card and "a scoring head" in card
    assert "| Output | one score per pair |" in card and 'AutoModel.from_pretrained("someone/toy")' in card
    demo = launch(app.create_demo(model=str(out)))
    try:
        assert {c["props"]["label"] for c in demo.config["components"]
                if c["type"] == "tabitem" and c["props"].get("visible", True)} == {"Classify"}
        header = next(c["props"]["value"] for c in demo.config["components"]
                      if c["props"].get("elem_id") == "model-info-classify")
        assert "**Measured** mean abs error" in header
        image = tmp_path / "scene.png"
        random_images(1)[0].save(image)
        answer = Client(demo.local_url, verbose=False).predict(handle_file(str(image)), "a red circle",
                                                               api_name="/classify")
        assert answer["label"].startswith("LABEL_0 = ")
    finally:
        demo.close()


def test_every_head_belongs_to_exactly_one_task_and_loads_as_itself(tmp_path):
    assert set(all_heads()) == {head.__name__ for task in TASKS.values() for head in task.heads}
    assert len(all_heads()) == sum(len(task.heads) for task in TASKS.values())
    for name, task in TASKS.items():
        assert task_named(name) is task and task.preset and task.shapes_variant and task.tabs
        assert set(task.tabs) <= set(app.TABS), f"{name} names a tab the app does not have"
        assert (Path(__file__).parents[1] / "training" / "configs" / f"{task.preset}.yaml").is_file()
    for head, cls in HEADS.items():  # the tests' tiny models: one per task, saved and loaded back by the one loader
        from tests.conftest import save_tiny_model

        folder = save_tiny_model(tmp_path / head, head)
        loaded, _ = load_model(folder)
        assert type(loaded) is cls and task_of(loaded) is TASKS[head]


def test_the_default_config_builds_the_fusion_the_model_config_documents():
    from mm_hub import MMHubConfig

    documented, defaults = MMHubConfig(), TrainConfig().model
    shared = [name for name in vars(defaults) if hasattr(documented, name) and name not in ("vision_config",
                                                                                             "text_config")]
    assert "fusion_type" in shared and len(shared) >= 15
    assert {name: getattr(defaults, name) for name in shared} == {name: getattr(documented, name) for name in shared}


def test_unknown_tasks_are_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"Unknown task 'detection'; choose one of \['classification', 'generation', "
                                         r"'retrieval'\]"):
        task_named("detection")
    with pytest.raises(ValueError, match="already belong to another task"):
        register_task(Task(**{**vars(TOY), "name": "copy", "heads": TASKS["retrieval"].heads}))
