"""Core model tests, looping over every fusion strategy in the registry and both text encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, ConvNextConfig, ViTConfig

from mm_hub import (
    FUSION_REGISTRY,
    AutoModelForImageTextClassification,
    AutoModelForImageTextRetrieval,
    MMHubConfig,
    MMHubEnsembleForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
    MMHubModel,
)
from tests.conftest import TEXT_ENCODER_TYPES, assert_same_outputs, random_images, tiny_config, tiny_processor

FUSIONS = sorted(FUSION_REGISTRY)
TEXTS = ["a red circle on the left", "two blue squares", "a green triangle above a yellow star"]


@pytest.fixture(scope="module")
def batch():
    """Three (image, text) pairs of different lengths, so padding is exercised."""
    return dict(tiny_processor()(images=random_images(3), text=TEXTS))


def assert_gradients(model: torch.nn.Module) -> None:
    """Every trainable parameter got a finite, non-zero gradient; every frozen one got none."""
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name} received no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
            assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
        else:
            assert param.grad is None, f"frozen {name} received a gradient"


@pytest.mark.parametrize("text_encoder_type", TEXT_ENCODER_TYPES)
@pytest.mark.parametrize("fusion_type", FUSIONS)
def test_classification_forward_loss_and_gradients(fusion_type, text_encoder_type, batch):
    model = MMHubForImageTextClassification(tiny_config(fusion_type, text_encoder_type, dropout=0.0)).train()
    out = model(**batch, labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert_gradients(model)


@pytest.mark.parametrize("fusion_type", FUSIONS)
def test_frozen_encoders_get_no_gradient_and_keep_batchnorm_statistics(fusion_type, batch):
    config = tiny_config(fusion_type, freeze_vision_encoder=True, freeze_text_encoder=True)
    model = MMHubForImageTextClassification(config).train()
    vision = model.mm_hub.vision_encoder
    stats_before = {k: v.clone() for k, v in vision.state_dict().items() if "running" in k}
    model(**batch, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert_gradients(model)
    assert not any(p.requires_grad for p in vision.parameters())
    assert not any(p.requires_grad for p in model.mm_hub.text_encoder.parameters())
    assert any(p.requires_grad for p in model.mm_hub.fusion.parameters())
    assert not vision.training, "a frozen encoder must stay in eval mode"
    for key, value in stats_before.items():
        assert torch.equal(vision.state_dict()[key], value), f"BatchNorm statistic {key} changed while frozen"


@pytest.mark.parametrize("frozen", ["vision", "text"])
def test_a_reloaded_model_keeps_its_encoders_frozen(frozen, tmp_path):
    MMHubForImageTextClassification(tiny_config("concat", **{f"freeze_{frozen}_encoder": True})).save_pretrained(
        tmp_path)
    for loaded in (AutoModel.from_pretrained(tmp_path), MMHubForImageTextClassification.from_pretrained(tmp_path),
                   MMHubForImageTextClassification.from_pretrained(tmp_path, output_loading_info=True)[0]):
        for side in ("vision", "text"):
            encoder = getattr(loaded.mm_hub, f"{side}_encoder")
            assert all(p.requires_grad != (side == frozen) for p in encoder.parameters()), side
        assert all(p.requires_grad for p in loaded.mm_hub.fusion.parameters())


@pytest.mark.parametrize("text_encoder_type", TEXT_ENCODER_TYPES)
def test_retrieval_forward_loss_gradients_and_features(text_encoder_type, batch):
    # The retrieval head is a dual encoder: it has no fusion module, so fusion_type does not change it.
    model = MMHubForImageTextRetrieval(tiny_config(text_encoder_type=text_encoder_type, dropout=0.0)).train()
    out = model(**batch, return_loss=True)
    assert out.logits_per_image.shape == (3, 3) and out.logits_per_text.shape == (3, 3)
    assert torch.allclose(out.logits_per_image, out.logits_per_text.t())
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(out.loss)
    expected = (F.cross_entropy(out.logits_per_text, torch.arange(3)) + F.cross_entropy(out.logits_per_image, torch.arange(3))) / 2
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert_gradients(model)
    assert model.mm_hub.fusion is None

    model.eval()
    with torch.no_grad():
        image_features = model.get_image_features(batch["pixel_values"])
        text_features = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        raw = model.get_text_features(batch["input_ids"], batch["attention_mask"], normalize=False)
    assert image_features.shape == text_features.shape == (3, 8)
    assert torch.allclose(F.normalize(raw, dim=-1), text_features, atol=1e-6)


def test_retrieval_loss_needs_matched_pairs(batch):
    model = MMHubForImageTextRetrieval(tiny_config())
    with pytest.raises(ValueError, match="as many texts as images"):
        model(batch["pixel_values"][:2], batch["input_ids"], batch["attention_mask"], return_loss=True)


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels", "loss_fn"),
    [
        ("single_label_classification", 3, torch.tensor([0, 2, 1]), lambda z, y: F.cross_entropy(z, y)),
        (
            "multi_label_classification",
            3,
            torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 1]]),
            lambda z, y: F.binary_cross_entropy_with_logits(z, y),
        ),
        ("regression", 1, torch.tensor([0.5, -1.0, 2.0]), lambda z, y: F.mse_loss(z.squeeze(-1), y)),
    ],
)
def test_loss_follows_problem_type_and_is_inferred(problem_type, num_labels, labels, loss_fn, batch):
    model = MMHubForImageTextClassification(tiny_config(num_labels=num_labels)).eval()
    assert model.config.problem_type is None
    out = model(**batch, labels=labels)
    assert model.config.problem_type == problem_type  # inferred from num_labels and the label dtype
    assert torch.allclose(out.loss, loss_fn(out.logits, labels))


@pytest.mark.parametrize("fusion_type", FUSIONS)
def test_fusion_attentions_have_documented_shapes(fusion_type, batch):
    model = MMHubForImageTextClassification(tiny_config(fusion_type, fusion_num_layers=2)).eval()
    out = model.mm_hub(**batch, output_attentions=True)
    num_image = out.image_tokens.shape[1]  # 32 px through two stride-2 stages + stem: 4 x 4 grid
    num_text = batch["input_ids"].shape[1]
    assert out.fused_embeds.shape == (3, 16)
    attentions = out.fusion_attentions
    if fusion_type == "concat":
        assert attentions is None
    elif fusion_type == "gated":
        (gate,) = attentions["gate"]
        assert gate.shape == (3, 16) and ((gate > 0) & (gate < 1)).all()
    elif fusion_type == "attention":
        assert [a.shape for a in attentions["text_to_image"]] == [(3, 2, num_text, num_image)] * 2
        assert [a.shape for a in attentions["image_to_text"]] == [(3, 2, num_image, num_text)] * 2
        (pooling,) = attentions["pooling"]
        assert pooling.shape == (3, num_image) and torch.allclose(pooling.sum(-1), torch.ones(3))
        # Image cells never attend to padding tokens.
        padded = batch["attention_mask"] == 0
        weights = attentions["image_to_text"][0]  # (B, h, N, T)
        assert torch.all(weights.permute(0, 1, 3, 2)[padded.unsqueeze(1).expand(-1, 2, -1)] == 0)
    elif fusion_type == "bilinear":
        (pooling,) = attentions["pooling"]
        assert pooling.shape == (3, num_image) and torch.allclose(pooling.sum(-1), torch.ones(3))
    elif fusion_type == "sequence":
        length = 1 + num_image + num_text
        assert [a.shape for a in attentions["self"]] == [(3, 2, length, length)] * 2
    else:
        assert attentions is None or isinstance(attentions, dict)
    assert model.mm_hub(**batch).fusion_attentions is None


def test_bilinear_fusion_gives_the_head_only_the_agreement(batch):
    model = MMHubModel(tiny_config("bilinear")).eval()
    with torch.no_grad():
        model.fusion.text_transform.weight.zero_()
        model.fusion.text_transform.bias.zero_()
        fused = model(**batch).fused_embeds
    # With no text signal the product is zero for every image: the image alone cannot move the fused vector.
    assert torch.allclose(fused, fused[:1].expand_as(fused))


def test_unknown_fusion_type_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown fusion_type 'film'.*attention.*concat.*gated.*sequence"):
        MMHubModel(tiny_config("film"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_encoder_type": "gru"}, "text_encoder_type='gru' is not supported"),
        ({"text_encoder_type": "lstm", "vocab_size": None}, "needs vocab_size"),
        ({"fusion_num_heads": 3}, "must be divisible by fusion_num_heads=3"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"problem_type": "ranking"}, "problem_type='ranking' is not one of"),
    ],
)
def test_bad_config_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_mismatched_image_and_text_batches_raise(batch):
    model = MMHubForImageTextClassification(tiny_config())
    with pytest.raises(ValueError, match="Got 2 images but 3 texts"):
        model(batch["pixel_values"][:2], batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("text_encoder_type", TEXT_ENCODER_TYPES)
@pytest.mark.parametrize("fusion_type", FUSIONS)
def test_encoder_outputs_in_place_of_pixels_and_ids_give_the_same_prediction(fusion_type, text_encoder_type, batch):
    model = MMHubForImageTextClassification(tiny_config(fusion_type, text_encoder_type)).eval()
    base = model.mm_hub
    image_tokens = base.encode_image(batch["pixel_values"])[0]
    text_tokens = base.encode_text(batch["input_ids"], batch["attention_mask"])[0]
    raw = model(**batch, output_attentions=True)
    encoded = model(image_tokens=image_tokens, text_tokens=text_tokens, attention_mask=batch["attention_mask"],
                    output_attentions=True)
    torch.testing.assert_close(encoded.logits, raw.logits)
    mixed = model(pixel_values=batch["pixel_values"], text_tokens=text_tokens, attention_mask=batch["attention_mask"])
    torch.testing.assert_close(mixed.logits, raw.logits)
    with pytest.raises(ValueError, match="Give `pixel_values` or `image_tokens` \\(one of the two\\), got both"):
        model(**batch, image_tokens=image_tokens)
    with pytest.raises(ValueError, match="Give `input_ids` or `text_tokens` \\(one of the two\\), got neither"):
        model(pixel_values=batch["pixel_values"])


def test_sequence_fusion_rejects_overlong_joint_sequence(batch):
    model = MMHubForImageTextClassification(tiny_config("sequence", fusion_max_positions=8))
    with pytest.raises(ValueError, match="fusion_max_positions=8"):
        model(**batch)


HEADS = {
    "classification": (MMHubForImageTextClassification, AutoModelForImageTextClassification),
    "retrieval": (MMHubForImageTextRetrieval, AutoModelForImageTextRetrieval),
}


def _outputs(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.logits_per_image


# The retrieval head is a dual encoder without a fusion module, so it is not repeated per fusion type.
SAVE_CASES = [("classification", f, t) for f in FUSIONS for t in TEXT_ENCODER_TYPES] + [
    ("retrieval", FUSIONS[0], t) for t in TEXT_ENCODER_TYPES
]


@pytest.mark.parametrize(("head", "fusion_type", "text_encoder_type"), SAVE_CASES)
def test_save_and_load_give_identical_outputs(head, fusion_type, text_encoder_type, batch, tmp_path):
    model_class, auto_class = HEADS[head]
    model = model_class(tiny_config(fusion_type, text_encoder_type)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    expected = _outputs(model, batch)
    for loader in (model_class, auto_class, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is model_class, f"{loader.__name__} gave {type(loaded).__name__}"
        assert_same_outputs(_outputs(loaded, batch), expected)


@pytest.mark.parametrize(
    "vision_config",
    [
        ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32),
        ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
    ],
    ids=["convnext", "vit"],
)
@pytest.mark.parametrize("fusion_type", ["attention", "sequence"])
def test_non_resnet_vision_encoders(vision_config, fusion_type, batch, tmp_path):
    model = MMHubForImageTextClassification(tiny_config(fusion_type, vision_config=vision_config)).eval()
    out = model.mm_hub(**batch)
    # ConvNeXt: 4x4 grid after the stride-4 stem and one downsampling stage; ViT: [CLS] + 4x4 patches.
    expected_tokens = 1 + 16 if isinstance(vision_config, ViTConfig) else 16
    assert out.image_tokens.shape == (3, expected_tokens, 16)
    model.save_pretrained(tmp_path)
    loaded = MMHubForImageTextClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.config.vision_config, type(vision_config))
    assert_same_outputs(_outputs(loaded, batch), _outputs(model, batch))


def test_default_config_is_resnet18_with_minilm_shape():
    config = MMHubConfig()
    assert config.vision_config.model_type == "resnet" and config.vision_config.depths == [2, 2, 2, 2]
    assert config.vision_config.hidden_sizes[-1] == 512
    assert config.text_config.model_type == "bert" and config.text_config.hidden_size == 384


class _MaxFusion(torch.nn.Module):
    """A fusion written the way a user would add one: max-pool both modalities and add them."""

    def __init__(self, config):
        super().__init__()
        self.norm = torch.nn.LayerNorm(config.fusion_hidden_size)

    def forward(self, image_tokens, text_tokens, text_mask, output_attentions=False):
        text = text_tokens.masked_fill(text_mask.unsqueeze(-1) == 0, float("-inf")).amax(dim=1)
        return self.norm(image_tokens.amax(dim=1) + text), None


def test_a_new_fusion_is_one_class_plus_one_registry_entry(monkeypatch, batch, tmp_path):
    monkeypatch.setitem(FUSION_REGISTRY, "max", _MaxFusion)
    model = MMHubForImageTextClassification(tiny_config("max", dropout=0.0)).eval()
    assert isinstance(model.mm_hub.fusion, _MaxFusion)
    model.save_pretrained(tmp_path)
    loaded = MMHubForImageTextClassification.from_pretrained(tmp_path).eval()
    assert_same_outputs(_outputs(loaded, batch), _outputs(model, batch))


def test_one_output_without_a_problem_type_reads_as_regression_everywhere(tmp_path, batch):
    """One function answers what a config without `problem_type` means; the loss, the ensemble's averaging, the
    pipeline, the app and the model card all follow it (they used to answer regression, multi-label and single-label)."""
    from mm_hub import ImageTextClassificationPipeline
    from mm_hub.cards import build_model_card
    from mm_hub.model.configuration_mm_hub import infer_problem_type
    from mm_hub.predictor import Predictor, scores_from_logits

    assert infer_problem_type(None, 1) == "regression"
    assert infer_problem_type(None, 3) == infer_problem_type(None, 3, integer_labels=True) == "single_label_classification"
    assert infer_problem_type(None, 3, integer_labels=False) == "multi_label_classification"
    assert infer_problem_type("multi_label_classification", 1) == "multi_label_classification"

    model = MMHubForImageTextClassification(tiny_config(num_labels=1, dropout=0.0)).eval()
    with torch.no_grad():
        logits = model(**batch).logits  # (B, 1): a value, not a probability
    assert torch.equal(scores_from_logits(logits, None), logits)
    assert Predictor(model, tiny_processor()).problem_type == "regression"
    ensemble = MMHubEnsembleForImageTextClassification.from_members([model, model])
    with torch.no_grad():
        torch.testing.assert_close(ensemble(**batch).logits, logits)  # the mean value, not a mean sigmoid
    pipe = ImageTextClassificationPipeline(model=model, processor=tiny_processor())
    (result,) = pipe({"image": random_images(1)[0], "text": "a red circle"})
    with torch.no_grad():
        value = model(**tiny_processor()(images=random_images(1)[0], text="a red circle")).logits[0, 0].item()
    assert result["score"] == pytest.approx(value, abs=1e-6)
    model.save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    assert "| Problem type | regression |" in str(build_model_card(tmp_path, "someone/model"))
    labels = torch.tensor([0.5, -1.0, 2.0])[: len(logits)]
    assert torch.allclose(model(**batch, labels=labels).loss, F.mse_loss(logits.squeeze(-1), labels))
