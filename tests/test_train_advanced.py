"""Resume, determinism, 2-process DDP, hyper-parameter search, push to the (local) Hub, and the demo preset."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mm_hub import AutoModelForImageTextClassification, AutoModelForImageTextRetrieval
from tests.data import csv_folder, disk_dataset, tiny_flags, torchrun_train
from training.config import resolve_config
from training.data import close_process_group
from training.demo_model import DEMO_PRESET, demo_models, ensure_demo_model
from training.train import Recipe, evaluate_split, main

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out


def csv_flags(data: Path) -> list[str]:
    return ["--dataset", str(data), "--image-column", "Picture Path", "--text-column", "Caption Text", "--label-column", "Kind"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    data = csv_folder(tmp_path / "data")
    common = [*csv_flags(data), "--max-steps", "4", "--no-augment", "--save-total-limit", "3"]
    straight = tmp_path / "straight"
    main([*tiny_flags(straight), *common, "--eval-strategy", "steps", "--eval-steps", "2"])
    assert (straight / "checkpoint-2").is_dir() and (straight / "checkpoint-4").is_dir()
    # A second run that only has the step-2 checkpoint resumes from it and must end where the first one did.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    main([*tiny_flags(resumed), *common, "--eval-strategy", "steps", "--eval-steps", "2", "--resume-from-checkpoint"])
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    first, second = weights(straight), weights(resumed)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], msg=name)
    with pytest.raises(ValueError, match="no checkpoint-\\* folder"):
        main([*tiny_flags(tmp_path / "empty"), *common, "--resume-from-checkpoint", "latest"])


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Four 2-process runs launched together (one torchrun start-up): classification on a map-style and on a
    streamed dataset with bad rows, retrieval with a small eval split, and a 2-trial search on a csv.
    Name -> (output folder, flags)."""
    root = tmp_path_factory.mktemp("ddp")
    data = disk_dataset(root / "data", corrupt=(3, 6), empty_text=(9,))
    runs = {
        name: (root / name, ["--dataset", str(data), "--label-column", "score", *tiny_flags(root / name),
                             "--no-progress", *extra])
        for name, extra in (("map", []), ("streaming", ["--streaming"]))
    }
    runs["retrieval"] = (root / "retrieval", [
        "--task", "retrieval", "--dataset", "shapes", "--text-column", "captions", "--eval-split", "eval",
        "--dataset-config", "num_train=16,num_eval=9,num_heldout=0,image_size=32", *tiny_flags(root / "retrieval"),
        "--eval-batch-size", "2", "--no-progress"])
    csv = csv_folder(root / "csv")
    runs["hpo"] = (root / "hpo", [
        "--dataset", str(csv), "--image-column", "Picture Path", "--text-column", "Caption Text", "--label-column",
        "Kind", "--eval-fraction", "0.25", *tiny_flags(root / "hpo"), "--hpo-trials", "2", "--no-progress"])
    torchrun_train(*(flags for _, flags in runs.values()), port=29533)
    return runs


@pytest.mark.parametrize("run", ["map", "streaming"])
def test_ddp_processes_report_every_skipped_row(ddp_runs, run):
    # Two processes of 4 rows x 2 steps cover the 16 train rows; each sees only its shard of the bad rows.
    info = json.loads((ddp_runs[run][0] / "training_info.json").read_text())
    assert info["num_processes"] == 2
    assert info["skipped_rows"] == {"train": {"unreadable image": 2, "empty text": 1}, "eval": {"unreadable image": 2}}


def test_ddp_retrieval_eval_shards_the_split_and_scores_all_of_it(ddp_runs):
    # 9 eval images over 2 processes (5 + 4, in batches of 2): the gathered metrics equal one process's over the split.
    out, flags = ddp_runs["retrieval"]
    gathered = json.loads((out / "eval_results.json").read_text())
    run = Recipe(resolve_config(flags))
    model = AutoModelForImageTextRetrieval.from_pretrained(out)
    alone = evaluate_split(model, run.eval, run.eval_collator, run.task.evaluation, batch_size=9)
    assert gathered == pytest.approx({f"eval_{key}": value for key, value in alone.items()})
    assert alone["text_to_image_mean_rank"] > 1.0  # a random-ish model: ranks vary, so a lost or doubled shard shows


def test_the_cli_leaves_the_process_group_after_a_finished_run(tmp_path, monkeypatch):
    """A torchrun process that exits with gloo's group still up can abort in its shutdown (SIGABRT after the model is
    written: a finished run reported as failed); `cli` leaves the group once training returns."""
    import torch.distributed as dist

    import training.train as train

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    monkeypatch.setattr(train, "main", lambda argv=None: {})
    try:
        train.cli()
        assert not dist.is_initialized()
    finally:
        close_process_group()


def test_ddp_hpo_runs_each_trial_in_both_processes_and_retrains_the_best(ddp_runs):
    # Only process 0 runs optuna; the others get each trial's values and, at the end, the best run from it.
    out = ddp_runs["hpo"][0]
    best = json.loads((out / "hpo" / "best.json").read_text())["best_hyperparameters"]
    assert len(json.loads((out / "hpo" / "results.json").read_text())) == 2
    assert json.loads((out / "config.json").read_text())["fusion_type"] == best["fusion_type"]
    assert json.loads((out / "training_info.json").read_text())["num_processes"] == 2


def test_demo_preset_runs_a_few_steps_and_is_cached(tiny_demo_cache):
    tmp_path = tiny_demo_cache  # trained there with TINY_DEMO, by ensure_demo_model
    folder = tmp_path / "demo-model"
    # stage 1 is served, not dropped, and a captioner is trained on the second member's stage 1
    assert demo_models(tmp_path, progress=False) == [folder, folder / "retrieval", folder / "captioner"]
    retrieval = json.loads((folder / "retrieval" / "config.json").read_text())
    assert retrieval["architectures"] == ["MMHubForImageTextRetrieval"] and retrieval["text_encoder_type"] == "lstm"
    assert "eval_text_to_image_recall@1" in json.loads((folder / "retrieval" / "eval_results.json").read_text())
    captioner = json.loads((folder / "captioner" / "config.json").read_text())
    assert captioner["architectures"] == ["MMHubForConditionalGeneration"]
    assert "eval_structural_f1" in json.loads((folder / "captioner" / "eval_results.json").read_text())
    train_config = (folder / "captioner" / "train_config.yaml").read_text()
    assert "stage1-seed1" in train_config and "freeze_vision_encoder: true" in train_config
    assert not list(folder.glob("*/checkpoint-*"))
    info = json.loads((folder / "training_info.json").read_text())
    assert {"eval_accuracy", "heldout_accuracy"} <= set(info["metrics"])
    assert info["hyperparameters"]["fusion_type"] == "bilinear"
    assert info["ensemble_members"] == ["member-stage1-seed0", "member-stage1-seed1"]
    config = json.loads((folder / "config.json").read_text())
    assert config["text_encoder_type"] == "lstm" and config["ensemble_size"] == 2
    model = AutoModelForImageTextClassification.from_pretrained(folder)
    assert type(model).__name__ == "MMHubEnsembleForImageTextClassification"
    first, second = (member.mm_hub.vision_encoder.state_dict() for member in model.members)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # stage 1 ran with two seeds
    assert not list(folder.glob("checkpoint-*")) and not list(tmp_path.glob(".demo-model-*"))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path, progress=False) == folder  # reused, not retrained
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert "python -m training.train --config training/configs/demo_classifier.yaml" in DEMO_PRESET.read_text()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(("stage1-", "member-"))]


def test_a_demo_cache_from_other_code_is_not_reused(tmp_path):
    from training.demo_model import (
        CAPTIONER_FOLDER,
        DEMO_FOLDER,
        FINGERPRINT_FILE,
        REQUIRED_FILES,
        RETRIEVAL_FOLDER,
        demo_fingerprint,
        is_complete,
    )

    folder = tmp_path / DEMO_FOLDER
    for sub in ("", RETRIEVAL_FOLDER):
        (folder / sub).mkdir()
        for name in REQUIRED_FILES:
            (folder / sub / name).write_text("{}")
    (folder / FINGERPRINT_FILE).write_text(demo_fingerprint() + "\n")
    assert not is_complete(folder)  # no captioner: made before the demo had one
    (folder / CAPTIONER_FOLDER).mkdir()
    for name in REQUIRED_FILES:
        (folder / CAPTIONER_FOLDER / name).write_text("{}")
    (folder / FINGERPRINT_FILE).unlink()
    assert not is_complete(folder)  # no fingerprint: made before fingerprints, or interrupted
    (folder / FINGERPRINT_FILE).write_text("0" * 64)
    assert not is_complete(folder)  # made by different presets or model code
    (folder / FINGERPRINT_FILE).write_text(demo_fingerprint() + "\n")
    assert is_complete(folder)


def test_demo_seed_benchmark_trains_each_pair_and_scores_a_fresh_draw(tmp_path):
    from benchmarks.bench_demo_seeds import fresh_draw, parse_pair, run

    tiny = {"max_steps": 2, "eval_strategy": "no",
            "dataset_config": "num_train=16,num_eval=8,num_heldout=8,image_size=48"}
    stage1 = {"max_steps": 2, "dataset_config": "num_train=16,num_eval=8,num_heldout=0,image_size=48"}
    results = run([(0, 0), (0, 1)], draw_seed=2, draw_size=6, work=tmp_path, stage1=stage1, **tiny)
    assert [(r["stage1_seed"], r["stage2_seed"]) for r in results["runs"]] == [(0, 0), (0, 1)]
    assert len(list(tmp_path.glob("stage1-seed*"))) == 1  # the pairs share their stage-1 run
    for result in results["runs"]:
        assert all(0.0 <= result[key] <= 1.0 for key in ("preset_eval", "preset_heldout", "draw_eval", "draw_heldout"))
    held = [result["draw_heldout"] for result in results["runs"]]  # the summary is of these runs
    assert results["summary"]["draw_heldout"] == pytest.approx({"min": min(held), "mean": statistics.mean(held),
                                                                "max": max(held)})
    draw = fresh_draw(2, 6)
    assert len(draw["heldout"]) == 6 and draw["eval"][0]["image"].size == (48, 48)  # the preset's image size
    assert fresh_draw(2, 6)["eval"]["text"] == draw["eval"]["text"] != fresh_draw(3, 6)["eval"]["text"]
    assert parse_pair("1:0") == (1, 0)
    with pytest.raises(argparse.ArgumentTypeError, match="STAGE1_SEED:STAGE2_SEED"):
        parse_pair("1")


def test_demo_ensemble_benchmark_scores_members_and_pairs_and_reuses_members(tmp_path):
    from benchmarks.bench_demo_ensembles import run

    tiny = {"max_steps": 2, "eval_strategy": "no",
            "dataset_config": "num_train=16,num_eval=8,num_heldout=8,image_size=48"}
    stage1 = {"max_steps": 2, "dataset_config": "num_train=16,num_eval=8,num_heldout=0,image_size=48"}
    results = run([0, 1, 2], draw_seed=2, draw_size=6, work=tmp_path, stage1=stage1, **tiny)
    assert [m["stage1_seed"] for m in results["members"]] == [0, 1, 2]
    assert [p["stage1_seeds"] for p in results["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    held = [pair["draw_heldout"] for pair in results["pairs"]]  # the summary is of these pairs
    assert results["summary"]["pairs"]["draw_heldout"] == pytest.approx(
        {"min": min(held), "mean": statistics.mean(held), "max": max(held), "at_least_95": sum(h >= 0.95 for h in held)}
    )
    stamp = (tmp_path / "stage2-seed0-0" / "model.safetensors").stat().st_mtime_ns
    assert run([0, 1], 2, 6, tmp_path, stage1, **tiny)["members"] == results["members"][:2]  # reused, not retrained
    assert (tmp_path / "stage2-seed0-0" / "model.safetensors").stat().st_mtime_ns == stamp


def test_side_by_side_chains_finish_and_a_failed_run_is_reported_with_its_output(tmp_path):
    from training.demo_model import STAGE1_PRESET, demo_config, run_side_by_side

    tiny = {"max_steps": 2, "dataset_config": "num_train=16,num_eval=8,num_heldout=0,image_size=48"}
    first, second, other = (demo_config(tmp_path / name, progress=False, preset=STAGE1_PRESET, **tiny)
                            for name in ("first", "second", "other"))
    bad = demo_config(tmp_path / "bad", progress=False, preset=STAGE1_PRESET, **tiny, dataset=str(tmp_path / "gone"))
    with pytest.raises(RuntimeError, match=r"(?s)training\.train --config .*bad\.yaml failed:.*gone"):
        run_side_by_side([[first, bad, second], [other]])
    assert (tmp_path / "first" / "config.json").is_file()  # the chain ran up to its failed run
    assert not (tmp_path / "second").exists()  # and stopped there
    assert (tmp_path / "other" / "config.json").is_file()  # the other chain was not cut short
    assert yaml.safe_load((tmp_path / "other.yaml").read_text())["train"]["seed"] == 0
