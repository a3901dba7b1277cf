"""Configuration of mm_hub image+text fusion models (no torch import: configs load without it)."""

import sys

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# ResNet-18 shape: BasicBlock stages of depth 2 (the `microsoft/resnet-18` architecture).
RESNET18_KWARGS = {
    "layer_type": "basic",
    "depths": [2, 2, 2, 2],
    "hidden_sizes": [64, 128, 256, 512],
    "embedding_size": 64,
}
# all-MiniLM-L6-v2 shape: the default pretrained text encoder of the project.
MINILM_KWARGS = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}
TEXT_ENCODER_TYPES = ("transformer", "lstm")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
# The tasks of the heads, as pipelines and model cards name them.
CLASSIFICATION_TASK = "image-text-classification"
RETRIEVAL_TASK = "image-text-retrieval"
GENERATION_TASK = "image-text-to-text"  # transformers' own task: image + optional text in, text out


# The largest size a config may ask for, by the end of the field's name, checked before anything is allocated: a
# config.json is the first file a hostile repo controls ("num_labels": 1000000000 made `from_pretrained` allocate
# 6 GB before failing). Far above any real image+text model; the parameter count is bounded as the model is built.
SIZE_LIMITS = {
    "num_labels": 100_000,
    "vocab_size": 1_000_000,
    "hidden_size": 65_536,
    "hidden_sizes": 65_536,
    "intermediate_size": 262_144,
    "embedding_size": 65_536,
    "projection_dim": 65_536,
    "max_position_embeddings": 1_048_576,
    "max_positions": 1_048_576,
    "image_size": 16_384,
    "num_layers": 1_000,
    "num_hidden_layers": 1_000,
    "depths": 1_000,
    "num_heads": 1_024,
    "num_attention_heads": 1_024,
    "ensemble_size": 64,
}


def check_size_fields(values: dict, where: str = "config") -> None:
    """Refuse a size field (see `SIZE_LIMITS`; a list counts by its largest item and, for ``depths``, its sum) that is
    not a whole number or is over its limit, naming the field.

    Raises:
        ValueError
    """
    for name, value in values.items():
        limit = next((limit for end, limit in SIZE_LIMITS.items() if name == end or name.endswith(f"_{end}")), None)
        if limit is None or value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(item, int) and not isinstance(item, bool) for item in items):
            raise ValueError(f"{where}.{name} must be a whole number (or a list of them), got {value!r}.")
        largest = sum(items) if name == "depths" else max(items, default=0)
        if largest > limit:
            raise ValueError(f"{where}.{name} = {largest:,} is larger than mm_hub builds ({limit:,} at most); the "
                             "config asks for a model no machine can hold.")


def infer_problem_type(problem_type: str | None, num_labels: int, integer_labels: bool | None = None) -> str:
    """The problem type a classifier is trained and read as: ``problem_type`` when set, else as transformers'
    sequence-classification heads infer it: regression for one output, single-label classification for integer
    labels (or when no labels are known), multi-label classification for float labels.

    The one answer for the loss, the ensemble's averaging, the pipeline, the app and the model card.
    """
    if problem_type is not None:
        return problem_type
    if num_labels == 1:
        return "regression"
    return "multi_label_classification" if integer_labels is False else "single_label_classification"


@strict
class MMHubDecoderConfig(PreTrainedConfig):
    r"""The text decoder of `MMHubForConditionalGeneration`, as transformers asks about it (its key/value cache,
    `generate`): made from an `MMHubConfig`'s ``decoder_*`` fields (`MMHubConfig.decoder_config`), not saved on its
    own.

    Args:
        vocab_size (`int`): rows of its token embeddings and output layer.
        hidden_size (`int`): width of its layers. num_hidden_layers (`int`): its layers.
        num_attention_heads (`int`): heads of its self- and cross-attention.
        max_position_embeddings (`int`): the longest text it reads and writes, prompt included.
        dropout (`float`): dropout of its layers.
        tie_word_embeddings (`bool`): whether its output layer is its token embeddings.
    """

    model_type = "mm_hub_decoder"

    vocab_size: int = 30522
    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 64
    dropout: float = 0.1
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = True


@strict
class MMHubConfig(PreTrainedConfig):
    r"""Configuration of an mm_hub model: an image encoder and a text encoder joined by a fusion module.

    Args:
        vision_config (`PreTrainedConfig` or `dict`, *optional*):
            Config of the image encoder, any vision model whose ``last_hidden_state`` is a feature grid
            ``(B, C, H, W)`` (ResNet, ConvNeXt) or a token sequence ``(B, N, D)`` (ViT). Defaults to ResNet-18.
        text_encoder_type (`str`, *optional*, defaults to `"transformer"`):
            ``"transformer"``: a pretrained transformer text encoder described by ``text_config``.
            ``"lstm"``: a 2-layer bidirectional LSTM over the tokenizer's vocabulary (``vocab_size``).
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            Config of the transformer text encoder (any BERT-family config). Defaults to the MiniLM-L6 shape.
            Unused when ``text_encoder_type="lstm"``.
        vocab_size (`int`, *optional*):
            Vocabulary size of the tokenizer; required for the LSTM encoder.
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token id of the tokenizer (the LSTM embedding's ``padding_idx``).
        lstm_embedding_size (`int`, *optional*, defaults to 384):
            Token embedding size of the LSTM encoder (the pretrained embedding size when initialised from one).
        lstm_hidden_size (`int`, *optional*, defaults to 256):
            Hidden size of each LSTM direction; the encoder outputs ``2 * lstm_hidden_size`` features per token.
        lstm_num_layers (`int`, *optional*, defaults to 2):
            Number of stacked bidirectional LSTM layers.
        fusion_type (`str`, *optional*, defaults to `"concat"`):
            Name of the fusion module (see ``fusion_mm_hub.FUSION_REGISTRY``): ``"concat"``, ``"gated"``,
            ``"attention"``, ``"sequence"`` or ``"bilinear"``. Checked when the model is built.
        fusion_hidden_size (`int`, *optional*, defaults to 256):
            Width both modalities are projected to before fusion, and size of the fused embedding.
        fusion_num_layers (`int`, *optional*, defaults to 1):
            Number of (cross-)attention blocks of the ``attention`` and ``sequence`` fusions.
        fusion_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of those blocks; must divide ``fusion_hidden_size``.
        fusion_max_positions (`int`, *optional*, defaults to 1024):
            Longest joint sequence (1 + image tokens + text tokens) the ``sequence`` fusion accepts, and the most
            image tokens the ``attention`` and ``bilinear`` fusions accept.
        projection_dim (`int`, *optional*, defaults to 256):
            Size of the shared image-text embedding space of the retrieval head.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial log-temperature of the retrieval head's contrastive loss (CLIP's ``log(1 / 0.07)``).
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout of the fusion module and the classification head.
        freeze_vision_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the image encoder's weights (and keep its BatchNorm statistics fixed).
        freeze_text_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the text encoder's weights.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of new layers.
        ensemble_size (`int`, *optional*, defaults to 1):
            Number of classifiers of this architecture whose predictions `MMHubEnsembleForImageTextClassification`
            averages; 1 for every other model.
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Width of the text decoder of `MMHubForConditionalGeneration` (and of its token embeddings, which its
            output layer shares; they start from the pretrained text model's word embeddings when the sizes match).
        decoder_num_layers (`int`, *optional*, defaults to 2):
            Decoder layers (causal self-attention, cross-attention to the image and prompt, MLP).
        decoder_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the decoder layers; must divide ``decoder_hidden_size``.
        decoder_max_positions (`int`, *optional*, defaults to 64):
            Longest text the decoder writes, in tokens (its learned position table).
        decoder_vocab (`list[int]`, *optional*):
            The token ids the decoder may write (its output layer is the token embeddings of these rows); None: the
            whole vocabulary. Built from a training set's targets it makes each step far cheaper, the way captioning
            models keep the words of their training captions.
        decoder_token_dropout (`float`, *optional*, defaults to 0.0):
            In training, the share of the words the decoder has written so far (never the prompt's) that it reads as
            padding instead, so that it must find the next word in the image rather than guess it from the words
            before: a decoder that learned "red" is followed by "circle" writes it under a red triangle it never saw.
        decoder_vocab_size (`int`, *optional*):
            Rows of the decoder's token embeddings (and of its tied output layer); None: ``vocab_size``. Set by
            `MMHubForConditionalGeneration.resize_token_embeddings`, which resizes the decoder's table only.
        bos_token_id, eos_token_id, decoder_start_token_id (`int`, *optional*):
            The tokenizer's ids the decoder starts from and stops at (``[CLS]`` and ``[SEP]`` for BERT tokenizers);
            set by `MMHubForConditionalGeneration.from_vision_text_pretrained` and the training command.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Whether the decoder's output layer is its token embeddings (one table, as in BERT and GPT-2).
        pretrained_towers (`dict`, *optional*):
            The pretrained towers `from_vision_text_pretrained` loaded, by side: ``{"vision": {"name_or_path": ...,
            "revision": ..., "sha256": ...}, "text": {...}}`` (a tower built new from a config, or the BiLSTM, has no
            entry). A LoRA adapter folder (`mm_hub.lora.save_adapter`) loads on top of these towers, rebuilt by name
            and checked by the SHA-256 of their weights.

    The decoder is described to transformers by its own config, `decoder_config` (an `MMHubDecoderConfig` made from
    the ``decoder_*`` fields), which ``get_text_config(decoder=True)`` returns, as `generate` asks.

    Example:

    ```python
    >>> from mm_hub import MMHubConfig, MMHubForImageTextClassification
    >>> config = MMHubConfig(fusion_type="gated", num_labels=3)
    >>> model = MMHubForImageTextClassification(config)
    ```
    """

    model_type = "mm_hub"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet", init_kwargs=RESNET18_KWARGS),
        "text_config": SubConfigSpec(
            config_class=AutoConfig, model_type="bert", init_kwargs=MINILM_KWARGS, optional=True
        ),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_encoder_type: str = "transformer"
    text_config: PreTrainedConfig | dict | None = None
    vocab_size: int | None = None
    pad_token_id: int | None = 0
    lstm_embedding_size: int = 384
    lstm_hidden_size: int = 256
    lstm_num_layers: int = 2
    fusion_type: str = "concat"
    fusion_hidden_size: int = 256
    fusion_num_layers: int = 1
    fusion_num_heads: int = 4
    fusion_max_positions: int = 1024
    projection_dim: int = 256
    logit_scale_init_value: float = 2.6592
    dropout: float = 0.1
    freeze_vision_encoder: bool = False
    freeze_text_encoder: bool = False
    initializer_range: float = 0.02
    ensemble_size: int = 1
    decoder_hidden_size: int = 256
    decoder_num_layers: int = 2
    decoder_num_heads: int = 4
    decoder_max_positions: int = 64
    decoder_vocab: list[int] | None = None
    decoder_token_dropout: float = 0.0
    decoder_vocab_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = True
    pretrained_towers: dict | None = None

    def __post_init__(self, **kwargs):
        # before `PreTrainedConfig` builds an id2label entry per label
        check_size_fields({"num_labels": kwargs.get("num_labels"),
                           **{field: getattr(self, field) for field in self.__dataclass_fields__}})
        if len(self.id2label or {}) > SIZE_LIMITS["num_labels"]:
            raise ValueError(f"config.id2label holds {len(self.id2label):,} labels; mm_hub builds at most "
                             f"{SIZE_LIMITS['num_labels']:,}.")
        if self.text_encoder_type not in TEXT_ENCODER_TYPES:
            raise ValueError(
                f"text_encoder_type={self.text_encoder_type!r} is not supported; choose one of {TEXT_ENCODER_TYPES}."
            )
        # The transformer text side always needs a config; the LSTM side never reads one.
        if self.text_encoder_type == "transformer" and self.text_config is None:
            self.text_config = {"model_type": "bert", **MINILM_KWARGS}
        if self.text_encoder_type == "lstm":
            self.text_config = None
        super().__post_init__(**kwargs)
        for name in ("vision_config", "text_config"):
            if getattr(self, name) is not None:
                check_size_fields(getattr(self, name).to_diff_dict(), name)
        # Checked here rather than in `validate_*` hooks so that users get a plain ValueError.
        self._check_sizes()
        self._use_installed_pipelines()

    @property
    def decoder_config(self) -> MMHubDecoderConfig:
        """The text decoder's config (of `MMHubForConditionalGeneration`), from the ``decoder_*`` fields."""
        return MMHubDecoderConfig(
            vocab_size=self.decoder_vocab_size or self.vocab_size or 0,
            hidden_size=self.decoder_hidden_size,
            num_hidden_layers=self.decoder_num_layers,
            num_attention_heads=self.decoder_num_heads,
            max_position_embeddings=self.decoder_max_positions,
            dropout=self.dropout,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            tie_word_embeddings=self.tie_word_embeddings,
        )

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """The text side transformers asks about: with ``decoder=True``, the decoder of a generation model
        (`decoder_config`: `generate` sizes its cache from it); otherwise the text encoder's ``text_config``, or this
        config itself for the BiLSTM (whose vocabulary is ``vocab_size``)."""
        if decoder and not encoder and self.is_encoder_decoder:
            return self.decoder_config
        return self.text_config if self.text_config is not None else self

    def _use_installed_pipelines(self) -> None:
        """Drop from ``custom_pipelines`` the tasks an installed package has registered (mm_hub registers its own on
        import): `transformers.pipeline` would otherwise always run the copy of the pipeline code stored in the
        repo (and demand ``trust_remote_code=True``), where the installed one should serve the task. The model's
        ``save_pretrained`` writes them again for machines without mm_hub."""
        pipelines = sys.modules.get("transformers.pipelines")  # looked up, not imported: this file imports no torch
        registry = getattr(pipelines, "PIPELINE_REGISTRY", None)
        custom = getattr(self, "custom_pipelines", None)
        if registry is not None and isinstance(custom, dict) and custom:
            self.custom_pipelines = {task: spec for task, spec in custom.items() if task not in registry.supported_tasks}

    def _check_sizes(self) -> None:
        """Check the sizes and probabilities the modules are built from."""
        if self.text_encoder_type == "lstm" and (self.vocab_size is None or self.vocab_size < 1):
            raise ValueError(
                f"text_encoder_type='lstm' needs vocab_size (the tokenizer's vocabulary size), got {self.vocab_size!r}."
            )
        if self.fusion_hidden_size % self.fusion_num_heads != 0:
            raise ValueError(
                f"fusion_hidden_size={self.fusion_hidden_size} must be divisible by "
                f"fusion_num_heads={self.fusion_num_heads}."
            )
        if self.decoder_hidden_size % self.decoder_num_heads != 0:
            raise ValueError(
                f"decoder_hidden_size={self.decoder_hidden_size} must be divisible by "
                f"decoder_num_heads={self.decoder_num_heads}."
            )
        for name in ("fusion_hidden_size", "fusion_num_layers", "projection_dim", "lstm_hidden_size", "ensemble_size",
                     "decoder_hidden_size", "decoder_num_layers", "decoder_max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("dropout", "decoder_token_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type={self.problem_type!r} is not one of {PROBLEM_TYPES}.")


__all__ = [
    "CLASSIFICATION_TASK",
    "GENERATION_TASK",
    "PROBLEM_TYPES",
    "RETRIEVAL_TASK",
    "SIZE_LIMITS",
    "MMHubConfig",
    "MMHubDecoderConfig",
    "check_size_fields",
    "infer_problem_type",
]
