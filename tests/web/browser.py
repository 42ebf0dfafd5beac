"""A real headless Chromium (Debian's chromium + chromium-driver, via Selenium) for the web
page tests, and where their screenshots go. Nothing is downloaded: without the two
programs the tests are skipped."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}

requires_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


def screenshot_dir() -> Path:
    """``SHORTFLOW_SCREENSHOTS``, else build/screenshots in the repository."""
    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("SHORTFLOW_SCREENSHOTS") or root / "build" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile, closed afterwards."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM is not None and CHROMEDRIVER is not None
    profile = tempfile.mkdtemp(prefix="shortflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(120)  # a capture upload on a busy machine
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shoot(driver: Any, name: str) -> list[Path]:
    """Screenshots of the current page at desktop and phone widths (full page height)."""
    out = []
    for size, (width, height) in SIZES.items():
        driver.set_window_size(width, height)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(height, min(int(full) + 100, 4000)))
        if driver.execute_script("return document.querySelector('.chart canvas') !== null"):
            time.sleep(0.3)  # web.js redraws the charts 150 ms after a resize
        path = screenshot_dir() / f"{name}-{size}.png"
        driver.save_screenshot(str(path))
        out.append(path)
    driver.set_window_size(*SIZES["desktop"])
    return out


def submit(driver: Any, element: Any, timeout: float = 120.0) -> None:
    """Click ``element`` (a submit button) and wait until the next page has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    html = driver.find_element("tag name", "html")
    element.click()

    def gone(_d: Any) -> bool:
        try:
            html.is_enabled()
        except WebDriverException:  # stale, or "does not belong to the document" mid-load
            return True
        return False

    wait = WebDriverWait(driver, timeout)
    wait.until(gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
