"""The classification task: an (image, text) pair -> a label (single-label, multi-label) or values (regression)."""

from __future__ import annotations

from typing import Any

from ..auto import AutoModelForImageTextClassification
from ..metrics import classification_metrics, multilabel_metrics, regression_metrics
from ..model.configuration_mm_hub import CLASSIFICATION_TASK, infer_problem_type
from ..model.modeling_mm_hub import MMHubEnsembleForImageTextClassification, MMHubForImageTextClassification
from ..model.pipeline_mm_hub import ImageTextClassificationPipeline
from . import Scoring, Task, pair_inputs, register_task


def describe(config: dict[str, Any]) -> str:
    if (config.get("ensemble_size") or 1) > 1:
        return (f"An mm_hub ensemble of {config['ensemble_size']} image + text classifiers trained apart, whose "
                "probabilities are averaged. Each has")
    return "An mm_hub image + text model with a classification head:"


def details(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    labels = [id2label.get(str(i), str(i)) for i in range(len(id2label))]
    problem = infer_problem_type(config.get("problem_type"), len(id2label))
    return [f"| Problem type | {problem} |", f"| Labels | {', '.join(f'`{label}`' for label in labels)} |"]


USAGE = """
Or as a pipeline (the `{pipeline_task}` task ships with the repo; with mm_hub installed, leave
`trust_remote_code` out and mm_hub's own pipeline serves it):

```python
from transformers import pipeline

classifier = pipeline("{pipeline_task}", model="{repo_id}", trust_remote_code=True)
classifier({{"image": "photo.jpg", "text": "a red circle above a blue square"}})
```
"""

CLASSIFICATION = register_task(Task(
    name="classification",
    pipeline_task=CLASSIFICATION_TASK,
    hub_tag="other",  # the Hub has no "image + text -> label" pipeline tag: "other" is the honest one
    heads=(MMHubForImageTextClassification, MMHubEnsembleForImageTextClassification),
    auto_classes=(AutoModelForImageTextClassification,),
    pipeline=ImageTextClassificationPipeline,
    scoring={
        "single_label_classification": Scoring(("accuracy",), classification_metrics),
        "multi_label_classification": Scoring(("micro_f1", "subset_accuracy"), multilabel_metrics),
        "regression": Scoring(("mse", "mae"), regression_metrics, lower_is_better=True),
    },
    encode=pair_inputs,
    describe=describe,
    details=details,
    usage=USAGE,
    tabs=("classify", "explain"),
    preset="classification",
    shapes_variant="classification",
    columns={"label": "label_column"},
))
