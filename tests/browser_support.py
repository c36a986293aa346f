"""Headless Chromium for the portal's browser tests, through selenium.

The browser and its driver are the machine's (Debian's ``chromium`` and
``chromium-driver``, which ``.ci/run`` installs when it can): selenium is given
the driver's path, so it never tries to download a browser of its own. Where
either is missing, or selenium is not installed, the tests that need a browser
skip with a reason that says which.

Each browser gets a fresh profile in a temporary directory, removed on quit,
so nothing outside temporary directories changes. The console log
(``goog:loggingPrefs``) is collected: a test reads it to find script errors and
Content-Security-Policy violations, which Chromium reports there.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
OPTIONS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
DESKTOP = (1280, 800)
PHONE = (390, 844)


def missing() -> str | None:
    """Why a browser cannot be started here, or None if it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    if chromium_path() is None:
        return "no Chromium on this machine (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on this machine (apt-get install chromium-driver)"
    return None


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def artifacts_dir() -> Path:
    """Where screenshots and PDFs go: ``$METERD_ARTIFACTS``, or a new temporary directory."""
    given = os.environ.get("METERD_ARTIFACTS")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="meterd-portal-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """A selenium driver plus the console entries read so far."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.console: list[dict[str, Any]] = []

    def read_console(self) -> list[dict[str, Any]]:
        """Console entries since the last read (also kept in ``console``)."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return entries

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Emulate a screen of exactly this CSS size (the window's own size includes no chrome then)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self, path: Path, *, full: bool = False) -> None:
        """A PNG of the viewport, or of the whole page with ``full``."""
        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
            metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = metrics["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def print_pdf(self) -> bytes:
        """The page printed as the browser prints it (A4, the page's own print CSS)."""
        result = self.driver.execute_cdp_cmd(
            "Page.printToPDF",
            {"printBackground": True, "preferCSSPageSize": True, "paperWidth": 8.27, "paperHeight": 11.69},
        )
        return base64.b64decode(result["data"])


@contextmanager
def chromium(*, javascript: bool = True) -> Iterator[Browser]:
    """A headless Chromium for the duration of the block; skips the test if there is none."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="meterd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()  # type: ignore[assignment]
    for option in OPTIONS:
        options.add_argument(option)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
