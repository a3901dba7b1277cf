"""ONNX export (`mm_hub.export`, ``python -m training.export``) and the torch-free runtime (`mm_hub.ort_mm_hub`):
every head exports, and its graphs run in a process where neither torch nor mm_hub can be imported, with torch's
outputs (fp32 within 1e-4; generation token for token, greedy and beam search)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import random_images, save_tiny_model, tiny_model, tiny_processor

from mm_hub import MMHubEnsembleForImageTextClassification
from mm_hub.export import PARITY_TOLERANCE, export_onnx
from mm_hub.model.fusion_mm_hub import FUSION_REGISTRY
from mm_hub.tasks import TASKS
from training.export import main as export_main

TEXTS = ["a red circle on the left", "two blue squares", "x"]
QUESTIONS = ["what colour is the circle?", "where is the big red square on the left?", ""]

# Runs in a fresh interpreter with torch, torchvision and mm_hub made unimportable: what a torch-free server has.
RUNTIME_CHECK = textwrap.dedent("""
    import json, sys
    for name in ("torch", "torchvision", "mm_hub"):
        sys.modules[name] = None
    import numpy as np
    folder, reference, quantized = sys.argv[1], np.load(sys.argv[2]), sys.argv[3] == "int8"
    sys.path.insert(0, folder)
    from ort_mm_hub import load
    model, processor = load(folder, quantized=quantized)
    texts, questions = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    pixels, out = reference["pixel_values"], {}
    if model.task == "classification":
        out["logits"] = model(pixels, **processor(text=texts)).logits
    elif model.task == "retrieval":
        result = model(pixels, **processor(text=texts))
        out["image_embeds"], out["text_embeds"] = result.image_embeds, result.text_embeds
    else:
        prompts = processor.tokenizer(questions, padding=True, return_tensors="np")
        for beams in (1, 3):
            out[f"caption_{beams}"] = model.generate(pixels, max_new_tokens=8, num_beams=beams)
            out[f"answer_{beams}"] = model.generate(pixels, prompts["input_ids"], prompts["attention_mask"],
                                                    max_new_tokens=8, num_beams=beams)
    out["decoded"] = np.array(processor.batch_decode(np.array([[101, 1037, 2417, 4418, 102]])))
    np.savez(sys.argv[6], **out)
""")


def torch_reference(folder: Path, head: str) -> dict[str, np.ndarray]:
    """What the torch model gives on three random images (with `TEXTS`, or writing captions and answers)."""
    from mm_hub.loading import load_model

    model, processor = load_model(folder)
    inputs = processor(images=random_images(3, seed=7), text=TEXTS, return_tensors="pt")
    reference = {"pixel_values": inputs["pixel_values"].numpy()}
    with torch.no_grad():
        if head == "classification":
            reference["logits"] = model(**inputs).logits.numpy()
        elif head == "retrieval":
            result = model(**inputs)
            reference["image_embeds"], reference["text_embeds"] = result.image_embeds.numpy(), result.text_embeds.numpy()
        else:
            prompts = processor.tokenizer(QUESTIONS, padding=True, return_tensors="pt")
            for beams in (1, 3):
                reference[f"caption_{beams}"] = model.generate(
                    pixel_values=inputs["pixel_values"], max_new_tokens=8, num_beams=beams).numpy()
                reference[f"answer_{beams}"] = model.generate(
                    pixel_values=inputs["pixel_values"], input_ids=prompts["input_ids"],
                    attention_mask=prompts["attention_mask"], max_new_tokens=8, num_beams=beams).numpy()
    return reference


def run_without_torch(folder: Path, reference: dict[str, np.ndarray], tmp_path: Path, quantize: str) -> dict:
    """The runtime's outputs from a process that cannot import torch or mm_hub."""
    np.savez(tmp_path / "reference.npz", **reference)
    out = tmp_path / f"runtime_{quantize}.npz"
    subprocess.run([sys.executable, "-c", RUNTIME_CHECK, str(folder), str(tmp_path / "reference.npz"), quantize,
                    json.dumps(TEXTS), json.dumps(QUESTIONS), str(out)], check=True, cwd=tmp_path, timeout=300)
    return dict(np.load(out))


@pytest.mark.parametrize("head, fusion", [("classification", "attention"), ("retrieval", "concat"),
                                          ("generation", "sequence")])
def test_every_head_exports_and_runs_without_torch_as_torch_does(head, fusion, tmp_path, capsys):
    source = Path(save_tiny_model(tmp_path / "model", head, fusion))
    reference = torch_reference(source, head)
    export_main([str(source), "--out", str(tmp_path / "onnx"), "--quantize", "int8"])
    assert "exported the" in capsys.readouterr().out
    saved = json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())
    assert saved["task"] == head and saved["opset"] and saved["versions"]["onnxruntime"]
    assert all(graph["max_abs_difference_from_torch"] <= PARITY_TOLERANCE for graph in saved["graphs"].values())
    code = {path.name for path in (tmp_path / "onnx").glob("*.py")}
    assert code == {"ort_mm_hub.py"}  # the runtime; the torch model's remote code stays behind
    fp32 = run_without_torch(tmp_path / "onnx", reference, tmp_path, "fp32")
    int8 = run_without_torch(tmp_path / "onnx", reference, tmp_path, "int8")
    assert fp32["decoded"].tolist() == ["a red circle"]  # the tokenizer, without torch
    for key, expected in reference.items():
        if key == "pixel_values":
            continue
        if head == "generation":  # token for token, greedy and beam search, as transformers' generate writes them
            np.testing.assert_array_equal(fp32[key], expected, err_msg=key)
            assert int8[key].shape[0] == expected.shape[0]
        else:
            np.testing.assert_allclose(fp32[key], expected, rtol=0, atol=PARITY_TOLERANCE, err_msg=key)
            np.testing.assert_allclose(int8[key], expected, rtol=0, atol=0.05, err_msg=key)


@pytest.mark.parametrize("text_encoder_type", ["transformer", "lstm"])
@pytest.mark.parametrize("fusion", sorted(FUSION_REGISTRY))
def test_every_fusion_exports_with_dynamic_batch_and_length(fusion, text_encoder_type, tmp_path):
    import onnxruntime as ort

    model = tiny_model("classification", fusion, text_encoder_type)
    model.save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "onnx")  # checks parity on its own example (batch 2)
    inputs = tiny_processor()(images=random_images(5, seed=3), text=["a"] * 2 + ["a much longer text than that"] * 3,
                              return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: inputs[name].numpy() for name in ("pixel_values", "input_ids", "attention_mask")})
    np.testing.assert_allclose(actual[0], expected, rtol=0, atol=PARITY_TOLERANCE)


def test_an_ensemble_exports_as_one_graph(tmp_path):
    members = [tiny_model("classification", "bilinear", seed=seed) for seed in (0, 1)]
    MMHubEnsembleForImageTextClassification.from_members(members).save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    info = export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert list(info["graphs"]) == ["model"] and info["architecture"] == "MMHubEnsembleForImageTextClassification"


def test_bad_exports_are_one_clear_line_and_leave_nothing_behind(tmp_path, monkeypatch, capsys):
    source = save_tiny_model(tmp_path / "model", "classification", "concat")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an earlier export"):
        export_onnx(source, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(OSError, match="mm_hub"):
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        export_onnx(tmp_path / "plain", tmp_path / "out")
    with pytest.raises(SystemExit):
        export_main([source, "--out", str(tmp_path / "out"), "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err

    monkeypatch.setitem(TASKS, "classification", dataclasses.replace(TASKS["classification"], onnx_graphs=None))
    with pytest.raises(ValueError, match="declares no ONNX graphs"):
        export_onnx(source, tmp_path / "out")

    def untraceable(model, processor):  # a fusion whose forward the exporter cannot follow
        from mm_hub.export import OnnxGraph

        class Branching(torch.nn.Module):
            def forward(self, input_ids):
                return torch.nonzero(input_ids).float().sort(stable=True, out=None)[0]

        return [OnnxGraph("model", Branching(), {"input_ids": torch.ones(2, 3, dtype=torch.long)}, ["out"])]

    monkeypatch.setitem(TASKS, "classification", dataclasses.replace(TASKS["classification"], onnx_graphs=untraceable))
    with pytest.raises(ValueError, match="The model graph does not export to ONNX"):
        export_onnx(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # no half-written folder


def test_the_runtime_refuses_the_wrong_folder_and_missing_int8(tmp_path):
    from mm_hub.ort_mm_hub import ORTModelForImageTextRetrieval, load

    source = save_tiny_model(tmp_path / "model", "classification", "concat")
    export_onnx(source, tmp_path / "onnx")
    with pytest.raises(ValueError, match="holds a classification model"):
        ORTModelForImageTextRetrieval.from_pretrained(tmp_path / "onnx")
    with pytest.raises(ValueError, match="no int8 graphs"):
        load(tmp_path / "onnx", quantized=True)
    with pytest.raises(ValueError, match="not an mm_hub ONNX export"):
        load(tmp_path / "model")


def test_a_predictor_served_from_onnx_answers_as_the_torch_one(tmp_path, monkeypatch):
    from mm_hub.predictor import Predictor

    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    image = random_images(1, seed=4)[0]
    answers = {}
    for head, ask in (("classification", lambda p: p.classify(image, "a red circle")),
                      ("retrieval", lambda p: p.zero_shot(image, "a red circle\na blue square\na green triangle")),
                      ("generation", lambda p: [*p.describe_stream(image, "what colour is it?", 6)][-1])):
        predictor = Predictor.from_pretrained(save_tiny_model(tmp_path / head, head, "concat"))
        expected = ask(predictor)
        predictor.use_onnx(quantized=False)  # exported once into the cache (fp32 and int8), then served from it
        assert type(predictor.model).__name__ == "OnnxServedModel" and predictor.task.name == head
        answers[head] = (ask(predictor), expected)
        assert list((tmp_path / "cache" / "onnx").glob("*/*.int8.onnx"))
    for head in ("classification", "retrieval"):
        actual, expected = answers[head]
        assert list(actual) == list(expected)
        np.testing.assert_allclose(list(actual.values()), list(expected.values()), atol=PARITY_TOLERANCE)
    actual, expected = answers["generation"]
    assert actual.text == expected.text and actual.done
    assert actual.confidence == pytest.approx(expected.confidence, abs=1e-4)


def test_calibration_images_quantize_the_convolutions_too(tmp_path):
    import onnx
    import onnxruntime as ort

    source = save_tiny_model(tmp_path / "model", "classification", "concat")
    (tmp_path / "photos").mkdir()
    for i, image in enumerate(random_images(4, seed=9)):
        image.save(tmp_path / "photos" / f"{i}.png")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    info = export_main([source, "--out", str(tmp_path / "onnx"), "--quantize", "int8",
                        "--calibration-images", str(tmp_path / "photos")])
    assert info["graphs"]["model"]["int8_convolutions"] == "static int8, per channel, calibrated on 4 images"
    graph = onnx.load(tmp_path / "onnx" / "model.int8.onnx").graph
    convolution_inputs = {name for node in graph.node if node.op_type == "Conv" for name in node.input}
    assert any(node.op_type == "DequantizeLinear" and node.output[0] in convolution_inputs for node in graph.node)
    inputs = tiny_processor()(images=random_images(3, seed=7), text=TEXTS, return_tensors="np")
    feed = {name: np.asarray(inputs[name]) for name in ("pixel_values", "input_ids", "attention_mask")}
    fp32, int8 = (ort.InferenceSession(str(tmp_path / "onnx" / name), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                  for name in ("model.onnx", "model.int8.onnx"))
    np.testing.assert_allclose(int8, fp32, rtol=0, atol=0.05)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        export_main([source, "--out", str(tmp_path / "again"), "--quantize", "int8", "--calibration-images",
                     str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="for --quantize int8"):
        export_main([source, "--out", str(tmp_path / "again"), "--calibration-images", str(tmp_path / "photos")])
