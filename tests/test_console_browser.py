"""The console in a real browser (headless Chromium from Debian's packages, driven by Selenium):
each page loads, a click leads from the overview to an instance that timed out and was then
corrected by a late event, and hostile input runs nothing. Screenshots go to the test's tmp
folder."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from console.app import create_app
from console.reader import RunReader
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.payloads.bundled import bundled_registry
from state.catalog import load_catalog
from tests.console_kit import HOSTILE_ID, hostile_run

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=(
        "needs headless Chromium: apt-get install chromium chromium-driver (.ci/run does)")),
]
# Headless, and quiet on a machine with no internet (no background connections, no updates).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER or ""))
    yield driver
    driver.quit()


def serve(out: Path, definitions: Path) -> Iterator[str]:
    """The console over `out` on a free loopback port, in a thread, for as long as the caller
    iterates: yields its base URL."""
    catalog = load_catalog(definitions)
    app = create_app(RunReader(out, catalog), catalog.decode_rules(bundled_registry()),
                     refresh_seconds=0)
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def demo_url(out: Path) -> Iterator[str]:
    yield from serve(out, BUNDLED_DEFINITIONS)


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("hostile")
    yield from serve(hostile_run(folder), folder / "defs")


def nothing_ran(driver: WebDriver) -> None:
    """No script element, no event-handler attribute, and the marker the payloads set unset."""
    run = driver.execute_script
    assert run("return typeof window.pwned") == "undefined"
    assert run("return document.querySelectorAll('script').length") == 0
    assert run("return [...document.querySelectorAll('*')].filter(e => "
               "[...e.attributes].some(a => a.name.startsWith('on'))).length") == 0


def follow(driver: WebDriver, element: WebElement) -> None:
    """Click a link or submit button and wait until the next page has replaced this one: a click
    returns before the navigation it starts, so reading the page straight after it may read the
    old one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def test_every_page_and_a_click_to_a_corrected_timeout(browser: WebDriver, demo_url: str,
                                                       tmp_path: Path) -> None:
    driver = browser
    driver.get(demo_url + "/")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
    nothing_ran(driver)
    driver.save_screenshot(str(tmp_path / "overview.png"))

    rows = driver.find_elements(By.CSS_SELECTOR, "#corrections tbody tr")
    timed_out = next(r for r in rows if r.find_elements(By.TAG_NAME, "td")[1].text == "timed_out")
    follow(driver, timed_out.find_element(By.TAG_NAME, "a"))
    assert urlparse(driver.current_url).path.startswith("/instances/")
    kinds = [e.get_attribute("data-kind")
             for e in driver.find_elements(By.CSS_SELECTOR, "#timeline > tbody > tr")]
    assert kinds.index("deadline_fired") < kinds.index("outcome") < kinds.index("correction")
    assert "timed_out" in driver.find_element(By.CSS_SELECTOR, '[data-key="outcome"]').text
    nothing_ran(driver)
    driver.save_screenshot(str(tmp_path / "instance.png"))

    driver.get(demo_url + "/instances")
    driver.find_element(By.CSS_SELECTOR, 'select[name=outcome] option[value=timed_out]').click()
    driver.find_element(By.NAME, "corrected").click()
    follow(driver, driver.find_element(By.CSS_SELECTOR, 'button[type="submit"]'))
    listed = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    assert listed and all(r.find_elements(By.TAG_NAME, "td")[3].text == "timed_out"
                          for r in listed)
    driver.save_screenshot(str(tmp_path / "instances.png"))

    driver.get(demo_url + "/dead-letters")
    assert driver.find_elements(By.CSS_SELECTOR, "#dead_letters tbody tr")
    nothing_ran(driver)
    driver.save_screenshot(str(tmp_path / "dead_letters.png"))
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000
               for name in ("overview", "instance", "instances", "dead_letters"))


def test_hostile_input_runs_nothing(browser: WebDriver, hostile_url: str, tmp_path: Path) -> None:
    """Markup in ids, states, payloads, headers and dead letters is shown as text and never runs,
    on every page, including the hostile instance reached by its link."""
    driver = browser
    for path in ("/", "/instances", "/dead-letters"):
        driver.get(hostile_url + path)
        nothing_ran(driver)
    driver.get(hostile_url + "/instances")
    follow(driver, driver.find_element(By.CSS_SELECTOR, "#instances tbody a"))
    assert unquote(urlparse(driver.current_url).path) == f"/instances/tickets/{HOSTILE_ID}"
    assert driver.find_element(By.ID, "instance-id").text == HOSTILE_ID
    nothing_ran(driver)
    follow(driver, driver.find_element(By.CSS_SELECTOR, "a.raw"))
    assert "<script>window.pwned=1</script>" in driver.find_element(By.ID, "raw-value").text
    nothing_ran(driver)
    driver.save_screenshot(str(tmp_path / "hostile_record.png"))


@pytest.fixture(scope="module")
def claims_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The console over a claims run in business time whose end fires nothing (some stay open)."""
    from dataflows.cli import main as cli_main

    claims = BUNDLED_DEFINITIONS / "claims"
    out = tmp_path_factory.mktemp("claims") / "out"
    assert cli_main(["run", "--definitions", str(claims), "--out", str(out), "--sim-instances",
                     "300", "--sim-seed", "4", "--sim-rate", "0.0005", "--no-drain-at-eof"]) == 0
    yield from serve(out, claims)


def test_due_next_filters_and_leads_to_the_pending_deadlines(browser: WebDriver, claims_url: str,
                                                            tmp_path: Path) -> None:
    """The Due next page lists open instances soonest first; filtering by a deadline name keeps
    only that name, and a click leads to the instance's pending deadlines, the same name first."""
    driver = browser
    driver.get(claims_url + "/due")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Due next"
    nothing_ran(driver)
    cells = [r.find_elements(By.TAG_NAME, "td")
             for r in driver.find_elements(By.CSS_SELECTOR, "#due tbody tr")]
    assert cells
    dues = [c[4].text for c in cells]
    assert dues == sorted(dues)
    driver.save_screenshot(str(tmp_path / "due.png"))
    name = cells[0][3].text
    driver.find_element(By.CSS_SELECTOR, f'select[name=deadline] option[value="{name}"]').click()
    follow(driver, driver.find_element(By.CSS_SELECTOR, 'button[type="submit"]'))
    listed = driver.find_elements(By.CSS_SELECTOR, "#due tbody tr")
    assert listed and all(r.find_elements(By.TAG_NAME, "td")[3].text == name for r in listed)
    follow(driver, listed[0].find_element(By.TAG_NAME, "a"))
    pending = driver.find_elements(By.CSS_SELECTOR, "#pending tbody tr")
    assert pending and pending[0].find_elements(By.TAG_NAME, "td")[0].text == name
    nothing_ran(driver)
    driver.save_screenshot(str(tmp_path / "due_instance.png"))
    assert (tmp_path / "due.png").stat().st_size > 10_000
