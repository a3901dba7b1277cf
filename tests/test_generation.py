"""`MMHubForConditionalGeneration`: teacher forcing, `generate` (greedy, beam, sampling, batched prompts, the cache),
save / load, the decoder's vocabulary, and transformers' image-text-to-text pipeline with mm_hub installed."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText, pipeline

from mm_hub import MMHubForConditionalGeneration
from mm_hub.model.generation_mm_hub import IGNORE_INDEX
from tests.conftest import random_images, save_tiny_model, tiny_model, tiny_processor, tokenizer

QUESTIONS = ["what colour is the circle?", "what is on the left of the big blue square?"]


@pytest.fixture(scope="module")
def model() -> MMHubForConditionalGeneration:
    return tiny_model("generation")


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_teacher_forcing_reads_the_prompt_and_learns_only_the_target(processor):
    batch = processor(images=random_images(2), text=QUESTIONS, text_target=["red", "a square"])
    ids, labels = batch["decoder_input_ids"], batch["labels"]
    assert ids.shape == labels.shape == batch["decoder_attention_mask"].shape
    cls, sep = tokenizer().cls_token_id, tokenizer().sep_token_id
    prompt = tokenizer()(QUESTIONS[0])["input_ids"]  # [CLS] question [SEP]
    red = tokenizer()("red", add_special_tokens=False)["input_ids"]
    assert ids[0, : len(prompt)].tolist() == prompt and ids[0, 0] == cls
    # Each position predicts the next token: nothing over the prompt, then the target and the closing [SEP].
    assert labels[0, : len(prompt) - 1].tolist() == [IGNORE_INDEX] * (len(prompt) - 1)
    assert labels[0, len(prompt) - 1 : len(prompt) + len(red)].tolist() == [*red, sep]
    assert (labels[0, len(prompt) + len(red) :] == IGNORE_INDEX).all()  # padding
    captions = processor(images=random_images(1), text_target="a red circle")
    assert captions["decoder_input_ids"][0, :2].tolist() == [cls, sep]  # no question: the empty prompt


def test_the_loss_is_the_cross_entropy_of_the_target_tokens(model, processor):
    batch = processor(images=random_images(2), text=QUESTIONS, text_target=["red", "a square"])
    output = model(**batch)
    labels = batch["labels"]
    expected = torch.nn.functional.cross_entropy(output.logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
    torch.testing.assert_close(output.loss, expected)
    trainable = tiny_model("generation").train()
    trainable(**batch).loss.backward()
    assert all(p.grad is not None for name, p in trainable.named_parameters() if name.startswith("decoder.layers"))


def test_greedy_beam_and_sampling(model, processor):
    inputs = processor(images=random_images(2), text=QUESTIONS)
    greedy = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(greedy, model.generate(**inputs, max_new_tokens=6, do_sample=False))
    assert greedy.shape[0] == 2 and greedy.shape[1] <= inputs["input_ids"].shape[1] + 6
    beams = model.generate(**inputs, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape[0] == 4
    torch.manual_seed(1)
    sampled = model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=20)
    torch.manual_seed(1)
    assert torch.equal(sampled, model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=20))
    captions = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=5)
    assert captions[:, :2].tolist() == [[tokenizer().cls_token_id, tokenizer().sep_token_id]] * 2  # empty prompt


def test_the_cache_changes_nothing_but_the_work(model, processor):
    inputs = processor(images=random_images(2), text=QUESTIONS)
    cached = model.generate(**inputs, max_new_tokens=8, use_cache=True, num_beams=2)
    assert torch.equal(cached, model.generate(**inputs, max_new_tokens=8, use_cache=False, num_beams=2))
    # One forward over the whole text gives each position the logits it got one token at a time.
    sequence = model.generate(pixel_values=inputs["pixel_values"][:1], max_new_tokens=6, min_new_tokens=6)
    full = model(pixel_values=inputs["pixel_values"][:1], decoder_input_ids=sequence).logits
    memory = model.encode(inputs["pixel_values"][:1])
    assert torch.equal(model.generate(encoder_outputs=memory, max_new_tokens=6, min_new_tokens=6), sequence)
    cache, steps = None, []
    for position in range(sequence.shape[1]):
        out = model(encoder_outputs=memory, decoder_input_ids=sequence[:, position : position + 1], cache=cache,
                    use_cache=True)
        cache = out.cache
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_a_batch_of_prompts_padded_on_either_side_writes_what_each_prompt_writes_alone(model, processor):
    images = random_images(2)
    alone = [model.generate(**processor(images=[image], text=[question]), max_new_tokens=5)[0]
             for image, question in zip(images, QUESTIONS)]
    for side in ("right", "left"):
        batch = processor(images=images, text=QUESTIONS, padding_side=side)
        together = model.generate(**batch, max_new_tokens=5)
        for row, single in zip(together, alone):
            written = row[row != tokenizer().pad_token_id]
            assert written.tolist() == single[single != tokenizer().pad_token_id].tolist(), side


def test_save_and_load_give_the_same_text(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "generation_config.json").is_file() and (tmp_path / "generation_mm_hub.py").is_file()
    inputs = processor(images=random_images(2), text=QUESTIONS)
    for loaded in (MMHubForConditionalGeneration.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path),
                   AutoModelForImageTextToText.from_pretrained(tmp_path)):
        assert type(loaded) is MMHubForConditionalGeneration
        assert torch.equal(loaded.generate(**inputs, max_new_tokens=6), model.generate(**inputs, max_new_tokens=6))


def test_a_decoder_vocabulary_limits_what_is_written(processor):
    words = tokenizer()("red blue circle", add_special_tokens=False)["input_ids"]
    allowed = sorted({*words, tokenizer().sep_token_id, tokenizer().pad_token_id})
    model = tiny_model("generation", decoder_vocab=allowed)
    inputs = processor(images=random_images(3), text_target=["red circle", "blue", "blue circle"])
    logits = model(**inputs).logits
    outside = torch.ones(logits.shape[-1], dtype=torch.bool)
    outside[allowed] = False
    assert torch.isinf(logits[..., outside]).all() and torch.isfinite(logits[..., allowed]).all()
    written = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=8, do_sample=True, top_k=50)
    assert set(written[:, 2:].flatten().tolist()) <= set(allowed)
    model.train()
    out = model(**inputs)
    assert out.logits is None and torch.isfinite(out.loss)  # training needs only the loss
    full = tiny_model("generation")  # the same weights with the whole vocabulary: the same loss over these tokens
    full_logits = full(**inputs).logits
    assert full_logits.shape[-1] == logits.shape[-1] and torch.isfinite(full_logits).all()


def test_from_vision_text_pretrained_starts_the_decoder_from_the_pretrained_word_embeddings(tmp_path):
    from transformers import BertModel, ConvNextImageProcessor, ResNetModel

    from mm_hub.paths import minilm_path
    from tests.conftest import tiny_vision_config

    ResNetModel(tiny_vision_config()).save_pretrained(tmp_path / "resnet")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path / "resnet")
    model, processor = MMHubForConditionalGeneration.from_vision_text_pretrained(
        tmp_path / "resnet", minilm_path(), text_encoder_type="lstm", decoder_hidden_size=384, decoder_num_heads=6,
        decoder_num_layers=1, fusion_hidden_size=32, lstm_hidden_size=16,
    )
    pretrained = BertModel.from_pretrained(minilm_path()).get_input_embeddings().weight
    torch.testing.assert_close(model.decoder.embed_tokens.weight, pretrained)
    config = model.config
    assert (config.decoder_start_token_id, config.eos_token_id) == (tokenizer().cls_token_id, tokenizer().sep_token_id)
    assert model.generation_config.decoder_start_token_id == tokenizer().cls_token_id
    text = model.generate(**processor(images=random_images(1), text=["a question"]), max_new_tokens=3)
    assert text.shape[0] == 1


def test_bad_generation_input_is_a_clear_error(model, processor):
    images = processor(images=random_images(2))["pixel_values"]
    with pytest.raises(ValueError, match="Give `pixel_values`"):
        model.generate(max_new_tokens=3)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        model.encode(images, processor(text=["one question"])["input_ids"])
    with pytest.raises(ValueError, match="decoder_max_positions"):  # `generate` caps instead (test below)
        model(pixel_values=images, decoder_input_ids=torch.ones(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(pixel_values=images)
    with pytest.raises(ValueError, match="one target per prompt"):
        processor(images=random_images(2), text=QUESTIONS, text_target=["only one"])


def test_transformers_image_text_to_text_pipeline_serves_it_with_mm_hub_installed(tmp_path):
    folder = save_tiny_model(tmp_path, "generation")
    describe = pipeline("image-text-to-text", model=folder)
    assert type(describe.model) is MMHubForConditionalGeneration
    image = random_images(1)[0]
    (caption,) = describe(images=image, text="", max_new_tokens=4)
    (answer,) = describe(images=image, text=QUESTIONS[0], max_new_tokens=4, return_full_text=False)
    model, processor = describe.model, describe.processor
    expected = model.generate(**processor(images=[image], text=[QUESTIONS[0]]), max_new_tokens=4)
    prompt_length = processor(text=[QUESTIONS[0]])["input_ids"].shape[1]
    written = tokenizer().decode(expected[0, prompt_length:], skip_special_tokens=True)
    assert answer["generated_text"].strip() == written  # the pipeline keeps the space after the question
    assert caption["input_text"] == "" and isinstance(caption["generated_text"], str)


def test_generate_writes_no_further_than_the_decoder_reaches(model, processor, caplog):
    inputs = processor(images=random_images(1), text=QUESTIONS[:1])
    limit = model.config.decoder_max_positions
    with caplog.at_level("WARNING"):
        written = model.generate(**inputs, max_new_tokens=10 * limit, min_new_tokens=10 * limit)
    assert written.shape[1] == limit and "writes at most" in caplog.text
    assert model.generate(**inputs, max_length=10 * limit, min_new_tokens=limit).shape[1] == limit
    long = processor(images=random_images(1), text=[" ".join(["circle"] * 20)])  # truncated at 16 tokens
    assert model.generate(**long, min_new_tokens=limit).shape[1] == limit  # the default 20 new tokens, capped
    long["input_ids"] = torch.cat([long["input_ids"]] * 2, dim=1)
    long["attention_mask"] = torch.ones_like(long["input_ids"])
    with pytest.raises(ValueError, match="shorten the question"):
        model.generate(**long)


def test_the_decoder_is_a_transformers_citizen(processor, tmp_path):
    from tests.conftest import tiny_config

    config = tiny_config("concat", decoder_hidden_size=16, decoder_num_heads=2, decoder_num_layers=1,
                         decoder_max_positions=32, **MMHubForConditionalGeneration._pretrained_config_defaults(
                             tokenizer()))
    model = MMHubForConditionalGeneration(config).eval()
    assert not config.is_encoder_decoder and model.config.is_encoder_decoder  # the caller's config is untouched
    decoder = model.config.get_text_config(decoder=True)  # what `generate` sizes its cache from
    assert (decoder.num_hidden_layers, decoder.hidden_size, decoder.vocab_size) == (1, 16, len(tokenizer()))
    assert model.config.get_text_config() is model.config.text_config  # the text encoder's
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    encoder_vocab = model.config.text_config.vocab_size
    inputs = processor(images=random_images(1), text=["what colour?"])
    before = model.generate(**inputs, max_new_tokens=4)
    model.resize_token_embeddings(len(tokenizer()) + 8)
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer()) + 8  # the output layer too
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.decoder_vocab_size == len(tokenizer()) + 8
    assert model.config.text_config.vocab_size == encoder_vocab  # the text encoder keeps its table
    with torch.no_grad():
        assert model(**processor(images=random_images(1), text=["what colour?"], text_target=["red"])).logits.shape[-1] \
            == len(tokenizer()) + 8
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.get_output_embeddings().weight.shape[0] == len(tokenizer()) + 8
    assert torch.equal(reloaded.generate(**inputs, max_new_tokens=4), model.generate(**inputs, max_new_tokens=4))
    assert before.shape == model.generate(**inputs, max_new_tokens=4).shape


def test_a_generator_saved_before_the_decoder_had_its_own_config_loads_the_same(model, processor, tmp_path):
    import json

    from safetensors.torch import load_file

    model.save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))  # tied: stored once, as before
    config = json.loads((tmp_path / "config.json").read_text())
    for added in ("decoder_vocab_size", "tie_word_embeddings"):  # what a folder of an earlier version lacks
        config.pop(added)
    (tmp_path / "config.json").write_text(json.dumps(config))
    inputs = processor(images=random_images(2), text=["what colour?", "which shape is red?"])
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    assert torch.equal(reloaded.generate(**inputs, max_new_tokens=5), model.generate(**inputs, max_new_tokens=5))


def test_describe_caps_the_new_tokens_a_question_leaves_and_says_how_sure_it_is(model, processor):
    from mm_hub.predictor import Predictor

    describer = Predictor(model, processor)
    image = random_images(1)[0]
    question = "what colour is the shape on the left of the picture?"
    steps = list(describer.describe_stream(image, question, model.config.decoder_max_positions - 2))
    assert [step.done for step in steps].count(True) == 1 and steps[-1].done  # the last one, with the confidence
    assert 0.0 < steps[-1].confidence <= 1.0 and "wrote at most" in steps[-1].note  # capped with a note, no error
    prompt_length = processor(text=[question])["input_ids"].shape[1]
    assert len(tokenizer()(steps[-1].text, add_special_tokens=False)["input_ids"]) <= (
        model.config.decoder_max_positions - prompt_length)
    assert describer.describe(image, "", 4, "beam search") == tokenizer().decode(
        model.generate(**processor(images=[image]), max_new_tokens=4, num_beams=4)[0, 2:], skip_special_tokens=True)
