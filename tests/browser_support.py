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

:func:`audit_page` is what every page is held to, whoever serves it (the
fixture pages of test_portal_pages.py, a real meterd in test_portal_browser.py):
labelled fields, every control reached with Tab, charts with their text
alternative, no sideways scrolling on a phone, no console error, no CSP
violation, and its screenshots. Selenium blocks: tests call these from a
thread (``deferToThread``) while the reactor serves the pages.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


# -- what every page is held to --------------------------------------------------


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def load(browser: Browser, url: str) -> None:
    browser.driver.get(url)
    wait(browser.driver, lambda d: d.execute_script("return document.readyState") == "complete")


def heading(driver: Any) -> str:
    """The page's <h1> text, read in one step: the script may swap the element at any moment."""
    return str(driver.execute_script("const h = document.querySelector('h1'); return h ? h.textContent : ''"))


def errors(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if e["level"] == "SEVERE"]


def csp_violations(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if "Content Security Policy" in e["message"]]


FIELDS_WITHOUT_LABEL = """
return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML);
"""

MARK_CONTROLS = """
const controls = Array.from(document.querySelectorAll(
  'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])'))
  .filter(el => !el.disabled && !el.closest('[hidden]') && el.getClientRects().length > 0);
controls.forEach((el, i) => { el.dataset.tabcheck = String(i); });
document.activeElement && document.activeElement.blur();
return controls.length;
"""

CHART_ALTERNATIVES = """
return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const title = document.getElementById(svg.getAttribute('aria-labelledby'));
  const desc = document.getElementById(svg.getAttribute('aria-describedby'));
  const figure = svg.closest('figure');
  const table = figure.querySelector('table') || figure.nextElementSibling;
  return {
    role: svg.getAttribute('role'),
    title: title && title.parentNode === svg ? title.textContent : '',
    desc: desc && desc.parentNode === svg ? desc.textContent : '',
    rows: table && table.tagName === 'TABLE' ? table.tBodies[0].rows.length : -1,
  };
});
"""


def audit_page(browser: Browser, url: str, stem: str, artifacts: Path, *, keyboard: bool = True) -> dict[str, Any]:
    """Load ``url`` and check it as a person would meet it; screenshots ``stem-*.png`` in ``artifacts``.

    Tab is pressed from the top of the page until every visible control has
    had the focus once (unless ``keyboard`` is false: the same page in another
    language has the same controls in the same order); the page is then photographed whole at 1280×800 and
    on a phone (390×844): the whole page, since its top is the viewport.
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser.driver
    browser.viewport(*DESKTOP)
    browser.read_console()
    load(browser, url)
    wait(driver, lambda d: d.execute_script("return document.styleSheets.length") == 1)
    result: dict[str, Any] = {"unlabelled": driver.execute_script(FIELDS_WITHOUT_LABEL)}
    result["charts"] = driver.execute_script(CHART_ALTERNATIVES)
    count = driver.execute_script(MARK_CONTROLS)
    reached = set()
    for _ in range(count + 3 if keyboard else 0):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        mark = driver.execute_script("return document.activeElement.dataset.tabcheck || null")
        if mark is not None:
            reached.add(int(mark))
    result["unreached"] = sorted(set(range(count)) - reached) if keyboard else []
    result["controls"] = count
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    browser.screenshot(artifacts / f"{stem}-{DESKTOP[0]}-full.png", full=True)
    browser.viewport(*PHONE, mobile=True)
    load(browser, driver.current_url)
    # Against the phone's width itself: a mobile viewport zooms out to fit wider content.
    result["phone_overflow"] = driver.execute_script("return document.documentElement.scrollWidth") - PHONE[0]
    result["too_wide"] = driver.execute_script(  # the innermost elements that stick out, to name them when it fails
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5"
        " && ![...e.children].some(c => c.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5))"
        ".slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined"
        " ? '.' + String(e.className).split(' ').join('.') : '') + ' ' + Math.round(e.getBoundingClientRect().right)"
        " + (e.closest('table') && e.closest('table').caption ? ' in ' + e.closest('table').caption.textContent : ''))"
    )
    browser.screenshot(artifacts / f"{stem}-{PHONE[0]}-full.png", full=True)
    browser.viewport(*DESKTOP)
    entries = browser.read_console()
    result["errors"] = errors(entries)
    result["csp"] = csp_violations(entries)
    return result


def assert_page_passes(result: dict[str, Any], what: str) -> None:
    """What :func:`audit_page` found, held to the portal's rules."""
    assert result["errors"] == [], (what, result["errors"])
    assert result["csp"] == [], (what, result["csp"])
    assert result["unlabelled"] == [], (what, result["unlabelled"])
    assert result["controls"] > 0, what
    assert result["unreached"] == [], (what, "not reached with Tab", result["unreached"])
    assert result["phone_overflow"] <= 0, (what, "wider than a phone by", result["phone_overflow"], result["too_wide"])
    for chart in result["charts"]:
        assert chart["role"] == "img" and chart["title"] and chart["desc"], (what, chart)
