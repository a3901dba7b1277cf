"""Saved folders load with `trust_remote_code=True` in a Python process where mm_hub cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mm_hub import (
    FUSION_REGISTRY,
    MMHubEnsembleForImageTextClassification,
    MMHubForConditionalGeneration,
    MMHubForImageTextClassification,
    MMHubForImageTextRetrieval,
)
from tests.conftest import TEXT_ENCODER_TYPES, random_images, save_tiny_model, tiny_config, tiny_processor, tokenizer

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out

# Runs in a fresh interpreter. `sys.modules["mm_hub"] = None` makes any `import mm_hub` fail, so only the code
# saved in each folder can be used.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["mm_hub"] = None
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    cases = json.loads(sys.argv[1])
    results = {}
    for case in cases:
        folder, texts = case["folder"], case["texts"]
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
        if case["head"] == "generation":
            image = Image.open(case["images"][0])
            sequences = model.generate(**processor(images=[image], text=texts[:1]), max_new_tokens=5, num_beams=2)
            describe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
            (answer,) = describe(images=image, text=texts[0], max_new_tokens=5, generate_kwargs={"num_beams": 2},
                                 return_full_text=False)  # a call's generation options go in generate_kwargs
            results[folder] = {"sequences": sequences.tolist(), "answer": answer["generated_text"].strip(),
                               "pipeline_model": type(describe.model).__module__}
            continue
        inputs = processor(images=case["images"], text=texts)
        with torch.no_grad():
            out = model(**inputs)
        entry = {"class": type(model).__name__, "processor": type(processor).__name__}
        if case["head"] == "classification":
            entry["logits"] = out.logits.tolist()
            classifier = pipeline(model=folder, trust_remote_code=True)
            entry["pipeline"] = classifier({"image": case["images"][0], "text": texts[0]}, top_k=1)
        else:
            entry["logits"] = out.logits_per_image.tolist()
            zero_shot = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
            entry["zero_shot"] = zero_shot(case["images"][0], candidate_labels=texts, hypothesis_template="{}")
            embed = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
            entry["image_embeds"] = embed(case["images"][0])
            embed = pipeline("feature-extraction", model=folder, trust_remote_code=True)
            entry["text_embeds"] = embed(texts[0])
            assert type(embed.model).__module__.startswith("transformers_modules")
        results[folder] = entry
    print("RESULTS" + json.dumps(results))
    """
)


TEXTS = ["a red circle", "two squares side by side"]


@pytest.fixture(scope="module")
def without_mm_hub(tmp_path_factory) -> tuple[dict[str, dict], dict[str, tuple], tuple[str, torch.Tensor, str]]:
    """Folders of every head, fusion and text encoder (and a generator), saved and run in mm_hub's process, then
    loaded and run by one fresh interpreter where mm_hub cannot be imported (one start-up for all of them).
    Returns its results by folder, what mm_hub computed for each classifier and retrieval folder (class name,
    logits, output), and the generator case (folder, mm_hub's sequences, question)."""
    tmp_path = tmp_path_factory.mktemp("remote")
    images = random_images(2)
    image_paths = []
    for i, image in enumerate(images):
        image_paths.append(str(tmp_path / f"image{i}.png"))
        image.save(image_paths[-1])
    processor = tiny_processor()
    inputs = processor(images=image_paths, text=TEXTS)

    cases, expected = [], {}
    heads = [(MMHubForImageTextClassification, fusion, text) for fusion in FUSION_REGISTRY for text in TEXT_ENCODER_TYPES]
    heads += [(MMHubForImageTextRetrieval, "concat", text) for text in TEXT_ENCODER_TYPES]
    heads += [(MMHubEnsembleForImageTextClassification, "bilinear", "lstm")]
    for model_class, fusion, text_encoder in heads:
        folder = str(tmp_path / f"{model_class.__name__}-{fusion}-{text_encoder}")
        size = 2 if model_class is MMHubEnsembleForImageTextClassification else 1
        config = tiny_config(fusion, text_encoder, id2label={0: "a", 1: "b", 2: "c"}, ensemble_size=size)
        model = model_class(config).eval()
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        with torch.no_grad():
            out = model(**inputs)
        is_classifier = model_class is not MMHubForImageTextRetrieval
        expected[folder] = (model_class.__name__, out.logits if is_classifier else out.logits_per_image, out)
        cases.append(
            {"folder": folder, "texts": TEXTS, "images": image_paths, "head": "classification" if is_classifier else "retrieval"}
        )
    generator = save_tiny_model(tmp_path / "generator", "generation", text_encoder_type="lstm")
    question = "what colour is the circle?"
    model = MMHubForConditionalGeneration.from_pretrained(generator)
    sequences = model.generate(**processor(images=image_paths[:1], text=[question]), max_new_tokens=5, num_beams=2)
    cases.append({"folder": generator, "texts": [question], "images": image_paths[:1], "head": "generation"})

    # Run from an empty folder so the repository checkout is not importable through the working directory.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, json.dumps(cases)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULTS", 1)[1]), expected, (generator, sequences, question)


def test_saved_models_load_without_mm_hub(without_mm_hub):
    results, expected, _ = without_mm_hub
    for folder, (class_name, logits, out) in expected.items():
        entry = results[folder]
        assert entry["class"] == class_name
        assert entry["processor"] == "MMHubProcessor"
        assert torch.allclose(torch.tensor(entry["logits"]), logits, atol=1e-5), folder
        if "pipeline" in entry:
            best = int(logits[0].argmax())
            assert entry["pipeline"][0]["label"] == "abc"[best]
            assert entry["pipeline"][0]["score"] == pytest.approx(logits[0].softmax(-1)[best].item(), abs=1e-5)
        if "zero_shot" in entry:  # transformers' pipelines over the dual encoder, from the folder's code
            scores = {hit["label"]: hit["score"] for hit in entry["zero_shot"]}
            assert [scores[text] for text in TEXTS] == pytest.approx(logits[0].softmax(-1).tolist(), abs=1e-5)
            assert torch.allclose(torch.tensor(entry["image_embeds"]), out.image_embeds[:1], atol=1e-5)
            assert torch.allclose(torch.tensor(entry["text_embeds"]), out.text_embeds[:1], atol=1e-5)


def test_a_saved_generator_writes_the_same_text_without_mm_hub(without_mm_hub):
    all_results, _, (folder, expected, question) = without_mm_hub
    results = all_results[folder]
    assert results["sequences"] == expected.tolist()
    assert results["pipeline_model"].startswith("transformers_modules")
    prompt_length = tiny_processor()(text=[question])["input_ids"].shape[1]
    # the pipeline decodes the whole text and leaves out the prompt's (a word piece after it joins its word)
    whole, prompt = (tokenizer().decode(ids, skip_special_tokens=True) for ids in (expected[0], expected[0, :prompt_length]))
    assert results["answer"] == whole[len(prompt):].strip()
