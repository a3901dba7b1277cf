"""`python -m training.index`: build from a saved model + dataset folder, resume, push to the (local) Hub, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_hub.search import METADATA_FILE, MultimodalIndex
from tests.conftest import save_tiny_model
from tests.data import catalogue
from training.index import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return Path(save_tiny_model(tmp_path_factory.mktemp("model") / "retrieval-model", "retrieval"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "catalogue"
    catalogue(10).save_to_disk(str(folder))
    return folder


def test_cli_builds_pushes_and_the_pushed_index_reloads(model_dir, data_dir, tmp_path, hub_server, hub_repo_id):
    out = tmp_path / "catalogue-index"
    index = main(
        [
            "--model",
            str(model_dir),
            "--dataset",
            str(data_dir),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--chunk-size",
            "4",
            "--index-type",
            "hnsw",
            "--push-to-hub",
            hub_repo_id,
            "--no-progress",
        ]
    )
    assert len(index) == 10 and index.metadata["index_type"] == "hnsw"
    assert not (tmp_path / "catalogue-index.partial").exists()  # chunks removed once the index is saved
    pushed = hub_server.files(hub_repo_id, repo_type="dataset")
    assert {METADATA_FILE, "README.md", "faiss/image_embeds.faiss", "faiss/item_embeds.faiss"} <= set(pushed)
    assert any(name.startswith("data/") and name.endswith(".parquet") for name in pushed)
    assert json.loads(pushed[METADATA_FILE])["model"]["model_id"] == str(model_dir)
    assert len(hub_server.commits(hub_repo_id, repo_type="dataset")) >= 1

    from_hub = MultimodalIndex.load(hub_repo_id)  # downloads, then loads the recorded model at the first query
    local = MultimodalIndex.load(out)
    for query in ("a red item", "a blue item number 6"):
        assert [(r["row"], round(r["score"], 5)) for r in from_hub.search_text(query, k=5)] == [
            (r["row"], round(r["score"], 5)) for r in local.search_text(query, k=5)
        ]


def test_cli_streaming_texts_only_with_row_limit(model_dir, data_dir, tmp_path):
    out = tmp_path / "texts"
    index = main(
        [
            "--model",
            str(model_dir),
            "--dataset",
            str(data_dir),
            "--out",
            str(out),
            "--streaming",
            "--image-column",
            "none",
            "--max-rows",
            "6",
            "--no-progress",
        ]
    )
    assert len(index) == 6 and index.metadata["embedding_columns"] == ["text_embeds"]
    assert index.search_image(catalogue(1)[0]["image"], k=2)[0]["text"].startswith("a ")
    with pytest.raises(ValueError, match="no 'image_embeds'"):
        index.search_text("a red item")


def test_cli_reports_bad_input(model_dir, data_dir, tmp_path):
    with pytest.raises(ValueError, match="no split 'test'"):
        main(["--model", str(model_dir), "--dataset", str(data_dir), "--out", str(tmp_path / "x"), "--split", "test"])
    with pytest.raises(ValueError, match="text_column='caption' is not a column"):
        main(
            [
                "--model",
                str(model_dir),
                "--dataset",
                str(data_dir),
                "--out",
                str(tmp_path / "x"),
                "--text-column",
                "caption",
            ]
        )
    with pytest.raises(SystemExit):
        main(
            ["--model", str(model_dir), "--dataset", str(data_dir), "--out", str(tmp_path / "x"), "--index-type", "lsh"]
        )


@pytest.mark.slow
def test_torchrun_shards_the_embedding_pass_and_writes_the_same_index(model_dir, data_dir, tmp_path):
    import os
    import subprocess
    import sys

    from tests.data import ROOT

    flags = ["--model", str(model_dir), "--dataset", str(data_dir), "--batch-size", "2", "--chunk-size", "3",
             "--no-progress"]
    single = main([*flags, "--out", str(tmp_path / "single")])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
               "-m", "training.index", *flags, "--out", str(tmp_path / "sharded")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Indexed 10 rows") == 1  # the first process builds the one index
    sharded = MultimodalIndex.load(tmp_path / "sharded", *_model(model_dir))
    assert len(sharded) == len(single) == 10 and not (tmp_path / "sharded.partial").exists()
    for column in single.metadata["embedding_columns"]:
        for row in range(10):
            assert sharded.embedding(row, column) == pytest.approx(single.embedding(row, column), abs=1e-6)
    assert [r["row"] for r in sharded.search_text("a red item", k=5)] == [r["row"] for r in single.search_text(
        "a red item", k=5)]


def _model(folder: Path):
    from mm_hub import MMHubForImageTextRetrieval
    from mm_hub.loading import load_model

    return load_model(folder, head=MMHubForImageTextRetrieval)


def test_training_and_indexing_read_a_dataset_the_same_way(model_dir, tmp_path):
    # A csv with relative image paths (taken from the csv's folder, as training takes them) and rows that training
    # would skip: the index leaves out the same rows, under the same reasons.
    from tests.data import csv_folder

    table_file = csv_folder(tmp_path / "csv", count=6)
    table = table_file.read_text().splitlines()
    table[2] = table[2].replace(table[2].split(",")[0], "images/missing.png", 1)  # row 1: no such image
    table[4] = ",".join(table[4].split(",")[:1] + [""] + table[4].split(",")[2:])  # row 3: an empty caption
    table_file.write_text("\n".join(table) + "\n")
    index = main(["--model", str(model_dir), "--dataset", str(table_file), "--image-column", "Picture Path",
                  "--text-column", "Caption Text", "--out", str(tmp_path / "index"), "--no-progress"])
    assert len(index) == 4 and index.metadata["skipped_rows"] == {"unreadable image": [1], "empty text": [3]}
