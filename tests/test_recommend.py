"""Cross-modal recommendation: never the query item, filters respected, exact over the filtered rows, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mm_hub.recommend import recommend
from mm_hub.search import MultimodalIndex
from tests.conftest import tiny_model, tiny_processor
from tests.data import CATEGORIES, catalogue


@pytest.fixture(scope="module")
def rows():
    return catalogue(12)


@pytest.fixture(scope="module")
def index(rows):
    return MultimodalIndex.build(tiny_model("retrieval", seed=0), tiny_processor(), rows, progress=False)


def _items(index):
    return np.stack([index.embedding(row) for row in range(len(index))])


def test_recommend_excludes_the_query_and_ranks_by_item_similarity(index):
    items = _items(index)
    for row in range(len(index)):
        results = recommend(index, row, k=4)
        expected = [int(i) for i in np.argsort(-(items @ items[row])) if i != row][:4]
        assert [r["row"] for r in results] == expected
        assert all(r["score"] <= 1 + 1e-5 for r in results)
    everything = recommend(index, 0, k=50)
    assert len(everything) == len(index) - 1 and 0 not in {r["row"] for r in everything}


def test_a_search_result_or_a_new_item_pair_can_be_the_query(index, rows):
    hit = index.search_text("a red item", k=1)[0]
    assert hit["row"] not in {r["row"] for r in recommend(index, hit, k=5)}
    assert [r["row"] for r in recommend(index, hit, k=5)] == [r["row"] for r in recommend(index, hit["row"], k=5)]
    # The same item given as (image, text), or as a row dict without "row": the catalogue copy is left out.
    pair = (rows[3]["image"], rows[3]["text"])
    by_pair = recommend(index, pair, k=4)
    assert 3 not in {r["row"] for r in by_pair}
    assert [r["row"] for r in by_pair] == [r["row"] for r in recommend(index, 3, k=4)]
    as_dict = {"image": rows[3]["image"], "text": rows[3]["text"]}
    assert [r["row"] for r in recommend(index, as_dict, k=4)] == [r["row"] for r in by_pair]


def test_filters_are_respected_and_exact(index):
    items = _items(index)
    categories = np.array(index.dataset[:]["category"])
    for row in (0, 4, 8):
        results = recommend(index, row, k=3, filter={"category": "hats"})
        allowed = [i for i in np.argsort(-(items @ items[row])) if categories[i] == "hats" and i != row]
        assert [r["row"] for r in results] == [int(i) for i in allowed[:3]]
        assert {r["category"] for r in results} == {"hats"}
    several = recommend(index, 1, k=20, filter={"category": ["shoes", "bags"], "price": [10.0, 11.0, 12.0, 13.0]})
    assert {r["row"] for r in several} == {0, 2, 3}  # shoes/bags priced 10-13, minus the query row 1
    assert recommend(index, 1, k=5, filter={"category": "boots"}) == []


def test_bad_input_is_a_clear_error(index, rows):
    with pytest.raises(ValueError, match="Row 12 is out of range"):
        recommend(index, 12)
    with pytest.raises(ValueError, match="Cannot filter on 'colour'.*'category'"):
        recommend(index, 0, filter={"colour": "red"})
    with pytest.raises(TypeError, match="a row number"):
        recommend(index, "row 3")
    with pytest.raises(ValueError, match="missing \\['text'\\]"):
        recommend(index, {"image": rows[0]["image"]})
    images_only = MultimodalIndex.build(
        tiny_model("retrieval", seed=0), tiny_processor(), rows.select(range(3)), text_column=None, progress=False
    )
    with pytest.raises(ValueError, match="needs item embeddings"):
        recommend(images_only, 0)
    assert set(CATEGORIES) == set(index.dataset[:]["category"])
