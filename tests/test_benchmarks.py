"""The benchmark scripts run (small) and the pages generated from their results are up to date."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.bench_index import main as bench_index
from tests.data import ROOT


def test_index_benchmark_runs_small_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_index(["--sizes", "3000", "--dim", "32", "--clusters", "50", "--queries", "40", "--latency-queries", "10",
                 "--out", str(out)])
    assert "| recall@10 |" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert {row["index_type"] for row in results["results"]} == {"flat", "ivf", "hnsw"}
    assert all(0.0 <= row["recall@10"] <= 1.0 for row in results["results"])
    assert next(row for row in results["results"] if row["index_type"] == "flat")["recall@10"] == 1.0


def test_benchmark_pages_are_generated_from_the_json_files():
    assert report.main(["--check"]) == 0, "run: python -m benchmarks.report"
    page = report.PAGE.read_text()
    for name in ("results_index.json", "results_demo_ensembles.json"):
        assert name in page


def test_captioning_benchmark_runs_the_preset_quickly():
    from benchmarks.bench_captioning import main as bench_captioning

    results = bench_captioning(["--quick"])
    # 16 scenes, each read twice: a caption with no prompt, and a question -> answer (the preset's target_pairs)
    assert results["train_rows"] == 32 and results["wall_s"] > results["train_runtime_s"] > 0
    assert {"eval_structural_f1", "heldout_structural_f1", "eval_bleu4", "eval_cider"} <= set(results["metrics"])


def test_first_start_benchmark_times_the_app_serving(tiny_demo_cache):
    from benchmarks.bench_first_start import main as bench_first_start

    results = bench_first_start(["--quick", "--cache", str(tiny_demo_cache)])
    assert results["first_start_s"] is None and results["second_start_s"] > 0
    assert {"/classify", "/explain", "/describe", "/search", "/search_image", "/zero_shot", "/recommend"} == set(
        results["endpoints"])
    assert "eval_structural_f1" in results["demo_models_eval"]["captioner"]


def test_speed_benchmark_measures_ratios_in_one_process():
    from benchmarks.speed import main as speed

    results = speed(["--quick", "--repeats", "1"])
    assert set(results["peer"]["peer_over_mm_hub"]) == {"image", "text", "train_step"}
    assert all(ratio > 0 for ratio in results["peer"]["peer_over_mm_hub"].values())
    assert results["pipeline"]["pipeline_over_forward_batch"] > 0 and results["versions"]["transformers"]
    assert set(results["generation"]["tokens_per_s"]) == {"8", "32"}
    training = results["training"]
    assert training["loop_step_s"] > 0 and training["premade_step_s"] > 0 and training["collate_batch_s"] > 0
    assert training["premade_over_loop"] == training["premade_step_s"] / training["loop_step_s"]
    assert training["loop_step_s_for_each_adamw"] > 0


def test_digit_questions_answer_right_and_balanced():
    import random
    import re

    from benchmarks.digit_questions import NUMBERS, question

    rng, counts = random.Random(0), {}
    for _ in range(6000):
        digit = rng.randrange(10)
        text, answer = question(rng, digit)
        if match := re.fullmatch(r"is this a (\w+)\?", text):
            template, truth = "is", NUMBERS.index(match[1]) == digit
        elif match := re.fullmatch(r"is this digit (even|odd)\?", text):
            template, truth = "parity", (digit % 2 == 0) == (match[1] == "even")
        else:
            word, named = re.fullmatch(r"is this digit (greater|smaller) than (\w+)\?", text).groups()
            template, truth = "compare", digit > NUMBERS.index(named) if word == "greater" else digit < NUMBERS.index(named)
        assert answer == int(truth), text
        counts.setdefault(template, []).append(answer)
    # Every template answers yes and no equally often: the image alone cannot tell the answer.
    assert set(counts) == {"is", "parity", "compare"}
    assert all(abs(sum(answers) / len(answers) - 0.5) < 0.03 for answers in counts.values())


def test_fusion_table_quick_trains_every_row_on_both_tasks(tmp_path):
    from datasets import load_from_disk

    from benchmarks.fusion_table import BLANK_TEXT, UNIMODAL_ROWS
    from benchmarks.fusion_table import main as fusion_table
    from mm_hub import FUSION_REGISTRY

    results = fusion_table(["--quick", "--work-dir", str(tmp_path), "--out", str(tmp_path / "fusions.json")])
    assert json.loads((tmp_path / "fusions.json").read_text())["winner"] == results["winner"] in FUSION_REGISTRY
    expected_rows = [*UNIMODAL_ROWS, *FUSION_REGISTRY]
    for task, splits in (("shapes", ["eval", "heldout"]), ("digits", ["eval", "test"])):
        part = results["table"][task]
        assert part["splits"] == splits and list(part["rows"]) == expected_rows
        for row in part["rows"].values():
            assert all(0.0 <= row["mean"][split] <= 1.0 for split in splits) and row["trained_params"] > 0
        # The unimodal rows train on copies with the other modality blanked in every row.
        blank_text = load_from_disk(str(tmp_path / task / "blank-text"))
        assert set(blank_text["train"]["text"]) == {BLANK_TEXT}
        blank_image = load_from_disk(str(tmp_path / task / "blank-image"))["train"]
        assert len({image.tobytes() for image in blank_image["image"]}) == 1
    digits = load_from_disk(str(tmp_path / "digits" / "data"))
    assert {name: len(split) for name, split in digits.items()} == {"train": 64, "eval": 16, "test": 16}
    page = "\n".join(report.fusion_section(results))
    assert "| bilinear |" in page and "digits: unseen digits" in page


def test_generation_table_quick_trains_every_fusion_and_lever_on_captions_and_answers(tmp_path):
    from benchmarks.fusion_table import main as fusion_table
    from benchmarks.generation_table import METRICS, rows

    results = fusion_table(["--task", "generation", "--quick", "--work-dir", str(tmp_path)])
    assert list(results["table"]) == list(rows()) and results["best_heldout_caption_row"] in results["table"]
    for row in results["table"].values():
        assert all(0.0 <= row[name][split]["mean"] <= 1.0 for name in METRICS for split in ("eval", "heldout"))
    page = "\n".join(report.generation_section(results))
    assert "| concat |" in page and "answer EM: held-out pairs" in page


PARENT_DIES = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from benchmarks.fusion_table import _end_with_parent

pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_end_with_parent)
print(pool.submit(os.getpid).result(), flush=True)  # a task's result: the worker's start-up has run
pool.submit(time.sleep, 120)
os._exit(0)  # as a SIGTERM would end it: no executor shutdown
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (ended, waiting for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers are tied to their parent on Linux")
def test_fusion_table_workers_end_with_the_benchmark_process():
    result = subprocess.run([sys.executable, "-c", PARENT_DIES], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (pid,) = map(int, result.stdout.split())
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid), "the worker outlived the benchmark process"


def test_the_classification_preset_uses_the_fusion_that_won_on_real_images():
    from training.config import read_preset

    results = json.loads((report.HERE / "results_fusion_table.json").read_text())
    assert read_preset("classification").model.fusion_type == results["winner"]


def test_a_new_fusion_gets_a_row_in_the_readme_table_before_it_is_measured(monkeypatch):
    from mm_hub import FUSION_REGISTRY
    from mm_hub.model.fusion_mm_hub import Fusion

    class MaxFusion(Fusion):
        description = "max-pool each modality, then concatenate"  # the one place its prose lives

    monkeypatch.setitem(FUSION_REGISTRY, "max", MaxFusion)
    rows = report.fusion_choices().splitlines()
    assert rows[-1] == "| `max` | max-pool each modality, then concatenate | not measured yet | not measured yet |"
    assert any(row.startswith("| `bilinear` |") and row.endswith("% |") for row in rows)


def test_memory_benchmark_measures_each_case_in_its_own_process():
    from benchmarks.memory import CASES, main as memory

    results = memory(["--quick"])
    assert set(results["cases"]) == set(CASES) and results["over_full_fine_tuning"]["full fine-tuning"] == 1.0
    assert all(case["peak_mb"] >= case["rss_before_step_mb"] > 0 for case in results["cases"].values())
    assert set(results["over_full_fine_tuning_default_allocator"]) == set(CASES)  # glibc's default, beside
    assert 0 < results["adapter_over_model_bytes"] < 1


def test_lora_accuracy_quick_trains_both_rows_and_resumes(tmp_path):
    from benchmarks.lora_accuracy import ROWS, main as lora_accuracy

    results = lora_accuracy(["--quick", "--workers", "1", "--work-dir", str(tmp_path)])
    for task, part in results["table"].items():
        assert set(part["rows"]) == set(ROWS) and set(part["lora_minus_full_points"]) == set(part["splits"])
        full, lora = (part["rows"][row] for row in ROWS)
        assert lora["trained_parameters"] < full["trained_parameters"]
    again = lora_accuracy(["--quick", "--workers", "1", "--work-dir", str(tmp_path)])  # read back, not retrained
    assert again["table"] == results["table"]
