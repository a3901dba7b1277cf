"""Runs every command of README.md's train section, in order, against the local Hub and local files, then the
by-hand demo commands of docs/demo-model.md.

Each `python -m training.train` line runs through `training.train.main` with its exact arguments plus tiny-model
flags appended (`tests.data.readme_line_flags`: a 32 px random ResNet, a 1-layer text tower, 2 steps, 16 scenes for a
preset on the shapes data; the line's own seed kept), because the presets' real towers (ResNet-18, MiniLM), data and
epochs do not fit a unit test; the flags only override sizes, never the data source, task or outputs the line asks
for. The `torchrun` line runs as a real 2-process (gloo) DDP job, in the background while the later lines run.
"""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from mm_hub import AutoModelForImageTextRetrieval
from tests.conftest import readme_commands, run_command
from tests.data import ROOT, csv_folder, readme_line_flags, torchrun_train
from training.ensemble import main as ensemble_main
from training.train import main

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out

README = ROOT / "README.md"


def demo_commands() -> list[str]:
    """The command lines of docs/demo-model.md's bash block (the demo model by hand)."""
    (block,) = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "demo-model.md").read_text(), flags=re.S)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_train_section_runs(tmp_path, monkeypatch, hub_server):
    monkeypatch.chdir(tmp_path)
    csv_folder(tmp_path / "data", name="pairs.csv")
    lines = readme_commands("train") + demo_commands()
    assert len(lines) == 5 + 5
    with ThreadPoolExecutor(1) as background:  # its own output folder: nothing after it reads what it writes
        for line in lines:
            argv = shlex.split(line)
            if argv[:2] == ["python", "-c"]:
                run_command(argv, monkeypatch)
            elif argv[:3] == ["python", "-m", "training.train"]:
                main([*argv[3:], *readme_line_flags(argv[3:])])
            elif argv[:3] == ["python", "-m", "training.ensemble"]:
                ensemble_main([*argv[3:], "--no-progress"])
            else:
                assert argv[:4] == ["torchrun", "--nproc_per_node", "2", "-m"], line
                args = argv[5:]
                ddp = background.submit(torchrun_train, [*args, *readme_line_flags(args)], port=29531)
        ddp.result()

    # the Hub dataset, then a model trained on it and pushed with its card and reports
    assert {"train", "eval", "heldout"} <= {p.split("/")[-1].split("-")[0]
                                             for p in hub_server.files("your-name/shapes", repo_type="dataset")}
    pushed = set(hub_server.files("your-name/mm-hub-shapes"))
    assert {"model.safetensors", "README.md", "training_info.json", "eval_results.json"} <= pushed
    info = json.loads(hub_server.read("your-name/mm-hub-shapes", "training_info.json"))
    assert info["dataset"] == "your-name/shapes" and info["num_train_examples"] == 1000
    # the csv with its own column names
    config = json.loads((tmp_path / "outputs/csv-model/config.json").read_text())
    assert config["id2label"] == {"0": "angular", "1": "round"}
    # retrieval on the shapes captions
    assert "eval_text_to_image_recall@1" in json.loads((tmp_path / "outputs/my-retrieval/eval_results.json").read_text())
    AutoModelForImageTextRetrieval.from_pretrained(tmp_path / "outputs/my-retrieval")
    # DDP: one run in a process group of two (not two independent runs racing on the folder)
    state = json.loads((tmp_path / "outputs/ddp/checkpoint-2/trainer_state.json").read_text())
    assert state["global_step"] == 2
    ddp_info = json.loads((tmp_path / "outputs/ddp/training_info.json").read_text())
    assert ddp_info["num_processes"] == 2
    assert ddp_info["metrics"] == json.loads((tmp_path / "outputs/ddp/eval_results.json").read_text())
    # the demo's two stages: the classifier's encoders start from the contrastive stage's (2 small steps apart)
    assert "heldout_accuracy" in json.loads((tmp_path / "outputs/demo/eval_results.json").read_text())
    stage1 = load_file(str(tmp_path / "outputs/demo-retrieval/model.safetensors"))
    stage2 = load_file(str(tmp_path / "outputs/demo/model.safetensors"))
    for name in ("mm_hub.text_encoder.lstm.weight_ih_l0", "mm_hub.vision_encoder.model.embedder.embedder.convolution.weight"):
        assert torch.allclose(stage1[name], stage2[name], atol=0.02), name
    # ... run again with stage-1 seed 1, and the two averaged, scored on held-out captions too
    demo_ensemble = tmp_path / "outputs/demo-ensemble"
    assert json.loads((demo_ensemble / "config.json").read_text())["ensemble_size"] == 2
    assert "heldout_accuracy" in json.loads((demo_ensemble / "eval_results.json").read_text())
    seed1 = load_file(str(tmp_path / "outputs/demo-seed1/model.safetensors"))
    assert not torch.equal(seed1["mm_hub.text_encoder.lstm.weight_ih_l0"], stage2["mm_hub.text_encoder.lstm.weight_ih_l0"])

