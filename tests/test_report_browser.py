"""The run report in a real browser: Debian's Chromium, headless, driven by chromedriver through Selenium.

The page must load with no console error and no request beyond the file itself (it is self-contained), show
every section, and show the numbers of the run's stats files. Each page's screenshot is kept as a test
artifact in tests/artifacts/. `.ci/setup` installs chromium and chromium-driver; where they are missing the
tests skip, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from distill.report import write_report
from tests.conftest import REPO
from tests.report_runs import BASE_KEY, STUDENT, make_run

ARTIFACTS = REPO / "tests" / "artifacts"
SECTIONS = ("overview", "funnel", "lengths", "scores", "ledger", "spec", "examples")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars")


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI must run the browser test (.ci/setup installs it)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        _unavailable("Debian's chromium / chromium-driver is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # "browser": the console; "performance": DevTools network events, to list every request the page made.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _load(driver, page: Path) -> dict:
    """Open the page; return its console messages and the URLs it requested (logs are drained per call)."""
    driver.get_log("browser"), driver.get_log("performance")  # drop what earlier pages left
    driver.get(page.as_uri())
    driver.execute_script("return document.readyState")
    console = driver.get_log("browser")
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return {"console": console, "urls": urls}


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The whole page as a PNG in the test's tmp dir, copied to tests/artifacts/."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 100, 16000))
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    driver.set_window_size(1280, 900)
    return path


def _assert_clean_load(driver, loaded: dict, page: Path) -> None:
    errors = [e for e in loaded["console"] if e["level"] == "SEVERE"]
    assert not errors, errors
    assert loaded["urls"] and all(u == page.as_uri() or u.startswith("data:") for u in loaded["urls"]), loaded["urls"]
    # The console check is not vacuous: an error the page logs does reach us.
    driver.execute_script("console.error('probe from the test')")
    assert any("probe from the test" in e["message"] for e in driver.get_log("browser"))


def _sections(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    out = {}
    for sid in SECTIONS:
        el = driver.find_element(By.ID, sid)
        assert el.is_displayed() and el.find_element(By.TAG_NAME, "h2").text, sid
        out[sid] = el.get_attribute("data-state")
    return out


def _metric(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-metric="{name}"]').text


def _as_int(text: str) -> int:
    return int(text.replace(",", ""))


def test_finished_run_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path / "run", ledger={"currency": "USD", "prices": {"accelerator_hour": 2.5}})
    page = write_report(run)
    _assert_clean_load(browser, _load(browser, page), page)
    assert _sections(browser) == {s: "done" for s in SECTIONS}
    assert browser.find_element(By.ID, "run-state").get_attribute("data-state") == "finished"

    # the charts are drawn: three matplotlib SVGs, each laid out at a real size
    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(charts) == 3 and all(c.size["width"] > 500 and c.size["height"] > 150 for c in charts)

    # funnel: each drop as shown on the page equals verify/stats.json
    verify = json.loads((run / "verify" / "stats.json").read_text())
    shown = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#funnel-table tr[data-reason]"):
        cells = row.find_elements(By.TAG_NAME, "td")
        assert cells[0].text == row.get_attribute("data-reason")
        shown[cells[0].text] = _as_int(cells[2].text)
    assert {r: n for r, n in shown.items() if n} == {r: n for r, n in verify["reasons"].items()
                                                      if r not in ("correct", "unreferenced")}
    for key in ("generated", "correct", "kept", "problems_with_kept_trace"):
        assert _as_int(_metric(browser, key)) == verify[key], key
    kept_row = browser.find_element(By.CSS_SELECTOR, '#funnel-table tr[data-step="kept"]')
    assert _as_int(kept_row.find_elements(By.TAG_NAME, "td")[4].text) == verify["kept"]

    # scores: pass@1 and its standard error, in %, as scores.json has them
    expected = {}
    for key in (BASE_KEY, f"eval/{STUDENT}"):
        for bench, s in json.loads((run / key / "scores.json").read_text())["benchmarks"].items():
            expected[(key.split("/")[1], bench)] = f"{100 * s['pass@1']:.1f} ± {100 * s['stderr']:.1f}"
    cells = browser.find_elements(By.CSS_SELECTOR, "#scores-table td[data-pass1]")
    shown = {(c.get_attribute("data-model"), c.get_attribute("data-benchmark")): c.text.splitlines()[0] for c in cells}
    assert shown == expected

    # ledger: token totals from the generate stage's marker; cost from the price in run.json
    gen = json.loads((run / "generate" / "_DONE.json").read_text())["stats"]
    assert _as_int(_metric(browser, "prompt_tokens")) == gen["prompt_tokens"]
    assert _as_int(_metric(browser, "completion_tokens")) == gen["completion_tokens"]
    assert _as_int(_metric(browser, "teacher_tokens")) == gen["prompt_tokens"] + gen["completion_tokens"]
    hours = browser.find_element(By.CSS_SELECTOR, '[data-metric="accelerator_hours"]').get_attribute("data-value")
    acc_hours = float(hours)
    assert _metric(browser, "accelerator_hours") == f"{acc_hours:.3f}"
    assert _metric(browser, "cost_total") == f"${acc_hours * 2.5:,.2f}"

    # examples: one kept trace, then one per rejection reason
    examples = [e.get_attribute("data-example") for e in browser.find_elements(By.CSS_SELECTOR, "[data-example]")]
    rejected = [r for r in verify["reasons"] if r not in ("correct", "unreferenced")]
    assert examples[0] == "kept" and sorted(examples[1:]) == sorted(f"rejected: {r}" for r in rejected)
    _screenshot(browser, tmp_path, "report-finished.png")


def test_run_in_progress_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path / "run", upto="generate")
    page = write_report(run)
    _assert_clean_load(browser, _load(browser, page), page)
    assert _sections(browser) == {"overview": "partial", "funnel": "waiting", "lengths": "partial",
                                  "scores": "waiting", "ledger": "partial", "spec": "done", "examples": "waiting"}
    assert browser.find_element(By.ID, "run-state").text == "in progress: 2 of 8 stages done"
    assert "waiting for stage 'verify' (running now)" in browser.find_element(By.ID, "funnel").text
    assert "no prices in spec" in browser.find_element(By.ID, "ledger").text
    gen = json.loads((run / "generate" / "_DONE.json").read_text())["stats"]
    assert _as_int(_metric(browser, "completion_tokens")) == gen["completion_tokens"]
    assert _metric(browser, "kept") == "—"
    _screenshot(browser, tmp_path, "report-in-progress.png")
