"""Drive the app in headless Chromium (Debian's ``chromium`` + ``chromium-driver``; nothing is downloaded) and save a
screenshot of a classification. `tests/test_browser.py` uses `classify_in_browser`; run this file to refresh the
README's ``docs/screenshot.png`` on the demo model:

    python docs/screenshot.py                       # the demo model, examples from the shapes data
    python docs/screenshot.py --model org/name      # any model the app can load
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags that keep a headless Chromium from reaching the network or touching the user's profile.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)


def browser_available() -> str | None:
    """None when Chromium and chromedriver are installed, else what is missing (for an explicit test failure)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    return f"missing {missing}: apt-get install -y chromium chromium-driver" if missing else None


def classify_in_browser(url: str, image_path: str, text: str, screenshot: str | Path, timeout: float = 90) -> str:
    """Open the app at ``url``, upload ``image_path``, type ``text``, click Classify, wait for the prediction and
    save a screenshot to ``screenshot``.

    Returns:
        The predicted label as the page shows it.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mm_hub_chromium_")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        wait.until(ec.element_to_be_clickable((By.ID, "classify-button")))
        upload = driver.find_elements(By.CSS_SELECTOR, "input[type=file]")[0]  # the Classify tab's image input
        upload.send_keys(str(Path(image_path).resolve()))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='image'] img, .image-frame img")))
        box = driver.find_elements(By.CSS_SELECTOR, "textarea")[0]
        box.clear()
        box.send_keys(text)
        driver.find_element(By.ID, "classify-button").click()
        selector = "#prediction [data-testid='label-output-value']"
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector) and d.find_element(By.CSS_SELECTOR, selector).text
        )
        label = driver.find_element(By.CSS_SELECTOR, selector).text.strip()
        driver.save_screenshot(str(screenshot))
        return label
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Serve the app (demo model unless ``--model``), classify the first example in Chromium, save the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Hub id or folder (default: the demo model)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("screenshot.png")))
    parser.add_argument("--example", type=int, default=0, help="which app example to classify")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import app
    from mm_hub.examples import example_pairs

    demo = app.create_demo(model=args.model)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        image_path, text = example_pairs()[args.example]
        label = classify_in_browser(demo.local_url, image_path, text, args.out)
        print(f"{text!r} -> {label}; screenshot saved to {args.out}")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
