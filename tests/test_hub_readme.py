"""Runs every command and snippet of README.md's hub section, in order, against the local Hub."""

from __future__ import annotations

import re
import shlex

import torch

from mm_hub import MMHubForImageTextClassification
from tests.conftest import random_images, readme_code_blocks, readme_commands, run_command, save_tiny_model


def test_readme_hub_section_runs(tmp_path, monkeypatch, capsys, hub_server):
    (export, push, space) = readme_commands("hub")
    (pull,) = readme_code_blocks("hub")
    # What the commands expect in the working directory: a trained model folder and an image.
    monkeypatch.chdir(tmp_path)
    save_tiny_model("outputs/my-model")
    random_images(1)[0].save("scene.png")

    run_command(shlex.split(export), monkeypatch)
    run_command(shlex.split(push), monkeypatch)
    exec(compile(pull, "README.md[hub]", "exec"), {"__name__": "__readme__"})
    run_command(shlex.split(space), monkeypatch)

    out = capsys.readouterr().out
    assert "pushed outputs/my-model" in out
    assert re.search(r"'label': '(match|mismatch)', 'score'", out), out
    assert hub_server.commits("your-name/mm-hub-shapes")[0].title == "first model"
    assert hub_server.read("your-name/mm-hub-shapes", "onnx/onnx_config.json")  # the export, as the repo's onnx/
    assert "Without torch: the ONNX export" in hub_server.read("your-name/mm-hub-shapes", "README.md").decode()
    assert hub_server.read("your-name/mm-hub-shapes-demo", "space_config.json", repo_type="space")
    with torch.no_grad():  # the pulled model is the pushed one
        pulled = MMHubForImageTextClassification.from_pretrained("your-name/mm-hub-shapes")
        local = MMHubForImageTextClassification.from_pretrained("outputs/my-model")
    assert all(torch.equal(a, b) for a, b in zip(pulled.state_dict().values(), local.state_dict().values()))
