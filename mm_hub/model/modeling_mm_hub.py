"""mm_hub models: image encoder + text encoder (`towers_mm_hub`) + fusion module, with classification and retrieval
heads.

Layout: losses -> outputs -> pre-trained base (the one builder) -> base model -> heads.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mm_hub import CLASSIFICATION_TASK, MMHubConfig, infer_problem_type
from .fusion_mm_hub import FUSION_REGISTRY, SequenceFusion, build_fusion, masked_mean
from .towers_mm_hub import (TEXT_ENCODERS, MMHubVisionEncoder, _as_config, _load_tower, _pretrained_tower,
                            tower_sha256)

# --------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of a square similarity matrix against its diagonal (the matching pair)."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def symmetric_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: the mean of the text->image and image->text contrastive losses."""
    return (contrastive_loss(logits_per_text) + contrastive_loss(logits_per_text.t())) / 2.0


# The most parameters a config may describe (16 GB in float32), counted while `from_pretrained` builds the model on
# the meta device, before any weight is allocated: each size field is bounded (`SIZE_LIMITS`), their product is not.
MAX_PARAMETERS = 4_000_000_000


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MMHubModelOutput(ModelOutput):
    """Output of [`MMHubModel`].

    Args:
        fused_embeds (`torch.FloatTensor` of shape `(batch_size, fusion_hidden_size)`):
            The fused image+text embedding (None when the model was built without fusion).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, vision_hidden_size)`):
            Mean of the image encoder's output tokens.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_hidden_size)`):
            Mean of the text encoder's non-padding token states.
        image_tokens (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, vision_hidden_size)`):
            Image encoder output as tokens (grid cells row by row for CNNs).
        text_tokens (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_hidden_size)`):
            Text encoder output.
        fusion_attentions (`dict[str, tuple[torch.FloatTensor]]`, *optional*):
            Returned with `output_attentions=True`; the keys and shapes depend on the fusion type (see each fusion
            class): `gate` for gated, `text_to_image`/`image_to_text`/`pooling` for attention, `self` for sequence.
    """

    fused_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_tokens: torch.FloatTensor | None = None
    text_tokens: torch.FloatTensor | None = None
    fusion_attentions: dict[str, tuple[torch.FloatTensor, ...]] | None = None


@dataclass
class ImageTextClassifierOutput(ModelOutput):
    """Output of [`MMHubForImageTextClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Returned when `labels` are given; cross-entropy, BCE-with-logits or MSE by `config.problem_type`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification (or regression) scores before softmax / sigmoid.
        fusion_attentions (`dict[str, tuple[torch.FloatTensor]]`, *optional*):
            As in [`MMHubModelOutput`], with `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_attentions: dict[str, tuple[torch.FloatTensor, ...]] | None = None


@dataclass
class ImageTextRetrievalOutput(ModelOutput):
    """Output of [`MMHubForImageTextRetrieval`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric contrastive loss, returned when `return_loss=True`.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarities of every image to every text.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised image embeddings in the shared space.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised text embeddings in the shared space.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class MMHubPreTrainedModel(PreTrainedModel):
    """Weight initialisation, freezing and pretrained-tower composition shared by every mm_hub model."""

    config_class = MMHubConfig
    base_model_prefix = "mm_hub"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    # Fusion blocks and decoder layers checkpoint themselves, towers through their own models (BERT, ViT) or as one
    # segment (`_CheckpointedTower`): ``--activation-checkpointing`` in training.
    supports_gradient_checkpointing = True
    # transformers Auto classes besides AutoModel that load this head (their pipelines use them); a saved config
    # maps them to it too, so those pipelines load it with `trust_remote_code` where mm_hub is not installed.
    auto_classes: tuple[str, ...] = ()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`; the saved ``auto_map`` also names this class for `auto_classes`."""
        if self._auto_class is not None and self.auto_classes:
            module = type(self).__module__.split(".")[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                    **{name: f"{module}.{type(self).__name__}" for name in self.auto_classes}}
        super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear, Embedding, LayerNorm, LSTM, MultiheadAttention
        if isinstance(module, SequenceFusion):
            init.normal_(module.cls_token, std=self.config.initializer_range)
        elif isinstance(module, MMHubForImageTextRetrieval):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    @classmethod
    def _pretrained_config_defaults(cls, tokenizer: Any) -> dict[str, Any]:
        """Config values a head takes from the pretrained tokenizer in `from_vision_text_pretrained` (none here)."""
        return {}

    def _pretrained_text_setup(self, tokenizer: Any, text_model: nn.Module) -> None:
        """What a head takes from the pretrained text model once the towers are loaded (nothing here)."""

    def post_init(self) -> None:
        """`PreTrainedModel.post_init`, then the parameter budget (`MAX_PARAMETERS`) of a model being loaded."""
        super().post_init()
        parameters = list(self.parameters())
        if parameters and parameters[0].is_meta:  # from_pretrained: nothing allocated yet
            count = sum(parameter.numel() for parameter in parameters)
            if count > MAX_PARAMETERS:
                raise ValueError(f"The config describes a model of {count:,} parameters; mm_hub loads at most "
                                 f"{MAX_PARAMETERS:,}. Check its sizes (num_labels, hidden sizes, layers, vocabulary).")

    def _apply_freezing(self) -> None:
        """Turn off gradients of the encoders the config freezes."""
        base = self.base_model
        if self.config.freeze_vision_encoder:
            base.vision_encoder.requires_grad_(False)
        if self.config.freeze_text_encoder:
            base.text_encoder.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """As `PreTrainedModel.from_pretrained`, with the encoders the config freezes frozen again: loading the
        weights makes every parameter trainable. A LoRA adapter folder or repo (``adapter_config.json``, written by
        ``--lora`` training) loads as the plain model: its base rebuilt from the pretrained towers its config names,
        the adapters merged in (`adapter_mm_hub.load_adapter_model`)."""
        from .adapter_mm_hub import adapter_config_file, load_adapter_model

        if adapter_config_file(pretrained_model_name_or_path, kwargs) is not None:
            return load_adapter_model(cls, pretrained_model_name_or_path, **kwargs)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._apply_freezing()  # (model, info) with output_loading_info
        return loaded

    def train(self, mode: bool = True) -> MMHubPreTrainedModel:
        """As `nn.Module.train`, but frozen encoders stay in eval mode so their BatchNorm statistics stay fixed."""
        super().train(mode)
        base = self.base_model
        if self.config.freeze_vision_encoder:
            base.vision_encoder.eval()
        if self.config.freeze_text_encoder:
            base.text_encoder.eval()
        for module in self.modules():  # a BatchNorm whose weights do not train (LoRA) keeps its statistics too
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and not any(
                    parameter.requires_grad for parameter in module.parameters()):
                module.eval()
        return self

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | os.PathLike | None,
        text_model_name_or_path: str | os.PathLike,
        text_encoder_type: str = "transformer",
        max_length: int = 64,
        hub_kwargs: dict[str, Any] | None = None,
        *,
        vision_config: PreTrainedConfig | dict | None = None,
        text_config: PreTrainedConfig | dict | None = None,
        image_size: int = 224,
        **config_kwargs: Any,
    ) -> tuple[MMHubPreTrainedModel, Any]:
        """Build a model of this head from its two towers: the one builder of mm_hub (training builds through it).

        Each tower is pretrained (a Hub id or local folder) or new, randomly initialised from a config.

        Args:
            vision_model_name_or_path: e.g. ``"microsoft/resnet-18"``: its weights and image processor. None with
                ``vision_config``.
            text_model_name_or_path: e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``: its tokenizer always; with
                ``text_encoder_type="transformer"`` its weights become the text encoder (unless ``text_config``),
                with ``"lstm"`` its input embeddings start the BiLSTM's embedding table.
            text_encoder_type: ``"transformer"`` or ``"lstm"``.
            max_length: longest tokenised text the processor keeps (longer text is truncated).
            hub_kwargs: passed to every ``from_pretrained`` call (``revision``, ``token``, ``cache_dir``, ...).
            vision_config: a new vision tower from this config (a dict: ``model_type`` defaults to ``resnet``),
                with a square image processor of side ``image_size`` (ImageNet mean and std).
            text_config: a new transformer text tower from this config (a dict: ``model_type`` defaults to
                ``bert``) over the pretrained tokenizer's vocabulary.
            image_size: the image side of a new vision tower's processor.
            **config_kwargs: any other [`MMHubConfig`] field (``fusion_type``, ``num_labels``, ``id2label``, ...).

        Returns:
            ``(model, processor)``, the model in eval mode as after ``from_pretrained``. After
            ``model.save_pretrained(d)`` and ``processor.save_pretrained(d)`` only ``d`` is needed.

        Raises:
            ValueError: pretrained weights that do not fit their tower (naming the missing and unexpected keys), or
                neither ``vision_model_name_or_path`` nor ``vision_config``.
        """
        from transformers import AutoImageProcessor, AutoTokenizer, ConvNextImageProcessor

        from .processing_mm_hub import MMHubProcessor

        hub_kwargs = hub_kwargs or {}
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path, **hub_kwargs)
        for key, value in cls._pretrained_config_defaults(tokenizer).items():
            config_kwargs.setdefault(key, value)
        if vision_config is not None:
            vision = None
            vision_config = _as_config(vision_config, "resnet")
            image_processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
        elif vision_model_name_or_path is not None:
            vision = _pretrained_tower(vision_model_name_or_path, "vision", hub_kwargs)
            vision_config = vision.config
            image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path, **hub_kwargs)
        else:
            raise ValueError("Give a pretrained vision model (vision_model_name_or_path) or a vision_config.")
        text = None
        if text_encoder_type == "lstm" or text_config is None:
            text = _pretrained_tower(text_model_name_or_path, "text", hub_kwargs)
        if text_encoder_type == "lstm":
            embeddings = text.get_input_embeddings().weight
            config_kwargs.setdefault("vocab_size", embeddings.shape[0])
            config_kwargs.setdefault("lstm_embedding_size", embeddings.shape[1])
            text_config = None
        elif text_config is not None:
            text_config = _as_config(text_config, "bert", vocab_size=len(tokenizer))
        else:
            text_config = text.config
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id or 0)
        config = MMHubConfig(
            vision_config=vision_config, text_config=text_config, text_encoder_type=text_encoder_type, **config_kwargs
        )
        model = cls(config)
        base = model.base_model
        if vision is not None:
            _load_tower(base.vision_encoder.model, vision.state_dict(), "vision")
        if text_encoder_type == "lstm":
            if base.text_encoder.embeddings.weight.shape != embeddings.shape:
                raise ValueError(
                    f"lstm_embedding_size/vocab_size give an embedding table of {tuple(base.text_encoder.embeddings.weight.shape)}"
                    f" but {text_model_name_or_path} has {tuple(embeddings.shape)}."
                )
            with torch.no_grad():
                base.text_encoder.embeddings.weight.copy_(embeddings)
        elif text is not None:
            _load_tower(base.text_encoder.model, text.state_dict(), "text")
        if text is not None:
            model._pretrained_text_setup(tokenizer, text)
        towers = {}  # what an adapter of this model is rebuilt on (`adapter_mm_hub`)
        if vision is not None:
            towers["vision"] = (vision_model_name_or_path, base.vision_encoder.model)
        if text is not None and text_encoder_type == "transformer":
            towers["text"] = (text_model_name_or_path, base.text_encoder.model)
        model.config.pretrained_towers = {
            side: {"name_or_path": str(name), "revision": hub_kwargs.get("revision"), "sha256": tower_sha256(tower)}
            for side, (name, tower) in towers.items()} or None
        model._apply_freezing()
        model.eval()  # like `from_pretrained`: ready for inference; the Trainer switches to train mode itself
        return model, MMHubProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)


def _require_one(name: str, value: Any, alternative: str, other: Any) -> None:
    """Exactly one of two alternative inputs (raw ``name`` or encoded ``alternative``) must be given."""
    if (value is None) == (other is None):
        given = "both" if value is not None else "neither"
        raise ValueError(f"Give `{name}` or `{alternative}` (one of the two), got {given}.")


class MMHubModel(MMHubPreTrainedModel):
    """Image encoder + text encoder + fusion module, returning the fused and per-modality embeddings."""

    def __init__(self, config: MMHubConfig, add_fusion: bool = True):
        if config.ensemble_size != 1:
            raise ValueError(
                f"This config describes an ensemble of {config.ensemble_size} models: load it with "
                "MMHubEnsembleForImageTextClassification (or AutoModel / AutoModelForImageTextClassification)."
            )
        super().__init__(config)
        self.vision_encoder = MMHubVisionEncoder(config)
        self.text_encoder = TEXT_ENCODERS[config.text_encoder_type](config)
        if add_fusion:
            size = config.fusion_hidden_size
            # LayerNorm after each projection puts both modalities on the same scale: a BiLSTM over small
            # pretrained embeddings starts ~10x quieter than BatchNorm'd CNN features, and a fusion that multiplies
            # the two (attention) then barely gets a gradient.
            self.image_projection = nn.Sequential(nn.Linear(self.vision_encoder.hidden_size, size), nn.LayerNorm(size))
            self.text_projection = nn.Sequential(nn.Linear(self.text_encoder.hidden_size, size), nn.LayerNorm(size))
            self.fusion = build_fusion(config)
        else:
            self.fusion = None
        self.post_init()
        self._apply_freezing()

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> image tokens (B, N, C) and their mean (B, C)."""
        tokens = self.vision_encoder(pixel_values)
        return tokens, tokens.mean(dim=1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> text tokens (B, T, D) and their masked mean (B, D)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        tokens = self.text_encoder(input_ids, attention_mask)
        return tokens, masked_mean(tokens, attention_mask)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        image_tokens: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> MMHubModelOutput:
        """Encode both modalities and fuse them.

        Args:
            pixel_values: (B, 3, H, W) images from the processor.
            input_ids: (B, T) token ids from the processor.
            attention_mask: (B, T), 1 at real tokens; all ones when omitted.
            output_attentions: also return the fusion module's attention (or gate) weights.
            image_tokens, text_tokens: the encoders' outputs (`encode_image` / `encode_text` tokens) in place of
                ``pixel_values`` / ``input_ids``, e.g. cached outputs of frozen encoders (``attention_mask`` then
                marks the real tokens of ``text_tokens``).
        """
        _require_one("pixel_values", pixel_values, "image_tokens", image_tokens)
        _require_one("input_ids", input_ids, "text_tokens", text_tokens)
        num_images = (pixel_values if image_tokens is None else image_tokens).shape[0]
        texts = input_ids if text_tokens is None else text_tokens
        if num_images != texts.shape[0]:
            raise ValueError(
                f"Got {num_images} images but {texts.shape[0]} texts; classification needs one image per text."
            )
        if attention_mask is None:
            attention_mask = torch.ones(texts.shape[:2], dtype=torch.long, device=texts.device)
        if image_tokens is None:
            image_tokens, image_embeds = self.encode_image(pixel_values)  # (B, N, Cv), (B, Cv)
        else:
            image_embeds = image_tokens.mean(dim=1)
        if text_tokens is None:
            text_tokens, text_embeds = self.encode_text(input_ids, attention_mask)  # (B, T, Ct), (B, Ct)
        else:
            text_embeds = masked_mean(text_tokens, attention_mask)
        fused, attentions = None, None
        if self.fusion is not None:
            fused, attentions = self.fusion(
                self.image_projection(image_tokens),  # (B, N, D)
                self.text_projection(text_tokens),  # (B, T, D)
                attention_mask,
                output_attentions,
            )
        return MMHubModelOutput(
            fused_embeds=fused,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            fusion_attentions=attentions,
        )


def classification_loss(config: MMHubConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers' sequence-classification heads use, chosen by (and inferred into) `problem_type`."""
    num_labels = logits.shape[-1]
    integer = labels.dtype in (torch.long, torch.int)
    config.problem_type = infer_problem_type(config.problem_type, num_labels, integer)
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class ImageTextClassifierPreTrainedModel(MMHubPreTrainedModel):
    """What the classification heads share: saving with the `image-text-classification` pipeline and its code."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus the `image-text-classification` pipeline and its code, so that
        ``pipeline("image-text-classification", model=save_directory, trust_remote_code=True)`` works where mm_hub
        is not installed."""
        from .pipeline_mm_hub import ImageTextClassificationPipeline

        # "AutoModel" resolves to this head through the auto_map written by `register_for_auto_class`.
        self.config.custom_pipelines = {
            CLASSIFICATION_TASK: {
                "impl": f"pipeline_mm_hub.{ImageTextClassificationPipeline.__name__}",
                "pt": ["AutoModel"],
                "type": "multimodal",
            }
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None:
            module_file = __import__(ImageTextClassificationPipeline.__module__, fromlist=["_"]).__file__
            shutil.copy(module_file, os.path.join(save_directory, "pipeline_mm_hub.py"))


class MMHubForImageTextClassification(ImageTextClassifierPreTrainedModel):
    """Fused image+text embedding -> dropout -> linear classifier (single-label, multi-label or regression)."""

    def __init__(self, config: MMHubConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mm_hub = MMHubModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        image_tokens: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ImageTextClassifierOutput:
        """Classify (image, text) pairs.

        Args:
            pixel_values: (B, 3, H, W); input_ids, attention_mask: (B, T).
            labels: (B,) class ids (single-label), (B, num_labels) 0/1 floats (multi-label) or (B,) / (B, num_labels)
                floats (regression). The loss follows `config.problem_type`.
            output_attentions: return the fusion attention weights too.
            image_tokens, text_tokens: encoder outputs in place of ``pixel_values`` / ``input_ids`` (see
                `MMHubModel.forward`; training with ``--cache-frozen-features`` passes them).
        """
        outputs = self.mm_hub(pixel_values, input_ids, attention_mask, output_attentions=output_attentions,
                              image_tokens=image_tokens, text_tokens=text_tokens)
        logits = self.classifier(self.dropout(outputs.fused_embeds))  # (B, num_labels)
        loss = None if labels is None else classification_loss(self.config, logits, labels)
        return ImageTextClassifierOutput(loss=loss, logits=logits, fusion_attentions=outputs.fusion_attentions)


def average_scores(config: MMHubConfig, logits: torch.Tensor) -> torch.Tensor:
    """(K, B, L) logits of K classifiers -> (B, L) logits of their average prediction: the log of the mean softmax
    (single-label), the logit of the mean sigmoid (multi-label), or the mean value (regression; see
    `infer_problem_type`)."""
    problem = infer_problem_type(config.problem_type, logits.shape[-1])
    if problem == "regression":
        return logits.mean(dim=0)
    if problem == "multi_label_classification":
        return torch.logit(torch.sigmoid(logits).mean(dim=0), eps=1e-7)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(len(logits))


def _mean_of(values: list[Any]) -> Any:
    """Element-wise mean of equally nested dicts / tuples of tensors (the members' fusion attentions)."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, dict):
        return {key: _mean_of([value[key] for value in values]) for key in first}
    if isinstance(first, (tuple, list)):
        return tuple(_mean_of(list(parts)) for parts in zip(*values))
    return torch.stack(values).mean(dim=0)


class MMHubEnsembleForImageTextClassification(ImageTextClassifierPreTrainedModel):
    """``config.ensemble_size`` classifiers of one architecture, trained apart (other seeds), that predict together:
    their probabilities (values, for regression) are averaged. Build one from trained models with `from_members`.

    Single runs of a small model can differ by points of accuracy on inputs unlike the training data (the demo's
    held-out captions); the average of a few is steadier and usually better than each. Costs one forward per member.
    """

    def __init__(self, config: MMHubConfig):
        super().__init__(config)
        member_config = copy.deepcopy(config)
        member_config.ensemble_size = 1
        self.members = nn.ModuleList(
            MMHubForImageTextClassification(member_config) for _ in range(config.ensemble_size)
        )
        self.post_init()

    @classmethod
    def from_members(cls, members: list[MMHubForImageTextClassification]) -> MMHubEnsembleForImageTextClassification:
        """The ensemble of trained classifiers (weights copied), in eval mode. They must share the architecture,
        labels and problem type (raises ValueError naming what differs) and be used with one processor
        (``python -m training.ensemble`` checks that their saved processors agree)."""
        if len(members) < 2 or not all(type(m) is MMHubForImageTextClassification for m in members):
            raise ValueError(
                f"An ensemble needs two or more MMHubForImageTextClassification models, got "
                f"{[type(m).__name__ for m in members]}."
            )
        reference = members[0].config
        for index, member in enumerate(members[1:], start=1):
            differ = _config_differences(reference, member.config)
            if differ:
                raise ValueError(f"Member {index} differs from member 0 in {differ}: ensemble members must agree.")
        config = copy.deepcopy(reference)
        config.ensemble_size = len(members)
        model = cls(config)
        for target, member in zip(model.members, members):
            target.load_state_dict(member.state_dict())
        return model.eval()

    def _apply_freezing(self) -> None:
        """Each member freezes its own encoders."""
        for member in self.members:
            member._apply_freezing()

    def train(self, mode: bool = True) -> MMHubEnsembleForImageTextClassification:
        """As `nn.Module.train`; each member keeps its frozen encoders in eval mode."""
        return nn.Module.train(self, mode)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> ImageTextClassifierOutput:
        """Classify (image, text) pairs with every member and average (see `average_scores`).

        Args: as [`MMHubForImageTextClassification.forward`], without ``image_tokens`` / ``text_tokens`` (each member
        has its own encoders). The loss is the mean of the members' losses (so training the ensemble trains each member
        on its own); ``fusion_attentions`` is the members' mean.
        """
        outputs = [
            member(pixel_values, input_ids, attention_mask, labels=labels, output_attentions=output_attentions)
            for member in self.members
        ]
        if self.config.problem_type is None:  # a member inferred it from the labels
            self.config.problem_type = self.members[0].config.problem_type
        logits = average_scores(self.config, torch.stack([output.logits for output in outputs]))
        loss = None if labels is None else torch.stack([output.loss for output in outputs]).mean()
        attentions = _mean_of([output.fusion_attentions for output in outputs])
        return ImageTextClassifierOutput(loss=loss, logits=logits, fusion_attentions=attentions)


# What members of an ensemble may differ in: training choices that do not change the weights' meaning.
_MEMBER_FREE_FIELDS = {"freeze_vision_encoder", "freeze_text_encoder", "dropout", "initializer_range"}


def _config_differences(first: MMHubConfig, second: MMHubConfig) -> list[str]:
    """Names of the architecture, label and problem-type fields in which two configs differ."""
    names = [f for f in MMHubConfig.__annotations__ if f not in _MEMBER_FREE_FIELDS] + ["id2label", "problem_type"]
    return [name for name in names if _plain(getattr(first, name)) != _plain(getattr(second, name))]


def _plain(value: Any) -> Any:
    """Sub-configs as dicts, so two configs compare by value."""
    return value.to_dict() if isinstance(value, PreTrainedConfig) else value


class MMHubForImageTextRetrieval(MMHubPreTrainedModel):
    """Dual encoder (CLIP-style): projections of each modality into one space, a learned temperature and a
    symmetric contrastive loss over in-batch negatives. transformers' ``zero-shot-image-classification`` pipeline
    labels an image by candidate captions with it; ``image-feature-extraction`` and ``feature-extraction`` give the
    embeddings of an image or a text."""

    auto_classes = ("AutoModelForZeroShotImageClassification",)

    def __init__(self, config: MMHubConfig):
        super().__init__(config)
        self.mm_hub = MMHubModel(config, add_fusion=False)
        base = self.mm_hub
        self.image_projection = nn.Linear(base.vision_encoder.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(base.text_encoder.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) -> (B, projection_dim) image embeddings, unit-length unless ``normalize=False``."""
        features = self.image_projection(self.mm_hub.encode_image(pixel_values)[1])
        return F.normalize(features, dim=-1) if normalize else features

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """(B, T) ids -> (B, projection_dim) text embeddings, unit-length unless ``normalize=False``."""
        features = self.text_projection(self.mm_hub.encode_text(input_ids, attention_mask)[1])
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        **kwargs: Any,
    ) -> ImageTextRetrievalOutput:
        """Score every image against every text; the i-th image and i-th text are the positive pairs. Given one
        modality only, the output holds its embeddings alone (then its first field, as the feature-extraction
        pipelines read it).

        Args:
            pixel_values: (B_i, 3, H, W); input_ids, attention_mask: (B_t, T).
            return_loss: compute the symmetric contrastive loss (needs B_i == B_t, both modalities).
        """
        if pixel_values is None and input_ids is None:
            raise ValueError("Give `pixel_values`, `input_ids` or both.")
        image_embeds = None if pixel_values is None else self.get_image_features(pixel_values)  # (B_i, P)
        text_embeds = None if input_ids is None else self.get_text_features(input_ids, attention_mask)  # (B_t, P)
        if image_embeds is None or text_embeds is None:
            if return_loss:
                raise ValueError("return_loss needs both images and texts (matched pairs).")
            return ImageTextRetrievalOutput(image_embeds=image_embeds, text_embeds=text_embeds)
        # Clamped as in CLIP so the temperature cannot exceed 100 and destabilise training.
        scale = self.logit_scale.clamp(max=4.6052).exp()
        logits_per_text = scale * text_embeds @ image_embeds.t()  # (B_t, B_i)
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    f"return_loss needs as many texts as images (matched pairs), got {logits_per_text.shape[0]} "
                    f"texts and {logits_per_text.shape[1]} images."
                )
            loss = symmetric_contrastive_loss(logits_per_text)
        return ImageTextRetrievalOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


__all__ = [
    "FUSION_REGISTRY",
    "MAX_PARAMETERS",
    "ImageTextClassifierOutput",
    "ImageTextRetrievalOutput",
    "MMHubEnsembleForImageTextClassification",
    "MMHubForImageTextClassification",
    "MMHubForImageTextRetrieval",
    "MMHubModel",
    "MMHubModelOutput",
    "MMHubPreTrainedModel",
]
