"""mm_hub: image + text fusion models as Hugging Face `PreTrainedModel`s.

Importing the package registers the config, the processor and every task's heads and pipeline with transformers'
Auto classes and pipeline registry (`mm_hub.tasks`, `mm_hub.auto`), and marks them for `register_for_auto_class` so
saved or pushed folders carry their code.
"""

from .auto import AutoModelForImageTextClassification, AutoModelForImageTextRetrieval
from .model.configuration_mm_hub import CLASSIFICATION_TASK, GENERATION_TASK, RETRIEVAL_TASK, MMHubConfig
from .model.generation_mm_hub import MMHubForConditionalGeneration
from .model.modeling_mm_hub import (
    FUSION_REGISTRY,
    ImageTextClassifierOutput,
    ImageTextRetrievalOutput,
    MMHubEnsembleForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
    MMHubModel,
    MMHubModelOutput,
    MMHubPreTrainedModel,
)
from .model.pipeline_mm_hub import ImageTextClassificationPipeline
from .model.processing_mm_hub import MMHubProcessor, load_rgb_image
from .tasks import TASKS, Task, register_task

__version__ = "0.1.0"

__all__ = [
    "FUSION_REGISTRY",
    "CLASSIFICATION_TASK",
    "GENERATION_TASK",
    "RETRIEVAL_TASK",
    "TASKS",
    "AutoModelForImageTextClassification",
    "AutoModelForImageTextRetrieval",
    "ImageTextClassificationPipeline",
    "ImageTextClassifierOutput",
    "ImageTextRetrievalOutput",
    "MMHubConfig",
    "MMHubEnsembleForImageTextClassification",
    "MMHubForConditionalGeneration",
    "MMHubForImageTextClassification",
    "MMHubForImageTextRetrieval",
    "MMHubModel",
    "MMHubModelOutput",
    "MMHubPreTrainedModel",
    "MMHubProcessor",
    "Task",
    "load_rgb_image",
    "register_task",
]
