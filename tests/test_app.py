"""The Gradio app end to end: launched on 127.0.0.1 and called through `gradio_client` (every endpoint, error cases),
`app.demo` built from the environment, and `python app.py` as a process (serving, and its startup error)."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import socket
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi
from PIL import Image

import app
from mm_hub.cli import run
from mm_hub.examples import HELDOUT_NOTE
from mm_hub.inputs import MAX_TEXT_CHARS
from mm_hub.predictor import Predictor
from mm_hub.shapes import render_scene
from tests.conftest import (
    LABELS,
    readme_code_blocks,
    readme_commands,
    run_command,
    save_tiny_model,
    tiny_model,
    tiny_processor,
    tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]


def launch(demo: gr.Blocks) -> gr.Blocks:
    """Serve ``demo`` on 127.0.0.1 in this process (a free port from 7860 up) without blocking."""
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    return demo


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("app_model"))


@pytest.fixture(scope="module")
def served(model_dir):
    demo = launch(app.create_demo(model=model_dir))
    yield demo, Client(demo.local_url, verbose=False)
    demo.close()


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path)
    return str(path)


def _tab_visibility(demo: gr.Blocks) -> dict[str, bool]:
    return {
        component["props"]["label"]: component["props"].get("visible", True)
        for component in demo.config["components"]
        if component["type"] == "tabitem"
    }


def _endpoints(client: Client) -> dict[str, Any]:
    return client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_named_endpoints_and_tabs(served):
    demo, client = served
    # a classifier neither writes nor embeds: those tabs are hidden and their endpoints unlisted
    assert set(_endpoints(client)) == {"/classify", "/explain"}
    assert _tab_visibility(demo) == {"Classify": True, "Explain": True, "Describe": False, "Search": False,
                                     "Recommend": False}


def test_classify_endpoint_matches_the_predictor(served, model_dir, image_path):
    _, client = served
    result = client.predict(handle_file(image_path), "a red square", api_name="/classify")
    confidences = {item["label"]: item["confidence"] for item in result["confidences"]}
    expected = Predictor.from_pretrained(model_dir).classify(image_path, "a red square")
    assert confidences == pytest.approx(expected, abs=1e-5) and result["label"] == next(iter(expected))
    long_text = " ".join(["red"] * 40)  # beyond max_length: truncated with a warning toast, still answered
    assert client.predict(handle_file(image_path), long_text, api_name="/classify")["label"] in LABELS.values()


def test_explain_endpoint(served, image_path):
    _, client = served
    heatmap, words, table, summary = client.predict(handle_file(image_path), "a red square", api_name="/explain")
    assert min(Image.open(heatmap).size) >= 320  # attention fusion: the heatmap over the model's view
    assert [item["token"].split()[0] for item in words] == ["a", "red", "square"]
    assert all(item["token"].split()[1] == f"{item['class_or_confidence']:+.2f}" for item in words)  # its value
    assert table["headers"] == ["label", "image + text", "image only", "text only"]
    assert sorted(row[0] for row in table["data"]) == ["match", "mismatch"]
    assert all(sum(row[i] for row in table["data"]) == pytest.approx(1.0, abs=1e-3) for i in (1, 2, 3))
    assert "Prediction **" in summary and "fusion attention" in summary


def _write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_bad_inputs_are_readable_errors(served, image_path, tmp_path):
    _, client = served
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 5000)).save(bomb)  # 45 megapixels in a few kilobytes
    cases = [
        (handle_file(image_path), "", "The text is empty"),
        (handle_file(image_path), "x" * (MAX_TEXT_CHARS + 5), f"the limit is {MAX_TEXT_CHARS:,}"),
        (None, "a cat", "No image was given"),
        (handle_file(_write(tmp_path / "empty.png", b"")), "a cat", "is empty \\(0 bytes\\)"),
        (handle_file(_write(tmp_path / "text.png", b"hello, not pixels")), "a cat", "could not be read as an image"),
        (handle_file(str(bomb)), "a cat", "too large"),
    ]
    for endpoint in ("/classify", "/explain"):
        for image, text, message in cases:
            with pytest.raises(AppError, match=message):
                client.predict(image, text, api_name=endpoint)
    with pytest.raises(ValueError, match="Cannot find a function with `api_name`: /search"):  # not listed ...
        client.predict("a cat", 3, api_name="/search")
    raw = httpx.post(f"{served[0].local_url}gradio_api/call/search", json={"data": ["a cat", 3]}, timeout=30)
    events = httpx.get(f"{served[0].local_url}gradio_api/call/search/{raw.json()['event_id']}", timeout=30).text
    assert "event: error" in events and "Search needs a retrieval model" in events  # ... and refused if called raw


def test_retrieval_app_searches_and_refuses_to_classify(tmp_path, image_path, monkeypatch):
    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MM_HUB_DATASET", raising=False)
    demo = launch(app.create_demo(model=save_tiny_model(tmp_path / "retrieval", head="retrieval")))
    try:
        assert _tab_visibility(demo) == {"Classify": False, "Explain": False, "Describe": False, "Search": True,
                                         "Recommend": True}
        client = Client(demo.local_url, verbose=False)
        assert set(_endpoints(client)) == {"/search", "/search_image", "/zero_shot", "/recommend"}
        gallery, scores = client.predict("a red circle on the left", 4, api_name="/search")
        assert len(gallery) == len(scores["data"]) == 4 and all(Path(item["image"]).exists() for item in gallery)
        assert [item["caption"] for item in gallery] == [caption for _, caption in scores["data"]]
        assert [score for score, _ in scores["data"]] == sorted((score for score, _ in scores["data"]), reverse=True)
        texts = client.predict(handle_file(image_path), 3, api_name="/search_image")
        captions = [row[1] for row in texts["data"]]
        assert len(captions) == len(set(captions)) == 3 and all(isinstance(c, str) and c for c in captions)
        with pytest.raises(AppError, match="search query is empty"):
            client.predict("  ", 3, api_name="/search")
    finally:
        demo.close()


def test_a_generation_model_describes_images_through_the_api(tmp_path, image_path, served):
    folder = save_tiny_model(tmp_path / "generator", "generation")
    demo = launch(app.create_demo(model=folder))
    try:
        assert _tab_visibility(demo) == {"Classify": False, "Explain": False, "Describe": True, "Search": False,
                                         "Recommend": False}
        client = Client(demo.local_url, verbose=False)
        assert set(_endpoints(client)) == {"/describe"}
        local = Predictor.from_pretrained(folder)
        for question in ("", "what colour is the circle?"):
            written, sure = client.predict(handle_file(image_path), question, 5, api_name="/describe")
            assert written == local.describe(image_path, question, 5) and 0 <= sure <= 1
        beams, _ = client.predict(handle_file(image_path), "", 5, "beam search", api_name="/describe")
        assert beams == local.describe(image_path, "", 5, "beam search")
        long_question = "what colour is the circle on the left of the square in the middle of this picture?"
        written, _ = client.predict(handle_file(image_path), long_question, 30, api_name="/describe")  # capped
        assert written == local.describe(image_path, long_question, 30)
        for question, tokens, message in (("", 0, "whole number from 1 to 30"), ("", 31, "from 1 to 30"),
                                          ("x" * (MAX_TEXT_CHARS + 1), 5, "limit is")):
            with pytest.raises(AppError, match=message):
                client.predict(handle_file(image_path), question, tokens, api_name="/describe")
        with pytest.raises(AppError, match="only images uploaded to this app"):
            client.predict({"path": "/etc/hostname"}, "", 5, api_name="/describe")
        with pytest.raises(AppError, match="decoding must be one of \\['greedy', 'beam search', 'sampling'\\]"):
            client.predict(handle_file(image_path), "", 5, "top_k=100000", api_name="/describe")
    finally:
        demo.close()


def test_demo_attribute_is_built_from_the_environment(model_dir, monkeypatch):
    monkeypatch.setenv("MM_HUB_MODEL", model_dir)
    vars(app).pop("demo", None)  # as on a fresh import, whatever earlier tests did
    module = importlib.reload(app)
    assert "demo" not in vars(module)  # importing app builds nothing
    assert isinstance(module.demo, gr.Blocks)
    assert any(model_dir in str(c["props"].get("value", "")) for c in module.demo.config["components"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("target", ["missing folder", "unreachable hub"])
def test_startup_error_is_one_message(target, tmp_path, monkeypatch, capsys):
    model = str(tmp_path / "no-such-model")
    if target == "unreachable hub":
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_free_port()}")
        model = "someone/model"
    with pytest.raises(SystemExit) as exited:
        run(app.main, ["--model", model])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and stderr.startswith(f"error: Could not load the model {model!r}")
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2  # what failed and what to check
    if target == "unreachable hub":
        assert "cannot reach http://127.0.0.1:" in stderr  # one quick check instead of half a minute of retries


@pytest.mark.slow
@pytest.mark.slow
def test_readme_app_section_runs(hub_server, tmp_path, monkeypatch, capsys):
    """The README's app commands and gradio_client snippets, as written: the Hub ids they name are served by the
    local test Hub, ports 7860/7861 become free ones, and each `python app.py ...` line runs `app.main` in-process."""
    api = HfApi()
    for repo, head in (("your-name/mm-hub-shapes", "classification"), ("your-name/mm-hub-clip", "retrieval")):
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=save_tiny_model(tmp_path / repo, head=head))
    monkeypatch.chdir(tmp_path)
    render_scene([("red", "circle", "left")], image_size=96).save("scene.png")
    ports = {port: str(_free_port()) for port in ("7860", "7861", "7862")}
    monkeypatch.setenv("GRADIO_SERVER_PORT", ports["7860"])
    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MM_HUB_MODEL", raising=False)
    served: dict[int, gr.Blocks] = {}
    real_launch = gr.Blocks.launch

    def launch_in_background(self, **kwargs):
        port = int(kwargs.get("server_port") or os.environ["GRADIO_SERVER_PORT"])
        if port in served:  # a later README line reuses the port: the earlier app stops first
            served.pop(port).close()
        served[port] = self
        return real_launch(self, **{**kwargs, "server_port": port, "prevent_thread_lock": True, "quiet": True})

    monkeypatch.setattr(gr.Blocks, "launch", launch_in_background)
    try:
        for line in readme_commands("app"):
            for old, new in ports.items():
                line = line.replace(old, new)
            assert "app.py" in line, line
            run_command(shlex.split(line, comments=True), monkeypatch)
        assert len(served) == 3
        assert list((tmp_path / "cache" / "onnx").glob("*/model.int8.onnx"))  # --runtime onnx exported it once
        (block,) = readme_code_blocks("app")
        for old, new in ports.items():
            block = block.replace(old, new)
        namespace: dict = {}
        exec(compile(block, "README.md[app]", "exec"), namespace)
    finally:
        for demo in served.values():
            demo.close()
    printed = capsys.readouterr().out
    assert namespace["prediction"]["label"] in LABELS.values() and namespace["prediction"]["label"] in printed
    assert namespace["summary"].startswith("Prediction **")
    assert [w["token"].split()[0] for w in namespace["words"]] == ["a", "red", "circle", "on", "the", "left"]
    assert sorted(row[0] for row in namespace["ablation"]["data"]) == ["match", "mismatch"]
    assert len(namespace["gallery"]) == len(namespace["scores"]["data"]) == 3
    assert len(namespace["similar"]) == len(namespace["rows"]["data"]) == 3
    assert all("circle" in item["caption"] for item in namespace["similar"])
    assert {"a red circle", "a blue square"} & set(printed.splitlines())  # the zero-shot label, printed


def test_texts_the_model_cannot_read_whole_get_a_warning(monkeypatch):
    vocabulary = tokenizer()("a red circle", add_special_tokens=False)["input_ids"]
    predictor = Predictor(tiny_model("classification", num_labels=2), tiny_processor(),
                          reports={"training_info.json": {"text_vocabulary": vocabulary}})
    shown: list[str] = []
    monkeypatch.setattr(app.gr, "Warning", shown.append)
    app._warn_about_text(predictor, "a red circle")
    assert shown == []
    text = "a red dog " + " ".join(f"w{i}" for i in range(10)) + " " + "red " * 20
    app._warn_about_text(predictor, text)
    assert shown[0] == f"The text is longer than this model reads: its last {predictor.dropped_tokens(text)} tokens " \
        "were ignored."
    assert shown[1].startswith("This model never read 'dog', 'w0', 'w1'") and shown[1].endswith(
        "and 3 more in training: what it says about them is a guess.")


# ---- the default app: every capability of the built-in demo, and several models side by side -----------------


def _markdown(demo: gr.Blocks, elem_id: str) -> str:
    return next(c["props"]["value"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id)


def test_the_default_app_serves_every_endpoint_of_the_demo(default_app):
    demo = default_app
    assert set(_tab_visibility(demo).values()) == {True}  # a classifier, a retrieval model and a captioner
    client = Client(demo.local_url, verbose=False)
    assert set(_endpoints(client)) == {"/classify", "/explain", "/describe", "/search", "/search_image", "/zero_shot",
                                       "/recommend"}
    # The header names each model and its measured quality.
    classifier, searcher = _markdown(demo, "model-info-classify"), _markdown(demo, "model-info-search")
    assert "(the built-in demo model)" in classifier and "**Measured** accuracy" in classifier
    assert "retrieval head" in searcher and "**Measured** text to image recall@1" in searcher
    assert "generation head" in _markdown(demo, "model-info-describe")
    assert "**Measured** cider" in _markdown(demo, "model-info-describe")  # its task's metrics, best-model one first
    assert "structural f1" in _markdown(demo, "model-info-describe")
    # The examples are the demo data's eval / held-out rows with their expected answer, as the Classify tab lists.
    examples = next(c["props"] for c in demo.config["components"] if c["type"] == "dataset")
    image, text, expected = examples["samples"][0]
    assert expected in ("match", "mismatch") and examples["samples"][-1][2].endswith("(held-out pair: never named "
                                                                                      "in training)")
    path = image["path"] if isinstance(image, dict) else image
    prediction = client.predict(handle_file(path), text, api_name="/classify")
    assert prediction["label"] in ("match", "mismatch")
    heatmap, words, table, summary = client.predict(handle_file(path), text, api_name="/explain")
    assert [item["token"].split()[0] for item in words] == text.split() and summary.startswith("Prediction **")
    written, sure = client.predict(handle_file(path), "", 6, api_name="/describe")
    assert isinstance(written, str) and len(written.split()) <= 6
    gallery, scores = client.predict("a red circle", 3, api_name="/search")
    assert len(gallery) == len(scores["data"]) == 3
    texts = client.predict(handle_file(path), 3, api_name="/search_image")
    assert len({row[1] for row in texts["data"]}) == 3
    labelled = client.predict(handle_file(path), "a red circle\na blue square\na green triangle", api_name="/zero_shot")
    confidences = {item["label"]: item["confidence"] for item in labelled["confidences"]}
    assert set(confidences) == {"a red circle", "a blue square", "a green triangle"}
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    similar, rows = client.predict(0, "", 4, api_name="/recommend")
    assert len(similar) == len(rows["data"]) == 4
    only, _ = client.predict(0, "circle", 2, api_name="/recommend")
    assert only and all("circle" in item["caption"] for item in only)  # shown with the caption that says it
    with pytest.raises(AppError, match="item to pick .* from 0 to"):
        client.predict(10**6, "", 4, api_name="/recommend")
    for k, message in ((None, "is missing"), (1.5, "not whole"), ("3", "got the str '3'"),
                       (True, "got the bool True")):  # checked, never cast first (NaN: test_predictor)
        with pytest.raises(AppError, match=f"The number of results .*{message}"):
            client.predict("a red circle", k, api_name="/search")
    with pytest.raises(AppError, match="2 to 32 different candidate captions"):
        client.predict(handle_file(path), "a red circle", api_name="/zero_shot")


def test_a_classifier_a_retrieval_model_and_a_generator_side_by_side(tmp_path, image_path, monkeypatch):
    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MM_HUB_DATASET", raising=False)
    for head in ("classification", "retrieval", "generation"):
        save_tiny_model(tmp_path / "apps" / head, head)
    manifest = {"models": ["./generation", "./retrieval", {"model": "./classification", "revision": None}]}
    (tmp_path / "apps" / "space_config.json").write_text(json.dumps(manifest))
    demo = launch(app.create_demo(model=str(tmp_path / "apps")))  # a folder of models with its manifest
    try:
        assert set(_tab_visibility(demo).values()) == {True}
        client = Client(demo.local_url, verbose=False)
        assert set(_endpoints(client)) == {"/classify", "/explain", "/describe", "/search", "/search_image",
                                           "/zero_shot", "/recommend"}
        local = {head: Predictor.from_pretrained(tmp_path / "apps" / head) for head in ("classification", "generation")}
        result = client.predict(handle_file(image_path), "a red square", api_name="/classify")
        expected = local["classification"].classify(image_path, "a red square")
        assert {i["label"]: i["confidence"] for i in result["confidences"]} == pytest.approx(expected, abs=1e-5)
        assert client.predict(handle_file(image_path), "", 4, api_name="/describe")[0] == local["generation"].describe(
            image_path, "", 4)
        assert len(client.predict("a red circle", 2, api_name="/search")[0]) == 2
        assert "generation head" in _markdown(demo, "model-info-describe")
    finally:
        demo.close()


def test_examples_come_only_from_a_renderable_shapes_config(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path))

    def predictor(info: dict) -> Predictor:
        return Predictor(tiny_model("classification", num_labels=2, id2label=LABELS), tiny_processor(),
                         reports={"training_info.json": info})

    examples = app.examples_for([predictor({"dataset": "shapes", "dataset_config": "image_size=48"})])
    assert set(examples) == {"classify", "explain", "search"}  # no generator: no Describe examples
    assert all(Image.open(path).size == (48, 48) for path, _, _ in examples["classify"])
    assert app.examples_for([predictor({"dataset": "org/photos"})]) == {}  # not the shapes data: no examples
    with caplog.at_level("WARNING", logger="mm_hub.app"):  # a hostile training_info.json cannot make it render 10^10 px
        assert app.examples_for([predictor({"dataset": "shapes", "dataset_config": "image_size=100000"})]) == {}
    assert "cannot be rendered" in caplog.text
    writer = Predictor(tiny_model("generation"), tiny_processor(),
                       reports={"training_info.json": {"dataset": "shapes", "dataset_config": "image_size=48"}})
    described = app.examples_for([writer])["describe"]  # captions and questions, with what the data says
    assert [bool(question) for _, question, _ in described] == [False, True, True, False, True]
    assert described[0][2].startswith("a ") and described[-1][2].endswith(HELDOUT_NOTE)
