"""Runs the command and snippet of the README's "Search and recommend" section, in a scratch folder holding a tiny
`retrieval-model`, against the local test Hub."""

from __future__ import annotations

import shlex

from tests.conftest import readme_code_blocks, readme_commands, run_command, save_tiny_model


def test_readme_search_section_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_tiny_model(tmp_path / "retrieval-model", "retrieval")
    (build,) = readme_commands("search")
    (snippet,) = readme_code_blocks("search", "python")

    run_command(shlex.split(build), monkeypatch)
    assert "Indexed 32 rows" in capsys.readouterr().out
    assert (tmp_path / "shapes-index" / "mm_hub_index.json").exists()

    exec(compile(snippet, "README.md[search]", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 3 and all(line.strip() for line in lines)
    assert "0" not in lines[-1].strip("[]").split(", ")  # recommend(index, 0) leaves row 0 out
