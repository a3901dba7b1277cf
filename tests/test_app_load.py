"""Bounded load on the launched app: 8 concurrent clients through Gradio's queue, zero errors, p50/p95 reported."""

from __future__ import annotations

import time

import pytest

import app
from benchmarks.bench_app_load import run_load
from mm_hub.examples import shapes_examples
from tests.conftest import save_tiny_model
from tests.test_app import launch

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out

CLIENTS, REQUESTS, TIME_BOUND_S = 8, 5, 90


def test_concurrent_clients_get_answers_without_errors(tmp_path):
    demo = launch(app.create_demo(model=save_tiny_model(tmp_path / "model", fusion="attention")))
    try:
        image_path, text, _ = shapes_examples(folder=tmp_path / "examples")[0]
        started = time.monotonic()
        result = run_load(demo.local_url, image_path, text, clients=CLIENTS, requests=REQUESTS)
        elapsed = time.monotonic() - started
    finally:
        demo.close()
    print(
        f"\napp load: {result['requests']} requests, {CLIENTS} clients: p50 {result['p50_s'] * 1000:.0f} ms, "
        f"p95 {result['p95_s'] * 1000:.0f} ms, {result['throughput_rps']:.1f} req/s"
    )
    assert result["errors"] == 0, result["error_messages"]
    assert result["requests"] == CLIENTS * REQUESTS and elapsed < TIME_BOUND_S
    assert 0 < result["p50_s"] <= result["p95_s"] <= result["max_s"]
