"""A real browser on the default app: headless Debian Chromium driven by Selenium uses every tab (upload an image,
type, click, read the answer) and saves one screenshot per tab (the same code makes the README's screenshots, see
docs/screenshot.py)."""

from __future__ import annotations

import pytest
from PIL import Image

from docs.screenshot import browser_available, drive_every_tab, example_rows

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out


def test_every_tab_of_the_default_app_in_headless_chromium(default_app, tmp_path):
    missing = browser_available()
    if missing:
        pytest.fail(f"The browser test needs Debian's Chromium: {missing}")
    image_path, text, expected = example_rows(default_app)[0]
    seen = drive_every_tab(default_app.local_url, image_path, text, tmp_path)
    assert set(seen) == {"Classify", "Explain", "Describe", "Describe: question", "Search", "Recommend"}, seen
    assert seen["Describe: question"]  # a question with the default settings gets an answer, not an error
    assert seen["Classify"] in ("match", "mismatch") and seen["Explain"].startswith("Prediction")
    assert seen["Search"] in ("a red circle", "a blue square", "a green triangle")  # the best candidate caption
    for tab in seen.keys() - {"Describe: question"}:  # one screenshot per tab
        with Image.open(tmp_path / f"{tab.lower()}.png") as screenshot:
            assert screenshot.size[0] >= 1000 and len(screenshot.getcolors(2**16) or range(2**16)) > 50, tab
