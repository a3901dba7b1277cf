"""Few-step training runs per task type on small local datasets, plus the CLI's data errors."""

from __future__ import annotations

import json
import random
from collections import Counter

import datasets
import pytest
import yaml
from transformers import AutoModel

from mm_hub import AutoModelForImageTextClassification, AutoModelForImageTextRetrieval
from mm_hub.predictor import Predictor
from mm_hub.shapes import caption_triples, load_shapes, make_shapes_dataset, shapes_cache_folder
from tests.conftest import tokenizer
from tests.data import csv_folder, disk_dataset, jsonl_multilabel, tiny_flags
from training.config import TrainConfig, build_parser
from training.data import RowTransform, drop_words
from training.train import main, pretrained_prefixes


def read(folder, name):
    return json.loads((folder / name).read_text())


def test_single_label_csv_with_unusual_columns_and_string_labels(tmp_path):
    data = csv_folder(tmp_path / "data")
    out = tmp_path / "out"
    metrics = main(
        ["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "Caption Text",
         "--label-column", "Kind", "--eval-fraction", "0.25", *tiny_flags(out)]
    )
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and 0.0 <= metrics["eval_macro_f1"] <= 1.0
    model = AutoModelForImageTextClassification.from_pretrained(out)
    assert model.config.id2label == {0: "angular", 1: "round"}
    assert model.config.problem_type == "single_label_classification"
    info = read(out, "training_info.json")
    assert info["task"] == "image-text-classification" and info["num_train_examples"] == 12
    words = tokenizer()("a red circle blue square green triangle", add_special_tokens=False)["input_ids"]
    assert info["text_vocabulary"] == sorted(words)  # the tokens of the training captions, for the app's warning
    assert info["metrics"] == read(out, "eval_results.json") == metrics
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["data"]["image_column"] == "Picture Path" and saved["train"]["max_steps"] == 2


def test_multilabel_jsonl(tmp_path):
    data = jsonl_multilabel(tmp_path / "data")
    out = tmp_path / "out"
    flags = tiny_flags(out, "--lstm-num-layers", "1", "--word-dropout", "0.3", text="lstm")
    metrics = main(["--dataset", str(data), "--label-column", "tags", *flags])
    assert {"eval_micro_f1", "eval_macro_f1"} <= set(metrics)
    config = AutoModelForImageTextClassification.from_pretrained(out).config
    assert config.lstm_num_layers == 1
    assert read(out, "training_info.json")["hyperparameters"]["word_dropout"] == 0.3
    assert config.problem_type == "multi_label_classification"
    assert sorted(config.label2id) == ["angular", "blue", "green", "red", "round"]


@pytest.mark.parametrize("workers", [0, 2])  # with workers, collation runs in other processes
def test_regression_and_skipped_bad_rows(tmp_path, caplog, workers):
    data = disk_dataset(tmp_path / "data", corrupt=(3, 6), empty_text=(9,))
    out = tmp_path / "out"
    metrics = main(["--dataset", str(data), "--label-column", "score", *tiny_flags(out), "--max-steps", "4",
                    "--dataloader-num-workers", str(workers)])
    assert {"eval_mse", "eval_mae"} <= set(metrics)
    info = read(out, "training_info.json")
    # 4 steps x 4 rows = one pass over 16 rows: every bad row was seen and counted once; the validation split
    # (the first 8 rows) is counted on its own
    assert info["skipped_rows"] == {"train": {"unreadable image": 2, "empty text": 1}, "eval": {"unreadable image": 2}}
    assert "Skipped 3 rows of the train split" in caplog.text
    assert AutoModelForImageTextClassification.from_pretrained(out).config.problem_type == "regression"


def test_strict_fails_on_the_first_bad_row(tmp_path):
    data = disk_dataset(tmp_path / "data", corrupt=(0, 1, 2, 3))
    with pytest.raises(ValueError, match=r"Row \d+ of the train split: unreadable image .*--strict"):
        main(["--dataset", str(data), "--label-column", "category", "--strict", *tiny_flags(tmp_path / "out")])


def test_retrieval_on_shapes_captions(tmp_path):
    out = tmp_path / "out"
    metrics = main(
        ["--task", "retrieval", "--dataset", "shapes",
         "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32,heldout_object_rate=0.5",
         "--text-column", "captions", "--eval-split", "eval", *tiny_flags(out)]
    )
    for key in ("text_to_image_recall@1", "image_to_text_recall@10", "text_to_image_median_rank", "image_to_text_mean_rank"):
        assert f"eval_{key}" in metrics
    assert metrics["eval_text_to_image_recall@10"] == 1.0  # 8 images: every caption's image is in the top 10
    assert read(out, "training_info.json")["task"] == "image-text-retrieval"
    AutoModelForImageTextRetrieval.from_pretrained(out)


def test_streaming_needs_labels_and_runs(tmp_path):
    data = csv_folder(tmp_path / "data")
    flags = ["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "Caption Text",
             "--label-column", "Kind", "--streaming", "--max-eval-samples", "4"]
    with pytest.raises(ValueError, match="pass them with --labels"):
        main([*flags, *tiny_flags(tmp_path / "a")])
    metrics = main([*flags, "--labels", "angular", "round", *tiny_flags(tmp_path / "b")])
    assert "eval_accuracy" in metrics


def test_missing_column_lists_the_real_columns(tmp_path):
    data = csv_folder(tmp_path / "data", count=4)
    with pytest.raises(ValueError, match=r"Column 'caption' \(--text-column\) is not in .*\['Picture Path', 'Caption Text', 'Kind'\]"):
        main(["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "caption", *tiny_flags(tmp_path / "o")])


def test_unknown_eval_label_is_a_clear_error(tmp_path):
    data = csv_folder(tmp_path / "data", count=8)
    with pytest.raises(ValueError, match=r"label 'round' is not one of the known labels \['angular', 'other'\]"):
        main(["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "Caption Text",
              "--label-column", "Kind", "--labels", "angular", "other", *tiny_flags(tmp_path / "o")])


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="--streaming needs --max-steps"):
        main(["--dataset", "x", "--streaming"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"Unknown keys \['learning_rat'\]"):
        main(["--config", str(bad), "--dataset", "x"])
    with pytest.raises(ValueError, match="Split 'dev'"):
        main(["--dataset", "shapes", "--dataset-config", "num_train=4,num_eval=4,num_heldout=0", "--eval-split", "dev",
              *tiny_flags(tmp_path / "o")])
    with pytest.raises(ValueError, match=r"word_dropout must be in \[0, 1\), got 1.0"):
        main(["--dataset", "x", "--word-dropout", "1"])
    with pytest.raises(ValueError, match="takes numbers, got 'image_size=big'"):
        main(["--dataset", "shapes", "--dataset-config", "num_train=4,image_size=big", *tiny_flags(tmp_path / "o")])


def test_word_dropout_drops_training_words_only():
    random.seed(0)
    train = RowTransform(sample_caption=True, word_dropout=0.5)
    texts = train({"image": [None] * 200, "text": ["a red circle on the left"] * 199 + [""]})["text"]
    assert texts[-1] == ""  # an empty text stays empty (the collator then skips and counts it)
    lengths = Counter(len(text.split()) for text in texts[:-1])
    assert 0 not in lengths and lengths[6] < 20 and lengths[1] > 0  # some words go, at least one always stays
    assert all(set(text.split()) <= {"a", "red", "circle", "on", "the", "left"} for text in texts)
    assert drop_words("a red circle", 0.0) == "a red circle"
    caption_lists = {"image": [None], "text": [["a red circle", "a circle"]]}
    assert RowTransform()(caption_lists)["text"] == caption_lists["text"]  # evaluation never drops words


def test_encoders_copied_from_a_trained_model_count_as_pretrained():
    scratch = {"vision_config": {"layer_type": "basic"}, "text_encoder_type": "lstm"}
    # A random-init ResNet and a BiLSTM: only MiniLM's embedding table is pretrained.
    assert pretrained_prefixes(TrainConfig.from_dict(scratch)) == ["mm_hub.text_encoder.embeddings."]
    # --init-encoders-from copies both trained towers, so both train at --encoder-learning-rate.
    copied = TrainConfig.from_dict({**scratch, "init_encoders_from": "outputs/stage1"})
    assert pretrained_prefixes(copied) == ["mm_hub.vision_encoder.", "mm_hub.text_encoder."]


def test_help_documents_every_option():
    text = build_parser().format_help()
    for name in TrainConfig().flat():
        assert "--" + name.replace("_", "-") in text, name


def test_shapes_data_is_rendered_once_then_read_from_the_datasets_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    spec = "num_train=6,num_eval=2,num_heldout=2,image_size=32"
    kwargs = {"task": "classification", "num_train": 6, "num_eval": 2, "num_heldout": 2, "image_size": 32}
    rendered = load_shapes(spec)
    folder = shapes_cache_folder(kwargs)
    assert folder.parent == tmp_path / "cache" / "mm_hub_shapes" and (folder / "dataset_dict.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no partial folder left beside it

    def render(**_):
        raise AssertionError("rendered again")

    monkeypatch.setattr("mm_hub.shapes.make_shapes_dataset", render)
    cached = load_shapes(spec)
    for split in ("train", "eval", "heldout"):
        assert cached[split].to_dict() == rendered[split].to_dict()
    assert shapes_cache_folder({**kwargs, "seed": 1}) != folder
    with pytest.raises(AssertionError, match="rendered again"):  # other arguments, other data
        load_shapes(spec + ",seed=1")
    monkeypatch.undo()

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(blocked / "cache"))
    assert load_shapes(spec)["train"].to_dict() == rendered["train"].to_dict()  # used as rendered
    assert "Could not cache the shapes data" in caplog.text


GENERATION_FLAGS = ["--task", "generation", "--decoder-hidden-size", "16", "--decoder-num-heads", "2",
                    "--decoder-num-layers", "1", "--decoder-max-positions", "32", "--generation-max-new-tokens", "8"]


def test_generation_trains_evaluates_by_writing_and_pushes_with_its_card(tmp_path, hub_server, hub_repo_id):
    data = tmp_path / "data"
    shapes = make_shapes_dataset(num_train=16, num_eval=6, num_heldout=0, image_size=32, task="captioning")
    train = shapes["train"].map(lambda row, i: {"answer": "" if i in (2, 5) else row["answer"]}, with_indices=True)
    datasets.DatasetDict(train=train, validation=shapes["eval"]).save_to_disk(str(data))
    out = tmp_path / "vqa"
    metrics = main(["--dataset", str(data), *tiny_flags(out, text="lstm"), *GENERATION_FLAGS, "--max-steps", "4",
                    "--text-column", "question", "--target-column", "answer", "--eval-strategy", "epoch",
                    "--push-to-hub", "--hub-model-id", hub_repo_id])
    assert {"eval_bleu4", "eval_cider", "eval_exact_match"} <= set(metrics)
    assert "eval_structural_f1" not in metrics  # answers state no (colour, shape, position) triples
    info = read(out, "training_info.json")
    assert info["task"] == "image-text-to-text" and info["skipped_rows"]["train"] == {"empty target": 2}
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "MMHubForConditionalGeneration" and model.config.decoder_vocab is None
    card = hub_server.read(hub_repo_id, "README.md").decode()
    assert "pipeline_tag: image-text-to-text" in card and "type: cider" in card and "- type: bleu4" in card
    assert {"generation_config.json", "generation_mm_hub.py"} <= set(hub_server.files(hub_repo_id))

    captions = tmp_path / "captions"
    metrics = main(["--dataset", str(data), *tiny_flags(captions), *GENERATION_FLAGS, "--max-steps", "2",
                    "--text-column", "none", "--target-column", "caption", "--decoder-vocab", "targets"])
    assert {"eval_structural_precision", "eval_structural_recall", "eval_structural_f1"} <= set(metrics)
    written = AutoModel.from_pretrained(captions).config.decoder_vocab
    words = {token for caption in train["caption"] for token in tokenizer()(caption, add_special_tokens=False)["input_ids"]}
    assert words < set(written) and tokenizer().sep_token_id in written
    with pytest.raises(ValueError, match="needs a --text-column"):
        main(["--dataset", str(data), *tiny_flags(tmp_path / "x"), "--text-column", "none"])


def test_one_generator_learns_to_caption_and_to_answer_from_several_column_pairs(tmp_path, caplog):
    shapes = make_shapes_dataset(num_train=8, num_eval=0, num_heldout=0, image_size=32, task="captioning")
    datasets.DatasetDict(train=shapes["train"], validation=shapes["train"]).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "describer"
    metrics = main(["--dataset", str(tmp_path / "data"), *tiny_flags(out, text="lstm"), *GENERATION_FLAGS,
                    "--decoder-hidden-size", "32", "--generation-max-new-tokens", "16", "--max-steps", "200",
                    "--target-pairs", "none:caption", "question:answer", "--decoder-vocab", "targets",
                    "--learning-rate", "0.01", "--warmup-steps", "0", "--batch-size", "16", "--no-augment"])
    # every example and each pair scored: captions by their structure, answers by exact match
    assert {"eval_cider", "eval_caption_structural_f1", "eval_answer_exact_match"} <= set(metrics)
    assert read(out, "training_info.json")["num_train_examples"] == 16  # one example per pair of each row
    describer = Predictor.from_pretrained(out)
    row = shapes["train"][0]
    assert describer.describe(row["image"], row["question"]) == row["answer"]  # a question gets its answer
    assert caption_triples(describer.describe(row["image"], ""))  # an empty prompt gets a caption

    # a caption dataset without a text column: captions, and the log says why
    renamed = shapes["train"].remove_columns(["question", "answer"]).rename_column("image", "photo")
    datasets.DatasetDict(train=renamed, validation=renamed).save_to_disk(str(tmp_path / "captions"))
    with caplog.at_level("INFO", logger="training.data"):
        main(["--dataset", str(tmp_path / "captions"), *tiny_flags(tmp_path / "c"), *GENERATION_FLAGS,
              "--image-column", "photo", "--max-steps", "1"])
    assert "has no 'text' column: training without a prompt (captions)" in caplog.text
