"""LoRA (`mm_hub.lora`, ``--lora`` in training): what is adapted per tower kind, what trains fully, and that merging
folds the adapters in without changing a single output."""

from __future__ import annotations

import json

import pytest
import torch

from mm_hub import AutoModelForImageTextClassification
from mm_hub.lora import apply_lora, lora_targets, merge_lora, modules_to_save, parameter_counts
from tests.conftest import random_images, tiny_model, tiny_processor
from tests.data import tiny_flags, without_random_towers
from training.train import main as train_main


@pytest.mark.parametrize("head, text_encoder_type", [("classification", "transformer"), ("retrieval", "lstm"),
                                                     ("generation", "transformer")])
def test_lora_adapts_the_towers_and_merges_to_the_same_outputs(head, text_encoder_type):
    model = tiny_model(head, "attention", text_encoder_type)
    assert lora_targets(model) == []  # towers built from configs: they train fully, by default
    towers = ("vision", "text")  # random towers standing in for pretrained ones
    targets = lora_targets(model, towers)
    assert any(".stages.1." in name and name.endswith("convolution") for name in targets)  # the ResNet's last stage
    assert any(name.endswith(".attention.self.query") for name in targets) == (text_encoder_type == "transformer")
    assert all(name.startswith("mm_hub.") for name in targets)  # towers only: the new decoder trains fully
    saved = modules_to_save(model, targets)
    assert "mm_hub.fusion" in saved or head == "retrieval"
    assert ("mm_hub.text_encoder" in saved) == (text_encoder_type == "lstm")  # a BiLSTM trains fully
    assert ({"decoder.embed_tokens", "decoder.layers.0"} <= set(saved)) == (head == "generation")
    assert "lm_head" not in saved  # tied to the decoder's token table: peft ties its copy to the table's
    plain = parameter_counts(model)["total_parameters"]
    wrapped = apply_lora(model, r=4, alpha=8, dropout=0.0, towers=towers)
    if head == "generation":
        inner = wrapped.get_base_model()
        assert inner.get_output_embeddings().weight is inner.get_input_embeddings().weight  # the copies, tied
    counts = parameter_counts(wrapped)
    assert 0 < counts["trainable_parameters"] < counts["total_parameters"]
    adapters = sum(p.numel() for name, p in wrapped.named_parameters() if "lora_" in name)
    assert counts["total_parameters"] == plain + adapters  # the trained copies stand in for their originals
    torch.manual_seed(1)
    for name, parameter in wrapped.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapter adds nothing): give it weights to merge
            parameter.data.normal_(std=0.1)
    processor = tiny_processor()
    inputs = processor(images=random_images(2), text=["a red circle", "what colour is it?"], return_tensors="pt")
    wrapped.eval()
    with torch.no_grad():
        if head == "generation":
            before = wrapped.generate(**inputs, max_new_tokens=4, do_sample=False)
            merged = merge_lora(wrapped)
            after = merged.generate(**inputs, max_new_tokens=4, do_sample=False)
            assert torch.equal(before, after)
            assert not any("lora" in name for name in merged.state_dict())
            return
        before = wrapped(**inputs)
        merged = merge_lora(wrapped)
        after = merged(**inputs)
    field = "logits" if head == "classification" else "image_embeds"
    torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=1e-5)
    assert type(merged).__name__.startswith("MMHubFor") and not any("lora" in n for n in merged.state_dict())


def test_lora_refuses_bad_settings_and_nothing_to_adapt():
    with pytest.raises(ValueError, match="rank >= 1"):
        apply_lora(tiny_model("classification", "concat"), r=0)
    frozen = tiny_model("classification", "concat", "lstm", freeze_vision_encoder=True, freeze_text_encoder=True)
    for model, towers in ((frozen, ("vision", "text")), (tiny_model("classification", "concat"), None)):
        with pytest.raises(ValueError, match="LoRA adapts pretrained towers"):  # frozen; built from configs
            apply_lora(model, towers=towers)


def test_lora_trains_through_the_cli_and_saves_a_plain_model(tmp_path):
    out = tmp_path / "out"
    shapes = ["--dataset", "shapes", "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32"]
    minilm = _minilm_flags(out)  # MiniLM adapted, a new ResNet trained in full
    with pytest.raises(ValueError, match="--merge-lora"):  # a frozen random tower: no adapter could be rebuilt on it
        train_main([*shapes, "--lora", "--freeze-vision-encoder", *minilm])
    with pytest.raises(ValueError, match="needs --lora"):
        train_main([*shapes, "--merge-lora", *minilm])
    with pytest.raises(ValueError, match="LoRA adapts pretrained towers"):  # both towers new: nothing to adapt
        train_main([*shapes, "--lora", *tiny_flags(out)])
    metrics = train_main([*shapes, "--lora", "--lora-r", "4", "--merge-lora", *minilm])
    assert "eval_accuracy" in metrics
    info = json.loads((out / "training_info.json").read_text())
    assert info["lora"] == {"r": 4, "alpha": 16, "dropout": 0.05, "merged": True}
    assert 0 < info["trainable_parameters"] < info["total_parameters"]
    model = AutoModelForImageTextClassification.from_pretrained(out)  # the adapters merged: a plain model
    assert not any("lora" in name or "modules_to_save" in name for name in model.state_dict())
    with pytest.raises(ValueError, match="no --lora"):
        train_main(["--dataset", "shapes", "--lora", "--cache-frozen-features", "--freeze-vision-encoder",
                    "--freeze-text-encoder", "--no-augment", *tiny_flags(tmp_path / "again")])


@pytest.mark.parametrize("head", ["retrieval", "generation"])
def test_every_head_saves_an_adapter_that_loads_with_the_same_outputs(head, tmp_path):
    from transformers import AutoModel

    from mm_hub.lora import save_adapter
    from mm_hub.paths import minilm_path
    from tests.conftest import HEADS

    resnet = _resnet_folder(tmp_path)  # a tiny pretrained ResNet in a folder; MiniLM from its package
    sizes = {"decoder_hidden_size": 16, "decoder_num_heads": 2, "decoder_num_layers": 1} if head == "generation" else {}
    model, processor = HEADS[head].from_vision_text_pretrained(
        resnet, minilm_path(), fusion_type="attention", fusion_hidden_size=16, fusion_num_heads=2,
        projection_dim=8, **sizes)
    wrapped = apply_lora(model, r=4, alpha=8, dropout=0.0)
    for parameter in wrapped.parameters():  # as if trained: adapters and fully trained parts away from their start
        if parameter.requires_grad:
            parameter.data.add_(torch.randn_like(parameter) * 0.05)
    wrapped.eval()
    inputs = processor(images=random_images(2), text=["a red circle", "what colour is it?"], return_tensors="pt")

    def outputs(model) -> list[torch.Tensor]:
        with torch.no_grad():
            if head == "generation":
                return [model.generate(**inputs, max_new_tokens=5, do_sample=False),
                        model(**inputs, decoder_input_ids=inputs["input_ids"][:, :4]).logits]
            return [model(**inputs).image_embeds, model(**inputs).text_embeds]

    expected = outputs(wrapped)
    save_adapter(wrapped, processor, tmp_path / "adapter")
    weights = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    table = model.get_input_embeddings().weight if head == "generation" else None
    if table is not None:  # the tied output layer is not saved twice
        assert weights < 1.5 * table.numel() * table.element_size()
    loaded = AutoModel.from_pretrained(tmp_path / "adapter")
    assert type(loaded) is HEADS[head]
    for actual, wanted in zip(outputs(loaded), expected):
        torch.testing.assert_close(actual.float(), wanted.float(), rtol=0, atol=1e-5)
    if table is not None:
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


@pytest.mark.parametrize("text", ["transformer", "lstm"])
def test_adapters_learn_at_the_new_layers_rate_and_pretrained_parts_at_the_encoders(text, tmp_path):
    from training.config import resolve_config
    from training.train import Recipe

    if text == "transformer":  # MiniLM adapted, a new ResNet in full
        flags = _minilm_flags(tmp_path / "out", "--learning-rate", "0.01")
    else:  # a pretrained ResNet adapted, a BiLSTM over MiniLM's embeddings in full
        flags = [*without_random_towers(tiny_flags(tmp_path / "out", "--learning-rate", "0.01", text=text)),
                 "--vision-model", _resnet_folder(tmp_path)]
    config = resolve_config(["--dataset", "shapes", "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32",
                             "--lora", "--merge-lora", *flags])
    trainer = Recipe(config).trainer(str(tmp_path / "out"))
    rates = {id(p): group["lr"] for group in trainer.create_optimizer().param_groups for p in group["params"]}
    named = {name: rates[id(p)] for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert {lr for name, lr in named.items() if "lora_" in name} == {0.01}  # adapters start at zero: new weights
    pretrained = [lr for name, lr in named.items() if ".text_encoder.modules_to_save.default.embeddings." in name]
    assert pretrained == ([0.001] if text == "lstm" else [])  # MiniLM's embeddings under a BiLSTM: the encoders' rate
    new_tower = [lr for name, lr in named.items() if ".vision_encoder.modules_to_save.default." in name]
    assert set(new_tower) == ({0.01} if text == "transformer" else set())  # a tower built from a config: in full


def _minilm_flags(out, *extra: str) -> list[str]:
    """`tiny_flags` with MiniLM's own pretrained text tower (no --text-config) and a new tiny ResNet."""
    flags = tiny_flags(out, *extra)
    at = flags.index("--text-config")
    return flags[:at] + flags[at + 2:]


def _resnet_folder(tmp_path) -> str:
    """A tiny ResNet saved with its image processor: a pretrained vision tower by path."""
    from transformers import ConvNextImageProcessor, ResNetModel

    from tests.conftest import tiny_vision_config

    torch.manual_seed(0)
    ResNetModel(tiny_vision_config()).save_pretrained(tmp_path / "resnet")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path / "resnet")
    return str(tmp_path / "resnet")
