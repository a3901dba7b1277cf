"""mm_hub: image + text fusion models as Hugging Face `PreTrainedModel`s.

Importing the package registers the config, models, processor and pipeline with transformers' Auto classes and
pipeline registry, and marks them for `register_for_auto_class` so saved or pushed folders carry their code.
"""

from collections import OrderedDict

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.pipelines import PIPELINE_REGISTRY

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

__version__ = "0.1.0"


class AutoModelForImageTextClassification(_BaseAutoModelClass):
    """Auto class for (image, text) -> label heads; transformers has none, so mm_hub defines it."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForImageTextRetrieval(_BaseAutoModelClass):
    """Auto class for image-text dual encoders with a contrastive head."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


# The classification heads; a saved config's `architectures` tells the Auto classes which one it is.
CLASSIFIERS = (MMHubForImageTextClassification, MMHubEnsembleForImageTextClassification)


def _register() -> None:
    """Register with the Auto classes (local use) and mark every class for `register_for_auto_class`."""
    AutoConfig.register(MMHubConfig.model_type, MMHubConfig, exist_ok=True)
    # A tuple: `AutoModel` picks the class named in the saved config's `architectures` (the base model for a
    # fresh config), so it returns the same head with mm_hub installed as the auto_map gives without it.
    AutoModel.register(
        MMHubConfig, (MMHubModel, *CLASSIFIERS, MMHubForImageTextRetrieval, MMHubForConditionalGeneration), exist_ok=True
    )
    # transformers' own image-text-to-text pipeline serves the generation head (and loads it through this class).
    AutoModelForImageTextToText.register(MMHubConfig, MMHubForConditionalGeneration, exist_ok=True)
    # ... and its zero-shot-image-classification pipeline the dual encoder (candidate captions scored against an image).
    AutoModelForZeroShotImageClassification.register(MMHubConfig, MMHubForImageTextRetrieval, exist_ok=True)
    AutoModelForImageTextClassification.register(MMHubConfig, CLASSIFIERS, exist_ok=True)
    AutoModelForImageTextRetrieval.register(MMHubConfig, MMHubForImageTextRetrieval, exist_ok=True)
    AutoProcessor.register(MMHubConfig, MMHubProcessor, exist_ok=True)
    PIPELINE_REGISTRY.register_pipeline(
        CLASSIFICATION_TASK,
        pipeline_class=ImageTextClassificationPipeline,
        pt_model=AutoModelForImageTextClassification,
        type="multimodal",
    )
    # Saved folders map "AutoModel" to the class that saved them, so `AutoModel.from_pretrained(path,
    # trust_remote_code=True)` returns the head that was trained, on a machine without mm_hub.
    MMHubConfig.register_for_auto_class()
    for model_class in (MMHubModel, *CLASSIFIERS, MMHubForImageTextRetrieval, MMHubForConditionalGeneration):
        model_class.register_for_auto_class("AutoModel")
    MMHubProcessor.register_for_auto_class()


_register()

__all__ = [
    "FUSION_REGISTRY",
    "CLASSIFICATION_TASK",
    "GENERATION_TASK",
    "RETRIEVAL_TASK",
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
    "load_rgb_image",
]
