"""A real browser on the app: headless Debian Chromium driven by Selenium uploads an image, types a caption, clicks
Classify and reads the predicted label (the same code makes the README's screenshot, see docs/screenshot.py)."""

from __future__ import annotations

import pytest
from PIL import Image

import app
from docs.screenshot import browser_available, classify_in_browser
from mm_hub.examples import example_pairs
from mm_hub.predictor import Predictor
from tests.conftest import save_tiny_model
from tests.test_app import launch

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out


def test_classify_in_headless_chromium(tmp_path):
    missing = browser_available()
    if missing:
        pytest.fail(f"The browser test needs Debian's Chromium: {missing}")
    model_dir = save_tiny_model(tmp_path / "model", fusion="sequence")
    demo = launch(app.create_demo(model=model_dir))
    try:
        image_path, text = example_pairs(tmp_path / "examples")[0]
        shot = tmp_path / "screenshot.png"
        label = classify_in_browser(demo.local_url, image_path, text, shot)
    finally:
        demo.close()
    expected = Predictor.from_pretrained(model_dir).classify(image_path, text)
    assert label == next(iter(expected))  # the page shows the model's top label
    with Image.open(shot) as screenshot:
        assert screenshot.size[0] >= 1000 and len(screenshot.getcolors(2**16) or range(2**16)) > 50  # a real page
