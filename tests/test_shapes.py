"""The built-in shapes dataset: deterministic, balanced, compositional held-out split, captions true/false as labelled."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from mm_hub.shapes import COLOURS, HELDOUT_PAIRS, LABELS, SHAPES, ShapeSpec, make_shapes_dataset, render_scene

# "a red circle on the left", "a red shape", "a triangle in the center": (colour or None, shape or "shape", position)
CAPTION = re.compile(rf"a (?:({'|'.join(COLOURS)}) )?({'|'.join(SHAPES)}|shape)(?: (?:on|in) the (\w+))?$")


@pytest.fixture(scope="module")
def shapes():
    return make_shapes_dataset(num_train=120, num_eval=40, num_heldout=40, image_size=48, seed=3)


def dominant_colours(image) -> dict[str, set[str]]:
    """Colours found in each third of a rendered scene (exact palette pixels)."""
    array = np.asarray(image)
    third = array.shape[1] // 3
    found = {}
    for index, position in enumerate(("left", "center", "right")):
        cell = array[:, index * third : (index + 1) * third].reshape(-1, 3)
        found[position] = {name for name, rgb in COLOURS.items() if (cell == rgb).all(axis=1).sum() > 10}
    return found


def test_splits_columns_and_balance(shapes):
    assert set(shapes) == {"train", "eval", "heldout"}
    assert shapes["train"].num_rows == 120 and shapes["heldout"].num_rows == 40
    assert shapes["train"].features["label"].names == LABELS
    assert Counter(shapes["train"]["label"]) == {0: 60, 1: 60}
    assert shapes["train"][0]["image"].size == (48, 48)


def test_deterministic(shapes):
    again = make_shapes_dataset(num_train=120, num_eval=40, num_heldout=40, image_size=48, seed=3)
    assert again["train"]["text"] == shapes["train"]["text"]
    assert np.array_equal(np.asarray(again["heldout"][7]["image"]), np.asarray(shapes["heldout"][7]["image"]))
    other = make_shapes_dataset(num_train=120, num_eval=0, num_heldout=0, image_size=48, seed=4)
    assert other["train"]["text"] != shapes["train"]["text"]


def test_heldout_pairs_never_named_in_training(shapes):
    for split, heldout in (("train", False), ("eval", False), ("heldout", True)):
        for text in shapes[split]["text"]:
            colour, shape, _ = CAPTION.match(text).groups()
            assert ((colour, shape) in HELDOUT_PAIRS) == heldout, (split, text)


def test_text_alone_does_not_tell_the_label(shapes):
    # Each caption wording appears with both labels across the training split far more than by chance would allow
    # if the text decided the label; a text-only majority vote stays near chance.
    by_text: dict[str, Counter] = {}
    for text, label in zip(shapes["train"]["text"], shapes["train"]["label"]):
        by_text.setdefault(re.sub(r" (on|in) the \w+", "", text), Counter())[label] += 1
    majority = sum(max(counts.values()) for counts in by_text.values())
    assert majority / shapes["train"].num_rows < 0.75


def test_captions_are_true_exactly_when_labelled_match(shapes):
    for row in shapes["eval"]:
        colour, shape, position = CAPTION.match(row["text"]).groups()
        cells = dominant_colours(row["image"])
        colour_present = any(colour in colours for colours in cells.values()) if position is None else colour in cells[position]
        if row["label"] == 1:
            assert colour_present, row["text"]


def test_render_scene_places_colours_in_their_cells():
    image = render_scene([("red", "circle", "left"), ShapeSpec("blue", "square", "right")], image_size=60, seed=1)
    cells = dominant_colours(image)
    assert cells["left"] == {"red"} and cells["right"] == {"blue"} and cells["center"] == set()
    assert np.array_equal(np.asarray(image), np.asarray(render_scene([("red", "circle", "left"), ("blue", "square", "right")], 60, 1)))


def test_retrieval_variant_has_several_true_captions():
    data = make_shapes_dataset(num_train=10, num_eval=4, num_heldout=0, task="retrieval", captions_per_image=3)
    assert data["train"].column_names == ["image", "captions"]
    for row in data["train"]:
        assert len(row["captions"]) == 3
        cells = dominant_colours(row["image"])
        for caption in row["captions"]:
            for part in caption.split(" and "):
                colour, _, position = CAPTION.match(part).groups()
                assert colour is None or colour in (cells[position] if position else set().union(*cells.values()))


def test_retrieval_variant_names_heldout_pairs_only_in_heldout():
    data = make_shapes_dataset(num_train=60, num_eval=20, num_heldout=20, task="retrieval", image_size=48, seed=1)
    for split in ("train", "eval", "heldout"):
        for captions in data[split]["captions"]:
            named = {CAPTION.match(part).groups()[:2] for part in captions[0].split(" and ")}
            assert bool(named & HELDOUT_PAIRS) == (split == "heldout"), (split, captions)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_retrieval_variant_describes_heldout_objects_by_one_attribute(rate):
    data = make_shapes_dataset(num_train=30, num_eval=0, num_heldout=0, task="retrieval", heldout_object_rate=rate)
    captions = [caption for row in data["train"]["captions"] for caption in row]
    parts = [CAPTION.match(part).groups() for caption in captions for part in caption.split(" and ")]
    partial = [(colour, shape) for colour, shape, _ in parts if colour is None or shape == "shape"]
    # rate 0: every shape is a training pair, named in full; rate 1: every shape is a held-out pair, named by one
    # attribute, and both kinds of partial name occur.
    assert len(partial) == (len(parts) if rate == 1.0 else 0)
    if rate == 1.0:
        assert {colour is None for colour, _ in partial} == {True, False}


def test_partial_captions_state_one_attribute_truthfully():
    data = make_shapes_dataset(
        num_train=80, num_eval=20, num_heldout=20, image_size=48, seed=2, partial_caption_rate=1.0
    )
    stated = Counter()
    for split in ("train", "eval"):
        for row in data[split]:
            colour, shape, position = CAPTION.match(row["text"]).groups()
            assert (colour is None) != (shape == "shape"), row["text"]  # exactly one of colour and shape
            stated["colour" if colour else "shape"] += 1
            if colour:  # colour claims are checkable from the pixels, true and false alike
                cells = dominant_colours(row["image"])
                present = colour in cells[position] if position else any(colour in found for found in cells.values())
                assert present == (row["label"] == 1), row["text"]
    assert min(stated.values()) > 20
    assert Counter(data["train"]["label"]) == {0: 40, 1: 40}
    # The held-out split is untouched: full captions of held-out pairs, the same rows as without partial captions.
    plain = make_shapes_dataset(num_train=0, num_eval=0, num_heldout=20, image_size=48, seed=2)
    assert data["heldout"]["text"] == plain["heldout"]["text"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "ranking"}, "task must be one of"),
        ({"num_train": -1}, "num_train must be a non-negative integer"),
        ({"num_train": 0, "num_eval": 0, "num_heldout": 0}, "at least one row"),
        ({"task": "retrieval", "heldout_object_rate": 1.5}, "heldout_object_rate must be between 0 and 1"),
        ({"partial_caption_rate": -0.1}, "partial_caption_rate must be between 0 and 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(**kwargs)


def test_bad_scene():
    with pytest.raises(ValueError, match="Unknown colour 'purple'"):
        render_scene([("purple", "circle", "left")])
    with pytest.raises(ValueError, match="share a position"):
        render_scene([("red", "circle", "left"), ("blue", "square", "left")])
    with pytest.raises(TypeError, match="Expected a ShapeSpec"):
        render_scene(["red circle"])
