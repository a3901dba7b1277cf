"""MultimodalIndex: build, search, save/load, approximate vs exact, resume, streaming, model checks, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, IterableDataset, load_dataset

from mm_hub.embeddings import embed_images, embed_texts, normalize
from mm_hub.faiss_index import FLAT_MAX_VECTORS, choose_index_type, default_nprobe, new_faiss_index
from mm_hub.search import METADATA_FILE, MultimodalIndex
from tests.conftest import save_tiny_model, tiny_model, tiny_processor
from tests.data import catalogue


@pytest.fixture(scope="module")
def model():
    return tiny_model("retrieval", seed=0)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def rows():
    return catalogue(12)


@pytest.fixture(scope="module")
def index(model, processor, rows):
    return MultimodalIndex.build(model, processor, rows, chunk_size=5, batch_size=4, progress=False)


def _ids(results):
    return [(r["row"], round(r["score"], 5)) for r in results]


def test_embeddings_are_the_models_and_searches_rank_by_cosine(index, model, processor, rows):
    images = embed_images(model, processor, rows[:]["image"])
    texts = embed_texts(model, processor, rows[:]["text"])
    np.testing.assert_allclose(np.asarray(index.dataset[:]["image_embeds"]), images, atol=1e-5)
    np.testing.assert_allclose(np.asarray(index.dataset[:]["item_embeds"]), normalize(images + texts), atol=1e-5)

    query = "a red item number 4"
    expected = np.argsort(-(images @ embed_texts(model, processor, [query])[0]))[:5]
    results = index.search_text(query, k=5)
    assert [r["row"] for r in results] == expected.tolist()
    assert set(results[0]) == {"score", "row", "image", "text", "category", "price"}
    assert results[0]["text"] == rows[int(expected[0])]["text"]

    by_text = np.argsort(-(texts @ embed_images(model, processor, [rows[:]["image"][3]])[0]))[:4]
    assert [r["row"] for r in index.search_image(rows[:]["image"][3], k=4)] == by_text.tolist()
    # An (image, text) query of an indexed item finds that item first, with cosine 1.
    best = index.search(image=rows[:]["image"][7], text=rows[:]["text"][7], k=3)[0]
    assert best["row"] == 7 and best["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(index.search_text(query, k=100)) == len(rows)


def test_save_load_gives_the_same_results_and_a_hub_dataset_folder(index, model, processor, rows, tmp_path):
    folder = index.save(tmp_path / "idx")
    before = (
        _ids(index.search_text("a green item", k=6)),
        _ids(index.search_image(rows[:]["image"][2], k=6)),
        _ids(index.search(image=rows[:]["image"][5], text="a blue item", k=6)),
    )
    loaded = MultimodalIndex.load(folder, model, processor)
    after = (
        _ids(loaded.search_text("a green item", k=6)),
        _ids(loaded.search_image(rows[:]["image"][2], k=6)),
        _ids(loaded.search(image=rows[:]["image"][5], text="a blue item", k=6)),
    )
    assert after == before
    assert loaded.metadata == index.metadata and len(loaded) == len(rows)
    # Saving over an existing index replaces it whole; the folder is a loadable Hub dataset.
    index.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    reloaded = load_dataset(str(folder), split="train")
    assert reloaded["text"] == rows[:]["text"] and "item_embeds" in reloaded.column_names
    assert "configs:" in (folder / "README.md").read_text()


def test_load_without_a_model_reloads_the_recorded_one(model, processor, rows, tmp_path):
    model_dir = Path(save_tiny_model(tmp_path / "model", "retrieval", seed=0))
    built = MultimodalIndex.build(model, processor, rows, model_id=str(model_dir), progress=False)
    folder = built.save(tmp_path / "idx")
    loaded = MultimodalIndex.load(folder)
    assert _ids(loaded.search_text("a yellow item", k=4)) == _ids(built.search_text("a yellow item", k=4))
    assert json.loads((folder / METADATA_FILE).read_text())["model"]["model_id"] == str(model_dir)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_indexes_agree_with_exact(index_type):
    rng = np.random.default_rng(0)
    centers = normalize(rng.normal(size=(20, 32)))
    data = normalize(centers[rng.integers(0, 20, 3000)] + 0.15 * rng.normal(size=(3000, 32)))
    queries = normalize(data[:100] + 0.05 * rng.normal(size=(100, 32)))
    exact, _ = new_faiss_index(data, "flat")
    approx, params = new_faiss_index(data, index_type)
    exact.add(data)
    approx.add(data)
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.9, (index_type, params, recall)


def test_auto_picks_exact_search_for_small_collections_and_ivf_for_large_ones(index):
    assert index.metadata["index_type"] == "flat"  # built with the default, "auto", over a few rows
    assert choose_index_type(FLAT_MAX_VECTORS) == "flat" and choose_index_type(FLAT_MAX_VECTORS + 1) == "ivf"
    vectors = normalize(np.random.default_rng(0).normal(size=(FLAT_MAX_VECTORS + 1, 8)).astype(np.float32))
    _, params = new_faiss_index(vectors, "auto")
    assert params["index_type"] == "ivf" and params["nprobe"] == default_nprobe(params["nlist"]) == 23  # sqrt(512)


def test_approximate_multimodal_index_matches_flat_on_a_small_set(index, model, processor, rows):
    for index_type in ("ivf", "hnsw"):
        approx = MultimodalIndex.build(model, processor, rows, index_type=index_type, progress=False)
        assert approx.metadata["index_type"] == index_type
        for query in ("a red item", "a blue item number 9"):
            assert [r["row"] for r in approx.search_text(query, k=3)] == [
                r["row"] for r in index.search_text(query, k=3)
            ]


def test_several_captions_per_row_use_their_normalised_mean(model, processor, rows):
    captions = [[text, f"{text} on a table"] for text in rows[:]["text"][:4]]
    data = Dataset.from_dict({"image": rows[:]["image"][:4], "captions": captions})
    built = MultimodalIndex.build(model, processor, data, text_column="captions", progress=False)
    expected = normalize(embed_texts(model, processor, captions[2]).mean(0, keepdims=True))[0]
    np.testing.assert_allclose(built.embedding(2, "text_embeds"), expected, atol=1e-5)
    assert built.search_image(rows[:]["image"][0], k=1)[0]["captions"] in captions


def test_interrupted_build_resumes_from_saved_chunks(model, processor, rows, tmp_path, monkeypatch):
    work = tmp_path / "work"
    full_batches = []
    original = type(model).get_image_features

    def counting(self, pixel_values, normalize=True):
        if pixel_values.shape[0] == 4:  # dataset batches (the fingerprint probe is one image)
            full_batches.append(1)
            if crash and len(full_batches) == 2:
                raise KeyboardInterrupt("killed")
        return original(self, pixel_values, normalize)

    monkeypatch.setattr(type(model), "get_image_features", counting)
    crash = True
    with pytest.raises(KeyboardInterrupt):
        MultimodalIndex.build(model, processor, rows, work_dir=work, chunk_size=4, batch_size=4, progress=False)
    assert sorted(p.name for p in work.glob("chunk-*")) == ["chunk-000000"]
    crash, full_batches[:] = False, []
    resumed = MultimodalIndex.build(model, processor, rows, work_dir=work, chunk_size=4, batch_size=4, progress=False)
    assert len(full_batches) == 2  # chunks 1 and 2 only
    monkeypatch.undo()
    fresh = MultimodalIndex.build(model, processor, rows, chunk_size=4, batch_size=4, progress=False)
    np.testing.assert_allclose(
        np.asarray(resumed.dataset[:]["item_embeds"]), np.asarray(fresh.dataset[:]["item_embeds"])
    )
    with pytest.raises(ValueError, match="different embedding run"):
        MultimodalIndex.build(model, processor, rows, work_dir=work, chunk_size=3, progress=False)


def test_streaming_dataset_gives_the_same_index(index, model, processor, rows):
    streamed = MultimodalIndex.build(
        model, processor, rows.to_iterable_dataset(), chunk_size=5, dataset_id="catalogue", progress=False
    )
    assert len(streamed) == len(rows)
    np.testing.assert_allclose(
        np.asarray(streamed.dataset[:]["item_embeds"]), np.asarray(index.dataset[:]["item_embeds"]), atol=1e-6
    )
    assert _ids(streamed.search_text("a red item", k=5)) == _ids(index.search_text("a red item", k=5))


def test_mismatched_model_is_a_clear_error(index, processor, tmp_path):
    folder = index.save(tmp_path / "idx")
    with pytest.raises(ValueError, match="8-d embeddings but the query model makes 16-d"):
        MultimodalIndex.load(folder, tiny_model("retrieval", seed=0, projection_dim=16), processor)
    with pytest.raises(ValueError, match="same config but different weights"):
        MultimodalIndex.load(folder, tiny_model("retrieval", seed=1), processor)
    with pytest.raises(ValueError, match="config differs"):
        index.attach_model(tiny_model("retrieval", seed=0, logit_scale_init_value=1.0), processor)
    with pytest.raises(ValueError, match="has 16 dimensions; this index holds 8-d"):
        index.search_embedding(np.ones(16, dtype=np.float32), "image_embeds")


def test_bad_input_is_a_clear_error(model, processor, rows, tmp_path):
    with pytest.raises(ValueError, match="neither an index folder nor a dataset repo"):
        MultimodalIndex.load(tmp_path / "missing-index")
    with pytest.raises(ValueError, match="is not an mm_hub index"):
        MultimodalIndex.load(tmp_path)
    with pytest.raises(ValueError, match="dataset is empty"):
        MultimodalIndex.build(model, processor, rows.select([]), progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        nothing = IterableDataset.from_generator(lambda: iter(()), features=rows.features)
        MultimodalIndex.build(model, processor, nothing, progress=False)
    with pytest.raises(ValueError, match="text_column='caption' is not a column"):
        MultimodalIndex.build(model, processor, rows, text_column="caption", progress=False)
    with pytest.raises(ValueError, match="index_type='annoy'"):
        MultimodalIndex.build(model, processor, rows, index_type="annoy", progress=False)
    with pytest.raises(TypeError, match="retrieval model"):
        MultimodalIndex.build(object(), processor, rows, progress=False)
    texts_only = MultimodalIndex.build(model, processor, rows.select(range(3)), image_column=None, progress=False)
    with pytest.raises(ValueError, match="no 'image_embeds'"):
        texts_only.search_text("a red item")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        texts_only.search_image(rows[:]["image"][0], k=0)
    with pytest.raises(TypeError, match="text must be a str"):
        texts_only.search(text=3)


def test_sharded_embedding_passes_make_the_same_rows_as_one(model, processor, rows, tmp_path):
    from mm_hub.embeddings import embed_dataset

    work = tmp_path / "work"
    assert embed_dataset(model, processor, rows, work, chunk_size=3, progress=False, shard=(1, 2)) is None
    chunks = sorted(path.name for path in work.glob("chunk-*"))
    assert chunks == [f"chunk-{n:06d}" for n in range(1, -(-len(rows) // 3), 2)]  # its own chunks only: 1, 3, ...
    embed_dataset(model, processor, rows, work, chunk_size=3, progress=False, shard=(0, 2))
    sharded, _ = embed_dataset(model, processor, rows, work, chunk_size=3, progress=False)  # every chunk is done
    single, _ = embed_dataset(model, processor, rows, tmp_path / "single", chunk_size=3, progress=False)
    assert sharded["text_embeds"] == single["text_embeds"] and sharded["image_embeds"] == single["image_embeds"]
    for bad in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="shard must be"):
            embed_dataset(model, processor, rows, work, shard=bad)
    with pytest.raises(ValueError, match="map-style dataset"):
        embed_dataset(model, processor, rows.to_iterable_dataset(), tmp_path / "stream", shard=(0, 2))
