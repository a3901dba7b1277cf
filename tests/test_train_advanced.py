"""Resume, determinism, 2-process DDP, hyper-parameter search, push to the (local) Hub, and the demo preset."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train_data import csv_folder, tiny_flags
from training.demo import DEMO_PRESET, ensure_demo_model
from training.train import main

ROOT = Path(__file__).resolve().parents[1]


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


def test_two_process_ddp_run_finishes(tmp_path):
    data = csv_folder(tmp_path / "data")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "training.train", *csv_flags(data), *tiny_flags(out), "--no-progress", "--torch-threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "training_info.json").read_text())
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and info["metrics"]["eval_accuracy"] >= 0.0
    assert "world_size=2" in result.stderr or state["train_batch_size"] == 4  # per-device batch, 2 processes


def test_hpo_two_trials_saves_table_and_retrains_the_best(tmp_path):
    data = csv_folder(tmp_path / "data")
    out = tmp_path / "out"
    main([*csv_flags(data), *tiny_flags(out), "--eval-strategy", "epoch", "--hpo-trials", "2",
          "--hpo-fusion-types", "concat", "gated"])
    with open(out / "hpo" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["trial"] for row in rows] == ["0", "1"]
    assert {row["fusion_type"] for row in rows} <= {"concat", "gated"}
    best = json.loads((out / "hpo" / "best.json").read_text())
    final = json.loads((out / "config.json").read_text())
    assert final["fusion_type"] == best["best_hyperparameters"]["fusion_type"]
    assert final["dropout"] == pytest.approx(best["best_hyperparameters"]["dropout"])
    assert (out / "eval_results.json").is_file()


def test_push_to_hub_after_training(tmp_path, hub_server, hub_repo_id):
    data = csv_folder(tmp_path / "data", count=8)
    out = tmp_path / "out"
    main([*csv_flags(data), *tiny_flags(out), "--push-to-hub", "--hub-model-id", hub_repo_id])
    files = set(hub_server.files(hub_repo_id))
    assert {"config.json", "model.safetensors", "modeling_mm_hub.py", "processor_config.json",
            "training_info.json", "eval_results.json", "README.md"} <= files
    card = hub_server.read(hub_repo_id, "README.md").decode()
    assert "eval_accuracy" in card or "accuracy" in card


def test_demo_preset_runs_a_few_steps_and_is_cached(tmp_path):
    folder = ensure_demo_model(
        tmp_path, progress=False, max_steps=2,
        dataset_config="num_train=16,num_eval=8,num_heldout=8,image_size=64", eval_strategy="no",
    )
    assert folder == tmp_path / "demo-model"
    info = json.loads((folder / "training_info.json").read_text())
    assert {"eval_accuracy", "heldout_accuracy"} <= set(info["metrics"])
    assert info["hyperparameters"]["fusion_type"] == "attention"
    assert json.loads((folder / "config.json").read_text())["text_encoder_type"] == "lstm"
    assert not list(folder.glob("checkpoint-*")) and not list(tmp_path.glob(".demo-model-*"))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path, progress=False) == folder  # reused, not retrained
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert "python -m training.train --config training/configs/demo.yaml" in DEMO_PRESET.read_text()
