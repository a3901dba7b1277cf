"""Predictor: loading (folders, Hub ids, revisions, errors), classification, explanations and search, on tiny models."""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, constants
from PIL import Image

from mm_hub import FUSION_REGISTRY, ImageTextClassificationPipeline
from mm_hub.model.fusion_mm_hub import Fusion
from mm_hub import MMHubForImageTextClassification as Classifier
from mm_hub import MMHubForImageTextRetrieval as Retrieval
from mm_hub.examples import EXAMPLE_ROWS, HELDOUT_NOTE, shapes_examples
from mm_hub.explain import (
    attention_explanation,
    grid_shape,
    heatmap_overlay,
    merge_word_pieces,
)
from mm_hub.inputs import MAX_TEXT_CHARS, InputError, check_k, check_text, read_image
from mm_hub.loading import (
    MAX_REPORT_BYTES,
    ModelLoadError,
    load_reports,
    resolve_model_sources,
)
from mm_hub.model.processing_mm_hub import MAX_IMAGE_PIXELS
from mm_hub.predictor import ABLATIONS, Predictor
from mm_hub.shapes import LABELS as SHAPES_LABELS
from mm_hub.shapes import make_shapes_dataset
from tests.conftest import (
    TEXT_ENCODER_TYPES,
    random_images,
    tiny_config,
    tiny_model,
    tiny_processor,
    tokenizer,
)

LABELS = {0: "cat", 1: "dog", 2: "bird"}
CAPTION = "a red circle left of an unbelievable square"


@functools.cache
def _classifier(fusion: str = "concat", encoder: str = "transformer", seed: int = 0, **kwargs) -> Classifier:
    """A tiny classifier with the three LABELS (cached: tests only read it, except where they copy it first)."""
    return tiny_model("classification", fusion, encoder, seed, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                      **kwargs)


def _save(model, folder) -> str:
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def image():
    return random_images(1, seed=3)[0]


def _direct_scores(model, processor, images, texts, pixel_values=None) -> torch.Tensor:
    inputs = processor(images=images, text=texts)
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values
    with torch.no_grad():
        return model(**inputs).logits


# ---- loading -------------------------------------------------------------------------------------------------


def test_loads_a_saved_folder_and_describes_it(tmp_path):
    folder = _save(_classifier("gated", "lstm"), tmp_path / "m")
    predictor = Predictor.from_pretrained(folder)
    info = predictor.info()
    assert info["model"] == folder and info["fusion_type"] == "gated" and info["labels"] == ["cat", "dog", "bird"]
    assert "BiLSTM" in info["text_encoder"] and info["vision_encoder"].startswith("resnet")
    markdown = predictor.info_markdown()
    assert folder in markdown and "`gated`" in markdown and "`bird`" in markdown
    assert info["ensemble_size"] == 1 and "ensemble" not in markdown
    assert info["revision"] is None and "(a local folder)" in markdown and "revision" not in markdown


def test_loads_a_hub_repo_at_a_revision(tmp_path, hub_repo_id, monkeypatch):
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_folder(folder_path=_save(_classifier(), tmp_path / "main"), repo_id=hub_repo_id)
    api.create_branch(hub_repo_id, branch="v2")
    relabelled = copy.deepcopy(_classifier(seed=1))
    relabelled.config.id2label = {0: "x", 1: "y", 2: "z"}
    relabelled.config.label2id = {"x": 0, "y": 1, "z": 2}
    api.upload_folder(folder_path=_save(relabelled, tmp_path / "v2"), repo_id=hub_repo_id, revision="v2")
    assert Predictor.from_pretrained(hub_repo_id).labels == ["cat", "dog", "bird"]
    on_branch = Predictor.from_pretrained(hub_repo_id, revision="v2")
    assert on_branch.labels == ["x", "y", "z"] and on_branch.info()["revision"] == "v2"
    assert on_branch.info()["commit"]  # the resolved commit is shown in the UI
    # With the Hub unreachable, a cached model still loads; one that was never downloaded fails at once.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert Predictor.from_pretrained(hub_repo_id, revision="v2").labels == ["x", "y", "z"]
    with pytest.raises(ModelLoadError, match="cannot reach http://127.0.0.1:9 and the model is not in the local cache"):
        Predictor.from_pretrained(hub_repo_id + "-never-pushed")


@pytest.mark.parametrize("kind", ["missing folder", "missing repo", "missing revision", "not mm_hub"])
def test_load_errors_are_one_clear_message(tmp_path, hub_repo_id, kind):
    from transformers import BertConfig

    target, revision = str(tmp_path / "nowhere"), None
    if kind == "missing repo":
        target = hub_repo_id
    elif kind == "missing revision":
        HfApi().create_repo(hub_repo_id)
        HfApi().upload_folder(folder_path=_save(_classifier(), tmp_path / "m"), repo_id=hub_repo_id)
        target, revision = hub_repo_id, "no-such-branch"
    elif kind == "not mm_hub":
        BertConfig().save_pretrained(tmp_path / "bert")
        target = str(tmp_path / "bert")
    with pytest.raises(ModelLoadError) as caught:
        Predictor.from_pretrained(target, revision=revision)
    message = str(caught.value)
    assert repr(target) in message
    assert ("'bert' model" in message) if kind == "not mm_hub" else ("Could not load the model" in message)


def _resolved(*args, **kwargs) -> list[tuple]:
    return [(source.model, source.revision, source.origin) for source in resolve_model_sources(*args, **kwargs)]


def test_model_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MM_HUB_MODEL", raising=False)
    monkeypatch.delenv("MM_HUB_REVISION", raising=False)
    assert _resolved(app_dir=tmp_path) == [(None, None, "demo")]  # nothing set: the demo models
    (tmp_path / "space_config.json").write_text(json.dumps({"model": "org/space", "revision": "v1"}))
    assert _resolved(app_dir=tmp_path) == [("org/space", "v1", "space_config")]
    monkeypatch.setenv("MM_HUB_MODEL", "org/env")
    monkeypatch.setenv("MM_HUB_REVISION", "v9")
    assert _resolved(app_dir=tmp_path) == [("org/env", "v9", "env")]
    assert _resolved("org/flag", "v3", app_dir=tmp_path) == [("org/flag", "v3", "argument")]
    monkeypatch.delenv("MM_HUB_MODEL")
    (tmp_path / "space_config.json").write_text('{"revision": "v1"}')
    with pytest.raises(ModelLoadError, match="must be a JSON object like"):
        resolve_model_sources(app_dir=tmp_path)


def test_several_models_by_list_by_env_and_by_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv("MM_HUB_REVISION", raising=False)
    monkeypatch.setenv("MM_HUB_MODEL", "org/a, org/b@v2")
    assert _resolved() == [("org/a", None, "env"), ("org/b", "v2", "env")]
    assert _resolved(["org/c", "org/d@main"]) == [("org/c", None, "argument"), ("org/d", "main", "argument")]
    apps = tmp_path / "apps"
    (apps / "retrieval").mkdir(parents=True)
    (apps / "space_config.json").write_text(json.dumps({"models": ["org/a@v1", {"model": "./retrieval"}]}))
    expected = [("org/a", "v1", "argument"), (str(apps / "retrieval"), None, "argument")]
    assert _resolved(str(apps)) == _resolved(str(apps / "space_config.json")) == expected  # a folder or its file
    with pytest.raises(ModelLoadError, match="pin each as org/name@revision"):
        resolve_model_sources("org/a,org/b", "v1")
    for bad in ('{"models": []}', '{"models": [3]}', '{"models": [{"model": "x", "revision": 2}]}', "[1", "null"):
        (apps / "space_config.json").write_text(bad)
        with pytest.raises(ModelLoadError, match="space_config.json"):
            resolve_model_sources(str(apps))


# ---- classification -------------------------------------------------------------------------------------------


def test_single_label_probabilities_match_the_pipeline(processor, image):
    model = _classifier("attention")
    scores = Predictor(model, processor).classify(image, CAPTION)
    assert list(scores) == sorted(scores, key=scores.get, reverse=True) and set(scores) == set(LABELS.values())
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    expected = ImageTextClassificationPipeline(model=model, processor=processor)({"image": image, "text": CAPTION})
    assert {item["label"]: item["score"] for item in expected} == pytest.approx(scores, abs=1e-5)
    assert list(Predictor(model, processor).classify(image, CAPTION, top_k=2)) == list(scores)[:2]


def test_multi_label_and_regression_scores(processor, image):
    multi = _classifier(problem_type="multi_label_classification")
    scores = Predictor(multi, processor).classify(image, CAPTION)
    logits = _direct_scores(multi, processor, [image], [CAPTION])[0]
    assert [scores[LABELS[i]] for i in range(3)] == pytest.approx(logits.sigmoid().tolist(), abs=1e-5)
    assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3)  # independent, not a distribution
    regression = Classifier(tiny_config(num_labels=1, problem_type="regression", id2label={0: "stars"})).eval()
    value = Predictor(regression, processor).classify(image, CAPTION)
    assert value == pytest.approx({"stars": _direct_scores(regression, processor, [image], [CAPTION])[0, 0].item()})


# ---- explanations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", TEXT_ENCODER_TYPES)
@pytest.mark.parametrize("fusion", sorted(FUSION_REGISTRY))
def test_explain_every_fusion(processor, image, fusion, encoder):
    model = _classifier(fusion, encoder)
    result = Predictor(model, processor).explain(image, CAPTION)
    # Attention fusions draw a heatmap over the model's view of the image; the others cannot.
    attends = FUSION_REGISTRY[fusion].explain_attention is not Fusion.explain_attention
    assert (result.heatmap is not None) == attends == (fusion in ("attention", "sequence", "bilinear"))
    assert result.word_method == ("attention" if fusion in ("attention", "sequence") else "leave-one-out")
    if result.heatmap is not None:
        assert min(result.heatmap.size) >= 320 and result.heatmap.mode == "RGB"
    assert [word for word, _ in result.words] == CAPTION.split()  # word pieces joined, no [CLS]/[SEP]
    assert all(-1.0 <= score <= 1.0 for _, score in result.words) and max(abs(s) for _, s in result.words) > 0
    # The ablation runs the documented neutral inputs: empty text, and the mean-colour (all-zero) image.
    inputs = processor(images=[image], text=[CAPTION])
    both = _direct_scores(model, processor, [image], [CAPTION]).softmax(-1)[0]
    image_only = _direct_scores(model, processor, [image], [""]).softmax(-1)[0]
    text_only = _direct_scores(model, processor, [image], [CAPTION], torch.zeros_like(inputs["pixel_values"])).softmax(
        -1
    )[0]
    for name, expected in zip(ABLATIONS, (both, image_only, text_only)):
        assert [result.ablation[name][LABELS[i]] for i in range(3)] == pytest.approx(expected.tolist(), abs=1e-5)
    assert result.predicted == LABELS[int(both.argmax())]


def test_leave_one_out_is_the_score_drop_per_word(processor, image):
    model = _classifier("gated")
    predictor = Predictor(model, processor)
    result = predictor.explain(image, "red circle")
    base = _direct_scores(model, processor, [image], ["red circle"]).softmax(-1)[0]
    target = int(base.argmax())
    drops = [
        base[target] - _direct_scores(model, processor, [image], [w]).softmax(-1)[0, target] for w in ("circle", "red")
    ]
    peak = max(abs(float(d)) for d in drops)
    assert [score for _, score in result.words] == pytest.approx([float(d) / peak for d in drops], abs=1e-4)


def test_attention_explanation_finds_the_attended_cell_and_word():
    num_image, num_text = 6, 5  # text: [CLS] w1 w2 w3 [SEP]
    words = [1, 2, 3]
    text_to_image = torch.full((1, 2, num_text, num_image), 0.1)
    text_to_image[0, :, 1:4, 4] = 5.0  # the words look at cell 4
    image_to_text = torch.full((1, 2, num_image, num_text), 0.1)
    image_to_text[0, :, :, 2] = 3.0  # every cell attends to word 2
    cells, word_scores = attention_explanation(
        "attention", {"text_to_image": (text_to_image,), "image_to_text": (image_to_text,)}, num_text, words
    )
    assert int(cells.argmax()) == 4 and int(word_scores.argmax()) == 1 and cells.sum() == pytest.approx(1.0)
    joint = torch.full((1, 2, 1 + num_image + num_text, 1 + num_image + num_text), 0.1)
    joint[0, :, 0, 1 + 2] = 4.0  # [CLS] looks at image cell 2
    joint[0, :, 0, 1 + num_image + 3] = 2.0  # and at word 3
    cells, word_scores = attention_explanation("sequence", {"self": (joint,)}, num_text, words)
    assert len(cells) == num_image and int(cells.argmax()) == 2 and int(word_scores.argmax()) == 2
    pooling = torch.tensor([[0.1, 0.1, 0.1, 0.1, 0.5, 0.1]])  # the caption reads out cell 4
    cells, word_scores = attention_explanation("bilinear", {"pooling": (pooling,)}, num_text, words)
    assert int(cells.argmax()) == 4 and word_scores is None  # bilinear scores words by leave-one-out
    assert attention_explanation("concat", {}, num_text, words) is None  # no maps: words by leave-one-out
    assert attention_explanation("gated", {"gate": (torch.ones(1, 4),)}, num_text, words) is None


def test_grid_heatmap_and_word_pieces():
    assert grid_shape(49, 224, 224) == (0, 7, 7)
    assert grid_shape(197, 224, 224) == (1, 14, 14)  # a ViT's [CLS] + 14x14 patches
    assert grid_shape(8, 64, 128) == (0, 2, 4)
    with pytest.raises(ValueError, match="11 image tokens"):
        grid_shape(11, 64, 64)
    scores = np.zeros(4)
    scores[1] = 1.0  # top-right cell of a 2x2 grid
    overlay = np.asarray(heatmap_overlay(Image.new("RGB", (100, 100), "white"), scores, 2, 2, min_side=100))
    top_right, bottom_left = overlay[10, 90].astype(int), overlay[90, 10].astype(int)
    assert top_right[0] > top_right[2] and bottom_left[2] > bottom_left[0]  # red where attended, blue elsewhere
    assert overlay.shape == (136, 100, 3)  # the image above its colour scale
    scale = overlay[110]
    assert scale[2][2] > scale[2][0] and scale[-3][0] > scale[-3][2]  # blue (least) on the left, red (most) right
    assert merge_word_pieces(["un", "##believ", "##able", "cat"], [0.1, 0.9, 0.2, 0.5]) == [
        ("unbelievable", 0.9),
        ("cat", 0.5),
    ]


# ---- inputs ---------------------------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its pixel data is never needed to check the size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("value", "message"), [
    (None, "The number of results is missing"), (math.nan, "got nan, which is not a finite number"),
    (-math.inf, "got -inf, which is not a finite number"), (1.5, "got 1.5, which is not whole"),
    ("3", "got the str '3'"), (True, "got the bool True"), (0, "from 1 to 100, got 0"), (101.0, "got 101"),
])
def test_numbers_are_checked_before_they_are_used(value, message):
    with pytest.raises(InputError, match=message):
        check_k(value)
    assert check_k(3.0) == 3 and check_k(100) == 100


def _webp(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="WEBP", lossless=True, method=0)
    return buffer.getvalue()


def _icon_holding(png: bytes) -> bytes:
    """An ICO file whose one entry declares 1 x 1 pixels and holds ``png``."""
    return struct.pack("<HHHBBBBHHII", 0, 1, 1, 1, 1, 0, 0, 1, 32, len(png), 22) + png


def test_bad_images_are_input_errors(tmp_path):
    cases = {
        "empty.png": (b"", "empty \\(0 bytes\\)"),
        "notes.png": (b"this is not an image", "could not be read as an image"),
        "big.png": (_png_header(8000, 6000), f"limit for PNG is {MAX_IMAGE_PIXELS:,} pixels"),
        "bomb.png": (_png_header(30000, 30000), "too large"),
        # WebP's decoder needs four times the memory per pixel of the others: a quarter of the pixels
        "big.webp": (_webp(3163, 3163), f"limit for WEBP is {MAX_IMAGE_PIXELS // 4:,} pixels"),
        # formats by decoder, not by name: a container that holds a larger image than it declares is not read
        "icon.png": (_icon_holding(_png_header(13000, 13000)), "not a PNG, JPEG, WebP, GIF, BMP or TIFF image"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=message):
            read_image(str(tmp_path / name))
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), "red").save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match="damaged or truncated|could not be read"):
        read_image(str(tmp_path / "cut.png"))
    for missing in (None, "", {"path": None}):
        with pytest.raises(InputError, match="No image was given"):
            read_image(missing)
    assert read_image({"path": str(good)}).size == (40, 30)  # a Gradio file payload
    assert read_image(np.zeros((3, 20, 10))).size == (10, 20)  # arrays of any layout / dtype, as the processor takes
    for array in (np.zeros((0, 5, 3), dtype=np.uint8), np.zeros((5, 6, 7))):
        with pytest.raises(InputError, match="cannot be read"):
            read_image(array)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "I", "F"])
def test_odd_image_modes_are_classified(tmp_path, processor, mode):
    path = tmp_path / f"odd.{'tiff' if mode in ('CMYK', 'F') else 'png'}"
    Image.new(mode, (37, 23)).save(path)
    assert read_image(str(path)).mode == "RGB"
    assert sum(Predictor(_classifier(), processor).classify(str(path), "a cat").values()) == pytest.approx(1.0)


def test_bad_texts_are_input_errors():
    for text, message in (
        (None, "empty"),
        ("   ", "empty"),
        (42, "must be a string"),
        ("x" * (MAX_TEXT_CHARS + 1), "limit"),
    ):
        with pytest.raises(InputError, match=message):
            check_text(text)
    assert check_text("  a cat  ") == "a cat"


def test_dropped_tokens_counts_what_the_model_never_sees(processor):
    predictor = Predictor(_classifier(), processor)  # max_length 16, [CLS] and [SEP] included
    assert predictor.dropped_tokens("a red circle") == 0
    assert predictor.dropped_tokens(" ".join(["cat"] * 20)) == 20 + 2 - processor.max_length


def test_examples_are_eval_and_heldout_rows_with_their_answer(tmp_path):
    config = "num_train=50,num_eval=40,num_heldout=30,image_size=48,partial_caption_rate=0.2"
    rows = shapes_examples(config, tmp_path)
    data = make_shapes_dataset(num_train=0, num_eval=40, num_heldout=30, image_size=48, partial_caption_rate=0.2)
    expected = [(data[split][row]["text"], SHAPES_LABELS[data[split][row]["label"]]) for split, row in EXAMPLE_ROWS]
    assert [(text, answer.removesuffix(HELDOUT_NOTE)) for _, text, answer in rows] == expected
    assert {answer for _, _, answer in rows[:4]} == {"match", "mismatch"} and rows[-1][2].endswith(HELDOUT_NOTE)
    for (split, row), (path, _, _) in zip(EXAMPLE_ROWS, rows):  # the very pixels the model was scored on
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(data[split][row]["image"].convert("RGB")))
    assert shapes_examples(config, tmp_path) == rows  # rendered once, reused
    # The config comes from a model's training_info.json: sizes that do not change these rows are ignored, an image
    # size no example needs is refused before anything is rendered.
    assert shapes_examples(config.replace("num_train=50", "num_train=999999999"), tmp_path) == rows
    with pytest.raises(ValueError, match="16 to 512 pixels, got 100000"):
        shapes_examples("image_size=100000", tmp_path)


# ---- search ---------------------------------------------------------------------------------------------------


def test_search_builds_once_then_reuses_the_cached_index(tmp_path, monkeypatch, processor):
    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    folder = _save(Retrieval(tiny_config()), tmp_path / "retrieval")
    predictor = Predictor.from_pretrained(folder)
    assert predictor.can_embed and not predictor.can_classify and not predictor.can_search
    with pytest.raises(InputError, match="retrieval"):
        predictor.classify(random_images(1)[0], "a cat")
    with pytest.raises(InputError, match="Search needs"):
        predictor.search_text("a cat")
    predictor.build_search_index(max_rows=24, progress=False)
    hits = predictor.search_text("a red circle on the left", k=5)
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(isinstance(h["image"], Image.Image) and h["caption"] for h in hits)
    by_image = predictor.search_image(hits[0]["image"], k=3)
    assert len(by_image) == 3 and all(0 <= h["row"] < 24 for h in by_image)
    with pytest.raises(InputError, match="whole number"):
        predictor.search_text("a cat", k=0)

    from mm_hub.recommend import recommend
    from mm_hub.search import MultimodalIndex

    # Recommendation: an indexed item's neighbours (never itself), filtered by a word of their captions.
    choices = predictor.catalogue(limit=10)
    assert len(choices) == 10 and choices[3] == (f"3 · {predictor.item(3)['caption']}", 3)
    assert predictor.item(3)["image"] is not None
    similar = predictor.recommend(3, k=4)
    assert [h["row"] for h in similar] == [h["row"] for h in recommend(predictor.index, 3, k=4)] and 3 not in [
        h["row"] for h in similar]
    circles = predictor.recommend(3, k=3, mention="Circle")
    text_column = predictor.index.metadata["text_column"]
    assert circles and all("circle" in " ".join(predictor.index.row(h["row"])[text_column]) for h in circles)
    assert all("circle" in h["caption"] for h in circles)  # each shown with a caption that says it
    assert predictor.recommend(3, k=3, mention="zebra") == []  # no caption mentions it: nothing, not an error
    for row, message in ((24, "from 0 to 23"), (-1, "from 0 to 23"), ("x", "item to pick .*got the str"), (True, "item to pick .*got the bool")):
        with pytest.raises(InputError, match=message):
            predictor.recommend(row)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached index should have been reused")

    monkeypatch.setattr(MultimodalIndex, "build", no_rebuild)
    again = Predictor.from_pretrained(folder)
    again.build_search_index(max_rows=24, progress=False)
    assert [h["row"] for h in again.search_text("a red circle on the left", k=5)] == [h["row"] for h in hits]


def test_zero_shot_labels_an_image_by_candidate_captions(processor, image):
    torch.manual_seed(0)
    model = Retrieval(tiny_config())
    predictor = Predictor(model, processor)
    scores = predictor.zero_shot(image, "a red circle\na blue square\n\na red circle")  # blank and repeat dropped
    assert set(scores) == {"a red circle", "a blue square"} and sum(scores.values()) == pytest.approx(1.0)
    assert list(scores.values()) == sorted(scores.values(), reverse=True)
    texts = processor(text=["a red circle", "a blue square"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**processor(images=[image], return_tensors="pt"), **texts).logits_per_image.softmax(-1)[0].tolist()
    assert [scores["a red circle"], scores["a blue square"]] == pytest.approx(expected, abs=1e-6)
    assert predictor.zero_shot(image, "a cat, a dog").keys() == {"a cat", "a dog"}  # one line: commas separate
    for bad, message in (("a cat", "2 to 32"), (["x"] * 40 + [str(i) for i in range(40)], "2 to 32"),
                         (3, "string or a list"), (["a cat", 4], "must be a string")):
        with pytest.raises(InputError, match=message):
            predictor.zero_shot(image, bad)
    with pytest.raises(InputError, match="needs a retrieval"):
        Predictor(_classifier(), processor).zero_shot(image, "a, b")


def test_search_a_local_dataset_folder_and_a_saved_index(tmp_path, monkeypatch):
    from mm_hub.shapes import make_shapes_dataset

    monkeypatch.setenv("MM_HUB_CACHE", str(tmp_path / "cache"))
    rows = make_shapes_dataset(num_train=12, num_eval=0, num_heldout=0)["train"].remove_columns("label")
    first = [f"{text} ({i})" for i, text in enumerate(rows["text"][:3])]  # three different texts ...
    rows = rows.map(lambda row, i: {"text": first[i % 3]}, with_indices=True)  # ... four rows each
    (tmp_path / "data").mkdir()
    rows.to_parquet(str(tmp_path / "data" / "train.parquet"))  # a local dataset folder, as load_dataset reads it
    torch.manual_seed(0)
    predictor = Predictor.from_pretrained(_save(Retrieval(tiny_config()), tmp_path / "retrieval"))
    index = predictor.build_search_index(str(tmp_path), progress=False)
    assert len(index) == 12 and index.metadata["text_column"] == "text"
    texts = [hit["caption"] for hit in predictor.search_image(rows[0]["image"], k=12)]  # each text once
    assert sorted(texts) == sorted(set(rows["text"])) and len(texts) == 3
    assert len(predictor.search_image(rows[0]["image"], k=2)) == 2
    index.save(tmp_path / "saved-index")
    reopened = Predictor(predictor.model, predictor.processor)
    assert len(reopened.build_search_index(str(tmp_path / "saved-index"))) == 12  # used as is, not re-embedded
    with pytest.raises(InputError, match="Cannot load the dataset"):
        reopened.build_search_index(str(tmp_path / "no-such-dataset"))


def test_a_classifier_cannot_search_or_describe(processor, image):
    with pytest.raises(InputError, match="retrieval"):
        Predictor(_classifier(), processor).build_search_index()
    with pytest.raises(InputError, match="does not write text"):
        Predictor(_classifier(), processor).describe(image)


def test_no_model_given_serves_the_demo_model(tmp_path, monkeypatch):
    monkeypatch.delenv("MM_HUB_MODEL", raising=False)
    folder = _save(_classifier(), tmp_path / "demo-model")  # stands in for the trained demo (never trained in tests)
    calls = []
    sources = resolve_model_sources(None, app_dir=tmp_path)
    [predictor] = Predictor.from_sources(sources, demo_models=lambda: calls.append("demo") or [folder])
    assert calls == ["demo"] and predictor.model_id == folder
    assert "(the built-in demo model)" in predictor.info_markdown()
    with pytest.raises(ModelLoadError, match="No model was given"):
        Predictor.from_sources(sources)


def _with_reports(folder: str, eval_results: dict, vocabulary: list[int] | None) -> str:
    Path(folder, "eval_results.json").write_text(json.dumps(eval_results))
    Path(folder, "training_info.json").write_text(json.dumps({"eval_split": "validation", "text_vocabulary": vocabulary}))
    return folder


def test_the_reports_say_how_good_the_model_is_and_which_words_it_read(tmp_path, hub_repo_id, caplog):
    words = tokenizer()("a red circle", add_special_tokens=False)["input_ids"]
    results = {"eval_accuracy": 0.9975, "eval_loss": 0.1, "heldout_accuracy": 0.9825, "heldout_loss": 0.2}
    folder = _with_reports(_save(_classifier(), tmp_path / "m"), results, words)
    predictor = Predictor.from_pretrained(folder)
    assert predictor.measured_quality() == "accuracy 99.75 % (validation), 98.25 % (heldout)"
    assert "**Measured** accuracy 99.75 % (validation)" in predictor.info_markdown()
    assert predictor.unseen_words("a red circle") == []
    assert predictor.unseen_words("A red dog, a RED unicorn and a dog!") == ["dog", "unicorn", "and"]  # each once
    assert predictor.unseen_words("") == []  # bad texts are the endpoints' errors, not warnings
    # from the Hub, at the model's revision, as from a folder
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(folder_path=folder, repo_id=hub_repo_id)
    pulled = Predictor.from_pretrained(hub_repo_id)
    assert pulled.reports == predictor.reports and pulled.unseen_words("a dog") == ["dog"]

    # Without reports the model still works and says what it does not know.
    bare = Predictor.from_pretrained(_save(_classifier(), tmp_path / "bare"))
    assert bare.measured_quality() is None and bare.unseen_words("a dog") == []
    assert "**Measured** nothing" in bare.info_markdown()
    # Hostile or broken reports are skipped with a log line, never trusted or fatal.
    for name, content in (("eval_results.json", "[1, 2]"), ("training_info.json", '{"text_vocabulary": NaN}')):
        Path(folder, name).write_text(content)
    with caplog.at_level("WARNING"):
        assert load_reports(folder) == {}
    assert "a JSON list, not an object" in caplog.text and "NaN is not a number" in caplog.text
    Path(folder, "eval_results.json").write_bytes(b" " * (MAX_REPORT_BYTES + 1))
    assert "eval_results.json" not in load_reports(folder)
