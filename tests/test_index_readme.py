"""Runs every command and snippet of the README's "Search and recommend" section, in a scratch folder holding a
tiny `retrieval-model`, against the local test Hub. Commands run in-process (parsed from the README, same argv)."""

from __future__ import annotations

import contextlib
import importlib
import io
import shlex
from pathlib import Path

from tests.helpers import readme_code_blocks
from tests.index_helpers import save_model

# The README's scale command measures 100k and 1M vectors (tens of minutes); the test runs the same script small.
BENCH_SMALL = ["--sizes", "3000", "--dim", "32", "--clusters", "50", "--queries", "40", "--latency-queries", "10"]


def _run(command: str, tmp_path: Path) -> str:
    """Run one README shell command line in this process; returns what it printed."""
    argv = shlex.split(command)
    assert argv[0] == "python", command
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if argv[1] == "-m":
            importlib.import_module(argv[2]).main(argv[3:])  # what `python -m` runs, with the same arguments
        elif argv[1] == "-c":
            exec(compile(argv[2], "<readme -c>", "exec"), {})
        else:
            from benchmarks.bench_index import main as bench_main

            assert argv[1] == "benchmarks/bench_index.py", command
            bench_main(argv[2:] + BENCH_SMALL + ["--out", str(tmp_path / "bench.json")])
    return out.getvalue()


def test_readme_search_section_runs(tmp_path, monkeypatch, hub_server):
    monkeypatch.chdir(tmp_path)
    save_model(tmp_path / "retrieval-model")
    build, push, *benches = readme_code_blocks("search", "bash")
    (snippet,) = readme_code_blocks("search", "python")

    assert "Indexed 32 rows" in _run(build.strip(), tmp_path)
    assert (tmp_path / "shapes-index" / "mm_hub_index.json").exists()

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "<readme snippet>", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert len(lines) == 3 + 3 and all(line.strip() for line in lines)
    assert "0" not in lines[-1].strip("[]").split(", ")  # recommend(index, 0) leaves row 0 out

    user_push = push.replace("your-name/", f"{hub_server.user}/")
    build_and_push, load = user_push.strip().splitlines()
    assert "Pushed to dataset" in _run(build_and_push, tmp_path)
    assert _run(load, tmp_path).strip().isdigit()

    assert benches
    for bench in benches:
        (tmp_path / "bench.json").unlink(missing_ok=True)
        assert "| recall@10 |" in _run(bench.strip(), tmp_path)
        assert (tmp_path / "bench.json").exists()
