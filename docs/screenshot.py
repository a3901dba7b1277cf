"""Drive every tab of the app in headless Chromium (Debian's ``chromium`` + ``chromium-driver``; nothing is
downloaded) and save one screenshot per tab. `tests/test_browser.py` runs `drive_every_tab` on the default app; run
this file to refresh the README's ``docs/screenshots/*.png`` on the real demo models:

    python docs/screenshot.py                       # the default app: the demo models, examples from the shapes data
    python docs/screenshot.py --model org/name      # any model (or manifest) the app can load
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).with_name("screenshots")
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
    "--window-size=1280,1500",
)


def browser_available() -> str | None:
    """None when Chromium and chromedriver are installed, else what is missing (for an explicit test failure)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    return f"missing {missing}: apt-get install -y chromium chromium-driver" if missing else None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Selenium Chrome driver on Debian's Chromium, with a throw-away profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mm_hub_chromium_")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def drive_every_tab(
    url: str, image_path: str, text: str, out_dir: str | os.PathLike = SCREENSHOTS, timeout: float = 90,
    question: str = "what colour is the circle?",
) -> dict[str, str]:
    """Open the app at ``url`` and use each visible tab as a person would: upload ``image_path``, type ``text``
    (Classify, Explain), a query (Search), pick an item (Recommend), ask for a caption, then ``question`` with the
    default settings (Describe); wait for the answer and save ``<tab>.png`` into ``out_dir``.

    Returns:
        ``{tab: what the page shows}``: the predicted label, the explanation's summary, the first search caption,
        the best candidate caption, the first recommendation's caption, the written caption and, under
        ``"Describe: question"``, the answer; under ``"errors"``, the text of any error the page showed.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image = str(Path(image_path).resolve())
    seen: dict[str, str] = {}
    with chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)

        def find(selector: str) -> Any:
            return wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, selector)), None))

        def shown(selector: str, read: Callable[[Any], str] = lambda element: element.text.strip()) -> str:
            """Wait until the element's content is non-empty; return it."""
            return wait.until(lambda d: next((read(e) for e in d.find_elements(By.CSS_SELECTOR, selector)
                                              if read(e)), None))

        def settled(selector: str, read: Callable[[Any], str], quiet: float = 2.0) -> str:
            """Wait until the element's content is non-empty and has not changed for ``quiet`` seconds (a stream
            has ended); return it."""
            last, since = shown(selector, read), time.monotonic()
            while time.monotonic() - since < quiet:
                time.sleep(0.25)
                now = read(driver.find_element(By.CSS_SELECTOR, selector))
                if now != last:
                    last, since = now, time.monotonic()
            return last

        def value(element: Any) -> str:
            return element.get_attribute("value").strip()

        def upload(elem_id: str) -> None:
            find(f"#{elem_id} input[type=file]").send_keys(image)
            find(f"#{elem_id} img")

        def type_into(elem_id: str, value: str) -> None:
            box = find(f"#{elem_id} textarea, #{elem_id} input")
            box.clear()
            box.send_keys(value)

        def open_tab(name: str) -> bool:
            tabs = [t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text.strip() == name]
            if tabs:
                tabs[0].click()
            return bool(tabs)

        find("#classify-button, #search-button, #describe-button")
        if open_tab("Classify"):
            upload("classify-image")
            type_into("classify-text", text)
            find("#classify-button").click()
            seen["Classify"] = shown("#prediction [data-testid='label-output-value']")
            driver.save_screenshot(str(out_dir / "classify.png"))
        if open_tab("Explain"):
            upload("explain-image")
            type_into("explain-text", text)
            find("#explain-button").click()
            seen["Explain"] = shown("#summary", lambda e: e.text.strip() if "Prediction" in e.text else "")
            driver.save_screenshot(str(out_dir / "explain.png"))
        if open_tab("Describe"):
            upload("describe-image")
            find("#describe-button").click()
            seen["Describe"] = settled("#description textarea", value)
            type_into("describe-question", question)  # the default settings, as a person leaves them
            find("#describe-button").click()
            wait.until(lambda d: value(d.find_element(By.CSS_SELECTOR, "#description textarea")) != seen["Describe"]
                       or d.find_elements(By.CSS_SELECTOR, ".toast-body.error"))  # an answer, or an error
            seen["Describe: question"] = settled("#description textarea", value)
            driver.save_screenshot(str(out_dir / "describe.png"))
        if open_tab("Search"):
            type_into("search-query", text)
            find("#search-button").click()
            shown("#search-gallery img", lambda e: e.get_attribute("src") or "")
            upload("zero-shot-image")
            find("#zero-shot-button").click()
            seen["Search"] = shown("#zero-shot [data-testid='label-output-value']")
            driver.save_screenshot(str(out_dir / "search.png"))
        if open_tab("Recommend"):
            find("#recommend-button").click()
            seen["Recommend"] = shown("#recommend-gallery img", lambda e: e.get_attribute("src") or "")
            driver.save_screenshot(str(out_dir / "recommend.png"))
        errors = [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body.error")]
        if errors:
            seen["errors"] = " | ".join(errors)
    return seen


def example_rows(demo: Any) -> list[list[str]]:
    """The ``[image_path, text, expected]`` rows of the app's first examples table (empty when it has none)."""
    samples = next((c["props"]["samples"] for c in demo.config["components"] if c["type"] == "dataset"), [])
    return [[row[0]["path"] if isinstance(row[0], dict) else row[0], *row[1:]] for row in samples]


def main(argv: list[str] | None = None) -> None:
    """Serve the app (the default one unless ``--model``), drive every tab on the first example, save the shots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Hub id, folder or app manifest (default: the demo models)")
    parser.add_argument("--out", default=str(SCREENSHOTS), help="folder for the screenshots")
    parser.add_argument("--example", type=int, default=0, help="which app example to use")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import app

    demo = app.create_demo(model=args.model)
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        image_path, text, *_ = example_rows(demo)[args.example]
        for tab, value in drive_every_tab(demo.local_url, image_path, text, args.out).items():
            print(f"{tab}: {value[:100]!r}")
        print(f"screenshots saved in {args.out}")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
