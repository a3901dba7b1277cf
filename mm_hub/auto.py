"""mm_hub's place in transformers' Auto classes and pipeline registry, filled from the task registry.

`register_heads` runs for every task `mm_hub.tasks.register_task` adds: ``AutoModel`` learns every head (it picks the
one a saved config's ``architectures`` names), each of the task's Auto classes its heads, its custom pipeline (if
any) its pipeline task, and every head is marked for ``register_for_auto_class`` so saved folders carry its code.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.pipelines import PIPELINE_REGISTRY

from .model.configuration_mm_hub import MMHubConfig
from .model.modeling_mm_hub import MMHubModel
from .model.processing_mm_hub import MMHubProcessor


class AutoModelForImageTextClassification(_BaseAutoModelClass):
    """Auto class for (image, text) -> label heads; transformers has none, so mm_hub defines it."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForImageTextRetrieval(_BaseAutoModelClass):
    """Auto class for image-text dual encoders with a contrastive head."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


_HEADS: list[type] = []


def _one_or_tuple(classes: tuple[type, ...]) -> type | tuple[type, ...]:
    return classes[0] if len(classes) == 1 else classes


def register_heads(task: Any) -> None:
    """Register ``task``'s heads (a `mm_hub.tasks.Task`) with ``AutoModel`` (beside every head registered before),
    with the task's Auto classes, and its pipeline with transformers' pipeline registry."""
    _HEADS.extend(head for head in task.heads if head not in _HEADS)
    # A tuple: `AutoModel` picks the class named in the saved config's `architectures` (the base model for a fresh
    # config), so it returns the same head with mm_hub installed as the auto_map gives without it.
    AutoModel.register(MMHubConfig, (MMHubModel, *_HEADS), exist_ok=True)
    for auto_class in task.auto_classes:
        auto_class.register(MMHubConfig, _one_or_tuple(task.heads), exist_ok=True)
    if task.pipeline is not None:
        PIPELINE_REGISTRY.register_pipeline(task.pipeline_task, pipeline_class=task.pipeline,
                                            pt_model=task.auto_classes[0], type="multimodal")
    # Saved folders map "AutoModel" to the class that saved them, so `AutoModel.from_pretrained(path,
    # trust_remote_code=True)` returns the head that was trained, on a machine without mm_hub.
    for head in task.heads:
        head.register_for_auto_class("AutoModel")


def register_base() -> None:
    """Register the config, the base model and the processor (for local use and ``register_for_auto_class``)."""
    AutoConfig.register(MMHubConfig.model_type, MMHubConfig, exist_ok=True)
    AutoModel.register(MMHubConfig, (MMHubModel, *_HEADS), exist_ok=True)
    AutoProcessor.register(MMHubConfig, MMHubProcessor, exist_ok=True)
    MMHubConfig.register_for_auto_class()
    MMHubModel.register_for_auto_class("AutoModel")
    MMHubProcessor.register_for_auto_class()


register_base()

__all__ = ["AutoModelForImageTextClassification", "AutoModelForImageTextRetrieval", "register_base",
           "register_heads"]
