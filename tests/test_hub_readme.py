"""Runs every command and snippet of README.md's hub section, in order, against the local Hub."""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch

from mm_hub import MMHubForImageTextClassification
from tests.helpers import random_images, tiny_config, tiny_processor

README = Path(__file__).resolve().parents[1] / "README.md"


def hub_section_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block between the hub section markers."""
    text = README.read_text()
    section = text.split("<!-- section:hub -->", 1)[1].split("<!-- /section:hub -->", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def run_command(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one `python -m module args...` line in this process, exactly as the shell would pass its arguments."""
    argv = shlex.split(line)
    assert argv[:2] == ["python", "-m"], f"the hub section may only hold `python -m` commands, got: {line}"
    monkeypatch.setattr(sys, "argv", [argv[2], *argv[3:]])
    monkeypatch.delitem(sys.modules, argv[2], raising=False)  # a fresh module, as in a new interpreter
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


def test_readme_hub_section_runs(tmp_path, monkeypatch, capsys, hub_server):
    blocks = hub_section_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python", "bash", "python"]
    # What the commands expect in the working directory: a trained model folder and an image.
    monkeypatch.chdir(tmp_path)
    config = tiny_config("attention", num_labels=2, id2label={0: "mismatch", 1: "match"},
                         label2id={"mismatch": 0, "match": 1})
    model = MMHubForImageTextClassification(config)
    model.save_pretrained("outputs/my-model")
    tiny_processor().save_pretrained("outputs/my-model")
    random_images(1)[0].save("scene.png")

    for lang, code in blocks:
        if lang == "bash":
            for line in filter(None, (raw.strip() for raw in code.splitlines())):
                run_command(line, monkeypatch)
        else:
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})

    out = capsys.readouterr().out
    assert "pushed outputs/my-model" in out
    assert re.search(r"'label': '(match|mismatch)', 'score'", out), out
    assert "DatasetDict" in out
    assert hub_server.commits("your-name/mm-hub-shapes")[0].title == "first model"
    assert hub_server.read("your-name/mm-hub-shapes-demo", "space_config.json", repo_type="space")
    assert {"train", "eval", "heldout"} <= {p.split("/")[-1].split("-")[0] for p in
                                             hub_server.files("your-name/shapes", repo_type="dataset")}
    with torch.no_grad():  # the pulled model is the pushed one
        pulled = MMHubForImageTextClassification.from_pretrained("your-name/mm-hub-shapes")
    assert all(torch.equal(a, b) for a, b in zip(pulled.state_dict().values(), model.state_dict().values()))
