"""pipeline("image-text-classification") tests, and transformers' own pipelines over the dual encoder, with mm_hub
installed (the remote-code case is in test_remote_code)."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

from mm_hub import ImageTextClassificationPipeline, MMHubForImageTextClassification
from tests.conftest import random_images, save_tiny_model, tiny_config, tiny_model, tiny_processor

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _classifier(**config_kwargs) -> ImageTextClassificationPipeline:
    labels = {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    model = tiny_model("classification", "attention", **{**labels, **config_kwargs})
    return ImageTextClassificationPipeline(model=model, processor=tiny_processor())


@pytest.fixture(scope="module")
def classifier() -> ImageTextClassificationPipeline:
    return _classifier()


def test_single_input_gives_sorted_softmax_scores(classifier):
    image = random_images(1)[0]
    result = classifier({"image": image, "text": "a small bird"})
    assert [item["label"] for item in result] and {item["label"] for item in result} == set(LABELS.values())
    scores = [item["score"] for item in result]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    # The same numbers as running the model by hand.
    inputs = classifier.processor(images=image, text="a small bird")
    with torch.no_grad():
        probs = classifier.model(**inputs).logits.softmax(-1)[0]
    assert result[0]["score"] == pytest.approx(probs.max().item(), abs=1e-6)
    assert result[0]["label"] == LABELS[int(probs.argmax())]


def test_lists_and_top_k(classifier):
    inputs = [{"image": image, "text": text} for image, text in zip(random_images(3), ["a", "b c", "d e f"])]
    results = classifier(inputs, top_k=2)
    assert len(results) == 3 and all(len(result) == 2 for result in results)
    assert len(classifier(inputs[0], top_k=10)) == 3  # capped at the number of labels


def test_multi_label_scores_are_independent_sigmoids():
    classifier = _classifier(problem_type="multi_label_classification")
    scores = [item["score"] for item in classifier({"image": random_images(1)[0], "text": "x"})]
    assert all(0 < s < 1 for s in scores) and sum(scores) != pytest.approx(1.0, abs=1e-3)


def test_regression_returns_the_raw_value():
    config = tiny_config(num_labels=1, problem_type="regression", id2label={0: "price"}, label2id={"price": 0})
    model = MMHubForImageTextClassification(config).eval()
    classifier = ImageTextClassificationPipeline(model=model, processor=tiny_processor())
    image = random_images(1)[0]
    (result,) = classifier({"image": image, "text": "x"})
    with torch.no_grad():
        value = model(**classifier.processor(images=image, text="x")).logits[0, 0].item()
    assert result == {"label": "price", "score": pytest.approx(value, abs=1e-6)}


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ("just text", {}, 'must be a dict with an "image" and a "text" key.*got str'),
        ({"image": None}, {}, r"got dict with keys \['image'\]"),
        ({"image": "x", "text": "y"}, {"top_k": 0}, "top_k must be a positive int, got 0"),
    ],
)
def test_bad_inputs_raise_value_error(classifier, inputs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        classifier(inputs, **kwargs)


def test_pipeline_factory_loads_a_saved_folder(classifier, tmp_path):
    classifier.model.save_pretrained(tmp_path)
    classifier.processor.save_pretrained(tmp_path)
    loaded = pipeline("image-text-classification", model=str(tmp_path), trust_remote_code=True)
    image = random_images(1)[0]
    expected = classifier({"image": image, "text": "a dog"})
    got = loaded({"image": image, "text": "a dog"})
    # Same labels in the same order; scores equal up to float32 rounding (kernels may sum in another order).
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-6)


def test_a_dual_encoder_serves_zero_shot_classification_and_feature_extraction(tmp_path):
    folder = save_tiny_model(tmp_path / "clip", "retrieval")
    model, processor = tiny_model("retrieval"), tiny_processor()
    image, captions = random_images(1)[0], ["a red circle", "a blue square on the left", "two green triangles"]
    with torch.no_grad():
        out = model(**processor(images=image), **processor(text=captions))
    expected = out.logits_per_image[0].softmax(-1)

    zero_shot = pipeline("zero-shot-image-classification", model=folder)
    result = zero_shot(image, candidate_labels=captions, hypothesis_template="{}")
    assert [r["label"] for r in result] == [captions[i] for i in expected.argsort(descending=True)]
    assert [r["score"] for r in result] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
    assert len(zero_shot(image, candidate_labels=["circle", "square"])) == 2  # the default template

    image_features = pipeline("image-feature-extraction", model=folder)(image, return_tensors=True)
    torch.testing.assert_close(image_features, out.image_embeds, atol=1e-5, rtol=1e-4)
    text_features = pipeline("feature-extraction", model=folder)(captions[1], return_tensors=True)
    torch.testing.assert_close(text_features, out.text_embeds[1:2], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="both images and texts"):
        model(pixel_values=out.image_embeds.new_zeros(1, 3, 32, 32), return_loss=True)
