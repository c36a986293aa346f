"""The portal in headless Chromium against a real meterd (in this process, real sockets).

A customer with thirteen months of hourly readings on two meters logs in,
sees the chart, opens the bill and prints it to PDF; an alarm raised by a
reading appears on the open alarms page without a reload and is acknowledged
with its button; the operator finds the customer ("joao"), opens the record and
registers a meter whose key is shown once. Every page is audited
(tests/browser_support.py: labels, Tab, charts' text, a phone's width, no
console error, no CSP violation) and photographed at 1280×800 and 390×844 into
``$METERD_ARTIFACTS``. Without Chromium, its driver or selenium, every test
here skips and says which is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from meterd.portal import routes
from meterd.readings import US_PER_MS, Reading
from meterd.taxid import format_taxid, make_cpf
from tests.browser_support import Browser, assert_page_passes, audit_page, errors, heading, load, wait
from tests.support import LiveServer, start_server, until
from tests.test_billing_run import run

pytestmark = pytest.mark.slow

A = make_cpf("529982247")
NAME = "João da Silva Gonçalves"
TZ = ZoneInfo("America/Sao_Paulo")
HOUR_US = 3600 * 1_000_000


@dataclass
class World:
    server: LiveServer
    token: str
    registers_wh: dict[int, int]  # each meter's newest register value


def household_wh(at: datetime, meter: int) -> int:
    """An hour's energy in a Brazilian home: a base load, the morning, the evening shower and lights, a hotter summer."""
    hour = at.hour
    watts = 180 + (450 if 6 <= hour < 8 else 0) + (1100 if 18 <= hour < 22 else 0) + (250 if 12 <= hour < 14 else 0)
    watts *= 1.25 if at.month in (12, 1, 2, 3) else 1.0
    watts *= 1.1 if at.weekday() >= 5 else 1.0
    return int(watts if meter == 1 else watts * 0.22)


async def seed_history(server: LiveServer, customer: str) -> dict[int, int]:
    """Thirteen months of hourly register readings of two meters, through the store's own ingest (as the bench's
    data dirs are built), with a three-hour gap last week so that estimated buckets show."""
    now_us = int(time.time() * 1_000_000)
    last = now_us - now_us % HOUR_US - HOUR_US
    first = last - 400 * 24 * HOUR_US
    gap = range(last - 6 * 24 * HOUR_US, last - 6 * 24 * HOUR_US + 3 * HOUR_US + 1, HOUR_US)
    registers = {1: 18_452_310, 2: 3_120_775}
    batch: list[Reading] = []
    for ts in range(first, last + 1, HOUR_US):
        at = datetime.fromtimestamp(ts / 1_000_000, TZ)
        for meter in (1, 2):
            registers[meter] += household_wh(at, meter)
            if ts not in gap:
                batch.append(Reading(customer, meter, ts, registers[meter], None))
        if len(batch) >= 5000:
            await server.core.store.ingest(batch, now_us // US_PER_MS)
            batch = []
    if batch:
        await server.core.store.ingest(batch, now_us // US_PER_MS)
    server.core.parts.bills.forget_customer(customer)
    return registers


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    from tests.browser_support import missing

    if missing():
        pytest.skip(missing())
    server = await start_server(tmp_path_factory.mktemp("portal") / "data")
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": A, "name": NAME, "ligacao": "bi", "limite_kw": 5, "limite_kwh": 500})
    assert status == 201, body
    for _ in range(2):
        status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": A})
        assert status == 201, meter
    registers = await seed_history(server, A)
    for periodo in range(12, 0, -1):  # the year's bills issued, month by month, as a utility would
        await run(server, periodo)
    yield World(server, body["token"], registers)
    await server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from tests.browser_support import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def artifacts() -> Path:
    from tests.browser_support import artifacts_dir

    return artifacts_dir()


def in_thread(fn: Callable[[], Any]) -> Deferred[Any]:
    return deferToThread(fn)


def log_in(browser: Browser, base: str, field: str, *secrets: str) -> None:
    """Log in with the keyboard: the form's first field, Tab to the next, Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser.driver
    driver.delete_all_cookies()
    load(browser, base + routes.LOGIN)
    element = driver.find_element(By.ID, field)
    for i, secret in enumerate(secrets):
        element.send_keys(secret)
        element.send_keys(Keys.TAB if i < len(secrets) - 1 else Keys.ENTER)
        element = driver.switch_to.active_element
    wait(driver, lambda d: not d.current_url.startswith(base + routes.LOGIN))
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


@pytest_twisted.ensureDeferred
async def test_a_customer_sees_the_chart_and_prints_the_bill(world: World, browser: Browser, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    base = world.server.url

    def visit() -> dict[str, Any]:
        driver = browser.driver
        browser.read_console()
        log_in(browser, base, "f-id", format_taxid(A), world.token)
        seen: dict[str, Any] = {"heading": heading(driver)}
        seen["bars"] = driver.execute_script("return document.querySelectorAll('#overview-chart g.bars rect').length")
        seen["projection"] = driver.find_element(By.CSS_SELECTOR, ".figures").text
        driver.find_element(By.CSS_SELECTOR, f'.site-nav a[href="{routes.BILL}"]').click()
        wait(driver, lambda d: heading(d) == "Fatura de energia elétrica")
        seen["bill"] = driver.find_element(By.CSS_SELECTOR, "article.bill").text
        load(browser, base + routes.href(routes.BILL, periodo=1))
        seen["closed_text"] = driver.find_element(By.CSS_SELECTOR, "article.bill").text
        seen["closed"] = browser.print_pdf()
        load(browser, base + routes.BILL)
        seen["open"] = browser.print_pdf()
        seen["errors"] = errors(browser.read_console())
        return seen

    before = datetime.now(TZ).day
    seen = await in_thread(visit)
    assert seen["heading"] == f"Olá, {NAME}"
    assert seen["bars"] in (before, datetime.now(TZ).day)  # a bar a day of this month so far
    assert "Previsão para o fim do mês" in seen["projection"] and "R$" in seen["projection"]
    assert "Bifásica" in seen["bill"] and "Total a pagar" in seen["bill"] and "Bandeira tarifária" in seen["bill"]
    assert "Pix" in seen["closed_text"] and "Código de barras" in seen["closed_text"]  # last month's, issued
    for name in ("closed", "open"):
        pdf = seen[name]
        (artifacts / f"real-bill-{name}.pdf").write_bytes(pdf)
        assert pdf.startswith(b"%PDF-")
        assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1, f"the {name} bill prints on one page"
        boxes = {tuple(round(float(x)) for x in box.split()) for box in re.findall(rb"/MediaBox\s*\[([\d.\s]+)\]", pdf)}
        assert boxes == {(0, 0, 595, 842)}  # A4
    assert seen["errors"] == []


@pytest_twisted.ensureDeferred
async def test_an_alarm_raised_by_a_reading_appears_without_reload_and_is_acknowledged(world: World, browser: Browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, base = world.server, world.server.url
    live = server.core.parts.portal.live

    def open_page() -> None:
        browser.read_console()
        log_in(browser, base, "f-id", A, world.token)
        load(browser, base + routes.ALARMS)
        browser.driver.execute_script("window.loadedOnce = true")

    await in_thread(open_page)
    await until(lambda: _now(bool(live.streams)))  # the page's stream is open
    # Meter 2 runs 4 kWh in 40 s: 360 kW against a 5 kW limit.
    now = int(time.time())
    register = world.registers_wh[2]
    for ts, valor in ((now - 45, f"{(register + 1) / 1000:.3f}"), (now - 5, f"{(register + 4001) / 1000:.3f}")):
        status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": A, "id_medidor": 2, "valor": valor, "timestamp": ts})
        assert status == 201, body
    world.registers_wh[2] += 4001
    posted = time.monotonic()  # the reading's answer comes once the alarm it raised is settled

    def watch() -> dict[str, Any]:
        driver = browser.driver
        script = "const li = document.querySelector('#active-alarms > li.alarm-active'); return li && [li.id, li.textContent]"
        found = wait(driver, lambda d: d.execute_script(script), timeout=5)  # the bound: within 5 s
        seen: dict[str, Any] = {"after_s": time.monotonic() - posted, "id": found[0], "text": found[1]}
        seen["same_page"] = driver.execute_script("return window.loadedOnce === true")
        button = driver.find_element(By.CSS_SELECTOR, f"#{found[0]} .alarm-ack button")
        button.send_keys(Keys.ENTER)  # the keyboard presses it
        wait(driver, lambda d: d.execute_script(f"const li = document.getElementById('{found[0]}'); return li && li.className.includes('alarm-acked')"))
        seen["after_ack"] = driver.find_element(By.ID, found[0]).text
        seen["errors"] = errors(browser.read_console())
        return seen

    seen = await in_thread(watch)
    print(f"\nalarm on the open page {seen['after_s'] * 1000:.0f} ms after the reading's answer")
    assert seen["same_page"], "the alarm must arrive without a reload"
    assert "Demanda alta" in seen["text"] and "Medidor 2" in seen["text"]
    assert "reconhecido em" in seen["after_ack"] and "Reconhecer" not in seen["after_ack"]
    status, view, _ = await server.call("GET", "/getAlarme", params={"id": A})
    alarm_id = int(seen["id"].removeprefix("alarm-"))
    assert [a["acked_at"] is not None for a in view["active"] if a["alarm_id"] == alarm_id] == [True]
    assert seen["errors"] == []


async def _now(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_when_the_stream_is_refused_the_page_reloads_its_list_instead(world: World, browser: Browser) -> None:
    """Past the bound on live streams (as through an HTTP worker) the script falls back to fetching the list."""
    server, base = world.server, world.server.url
    live = server.core.parts.portal.live
    bound, live.max_streams = live.max_streams, 0
    try:

        def open_page() -> None:
            log_in(browser, base, "f-id", A, world.token)
            load(browser, base + routes.ALARMS)
            browser.driver.execute_script("window.loadedOnce = true")

        await in_thread(open_page)
        now, register = int(time.time()), world.registers_wh[1]
        for ts, valor in ((now - 45, f"{(register + 1) / 1000:.3f}"), (now - 5, f"{(register + 4001) / 1000:.3f}")):
            status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": A, "id_medidor": 1, "valor": valor, "timestamp": ts})
            assert status == 201, body
        world.registers_wh[1] += 4001

        def watch() -> tuple[str, bool, list[str]]:
            driver = browser.driver
            script = "return Array.from(document.querySelectorAll('#active-alarms > li')).map(li => li.textContent).join('|')"
            text = wait(driver, lambda d: "Medidor 1" in d.execute_script(script) and d.execute_script(script), timeout=30)
            refused = [m for m in errors(browser.read_console()) if "eventos" not in m or "503" not in m]
            return text, driver.execute_script("return window.loadedOnce === true"), refused

        text, same_page, other_errors = await in_thread(watch)
        assert "Demanda alta" in text and same_page
        assert other_errors == []  # the refused stream's 503 is the only complaint
        assert not live.streams
    finally:
        live.max_streams = bound


@pytest_twisted.ensureDeferred
async def test_the_operator_finds_the_customer_and_registers_a_meter(world: World, browser: Browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base = world.server.url

    def desk() -> dict[str, Any]:
        driver = browser.driver
        browser.read_console()
        log_in(browser, base, "f-operator_token", world.server.token)
        seen: dict[str, Any] = {"start": heading(driver)}
        search = driver.find_element(By.ID, "f-q")
        search.send_keys("joao" + Keys.ENTER)  # accents aside
        link = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'a[href="{routes.href(routes.STAFF_CUSTOMER, id=A)}"]'))
        link[0].click()
        wait(driver, lambda d: heading(d) == NAME)
        seen["record"] = driver.find_element(By.ID, "main").text
        driver.find_element(By.CSS_SELECTOR, f'a[href="{routes.href(routes.STAFF_NEW_METER, id=A)}"]').click()
        wait(driver, lambda d: heading(d) == "Novo medidor")
        seen["prefilled"] = driver.find_element(By.ID, "f-id").get_attribute("value")
        driver.find_element(By.CSS_SELECTOR, "form.stack-form button[type=submit]").click()
        key = wait(driver, lambda d: d.find_elements(By.ID, "new-key"))[0]
        seen["done"] = heading(driver)
        seen["key"] = key.get_attribute("value")
        driver.find_element(By.CSS_SELECTOR, "[data-copy=new-key]").click()
        seen["copied"] = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".secret-box .copy-status").text)
        load(browser, driver.current_url)  # the same page again: the form, no key
        seen["again"] = driver.find_elements(By.ID, "new-key")
        seen["errors"] = errors(browser.read_console())
        return seen

    seen = await in_thread(desk)
    assert seen["start"] == "Clientes"
    assert "Bifásica" in seen["record"] and "Comunicando" in seen["record"]
    assert seen["prefilled"] == A
    assert seen["done"] == f"Medidor 3 do cliente {format_taxid(A)} cadastrado"
    assert re.fullmatch(r"[0-9a-f]{64}", seen["key"]) and seen["copied"] == "Copiado."
    assert seen["again"] == []
    assert seen["errors"] == []
    status, body, _ = await world.server.call(
        "POST", "/postConsumo", token=seen["key"], json_body={"id": A, "id_medidor": 3, "valor": 1, "timestamp": int(time.time())}
    )
    assert status == 201, body  # the key the page showed is the meter's


#: (who is logged in, the screenshots' stem, the page)
PAGES = [
    ("none", "login", routes.LOGIN),
    ("customer", "overview", routes.OVERVIEW),
    ("customer", "history-month", routes.href(routes.HISTORY, kind="M")),
    ("customer", "history-day", routes.href(routes.HISTORY, kind="D", periodo=6)),
    ("customer", "history-year", routes.href(routes.HISTORY, kind="Y", medidor=1)),
    ("customer", "bill", routes.href(routes.BILL, periodo=1)),
    ("customer", "bill-preview", routes.BILL),
    ("customer", "alarms", routes.ALARMS),
    ("operator", "search", routes.href(routes.STAFF_SEARCH, q="joao silva")),
    ("operator", "customer", routes.href(routes.STAFF_CUSTOMER, id=A)),
    ("operator", "customer-overview", routes.href(routes.OVERVIEW, id=A)),
    ("operator", "new-customer", routes.STAFF_NEW_CUSTOMER),
    ("operator", "new-meter", routes.href(routes.STAFF_NEW_METER, id=A)),
    ("operator", "new-token", routes.href(routes.STAFF_NEW_TOKEN, id=A)),
    ("operator", "fleet", routes.STAFF_FLEET),
]


@pytest_twisted.ensureDeferred
async def test_every_page_is_usable_by_keyboard_labelled_within_the_csp_and_photographed(world: World, browser: Browser, artifacts: Path) -> None:
    base = world.server.url
    world.server.core.parts.fleet.sample()

    def audit() -> list[tuple[str, dict[str, Any]]]:
        results = []
        current = None
        for who, stem, path in PAGES:
            if who != current:
                if who == "customer":
                    log_in(browser, base, "f-id", A, world.token)
                elif who == "operator":
                    log_in(browser, base, "f-operator_token", world.server.token)
                else:
                    browser.driver.delete_all_cookies()
                current = who
            results.append((stem, audit_page(browser, base + path, f"real-{stem}", artifacts)))
        return results

    for stem, result in await in_thread(audit):
        assert_page_passes(result, stem)
        if stem in ("overview", "history-month", "bill"):
            assert result["charts"], f"{stem} has its chart"
