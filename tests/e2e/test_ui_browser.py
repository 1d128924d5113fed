"""The mesh-health page (``GET /ui``) in a real headless Chromium driven by Selenium, against real daemons.

Two daemons with auth on are paired (a federation pair, B initiating); B also has a fleet sync pair whose peer
reports records it has not handed over yet, so that pair's lag stays above zero (a real peer's lag is only above
zero between two pages of one pull, too brief to look at). The browser opens B's page, is given a
``metrics:read`` token, and must show both pairs with the figures the API answers; then a pair is paused and the
page must follow within a few of its one-second snapshots. Every wait is a ``WebDriverWait`` on the page's text.

The browser is Debian's ``chromium`` + ``chromium-driver`` (``make test`` installs them when it can); Selenium is
pointed at both so that it never downloads a driver or a browser. Without them the test skips and says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import mint_token
from fake_peer import FakePeer

from spl.daemon.launcher import DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path(__file__).resolve().parents[2] / "build" / "ui-screenshot.png"
PEER_LAG = 7  # records the lagging peer says it holds beyond what it serves
WAIT = 10.0  # seconds for the page to show a change (it gets a snapshot every second)


class LaggingPeer(FakePeer):
    """A peer whose pages say ``PEER_LAG`` more records wait after the last one: the puller's lag stays there."""

    def page(self, after: int, limit: int) -> dict[str, Any]:
        page = super().page(after, limit)
        page["pending"] = page["pending"] + PEER_LAG
        return page


def start_node(root: Path) -> DaemonProcess:
    """A daemon with auth on that accepts a federation pair at once (``pair_approval = auto``)."""
    process = DaemonProcess(root, insecure=False)
    config = process.home.load_config()
    config.federation.pair_approval = "auto"
    config.federation.auto_namespaces = ["default"]
    process.home.save_config(config)
    process.start(port=0)
    return process


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    with ThreadPoolExecutor(2) as pool:  # the two start-ups overlap: each mostly waits for its child
        futures = [pool.submit(start_node, tmp_path / name) for name in ("a", "b")]
        started = [future.result() for future in futures]
    try:
        yield started[0], started[1]
    finally:
        for process in started:
            process.kill()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(
            f"no browser: {', '.join(missing)} missing (make test installs them with "
            "`apt-get install -y chromium chromium-driver` when run as root on Debian/Ubuntu)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must not look for (or download) a driver or a browser: both are given, and it is offline.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def admin(node: DaemonProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {node.admin_token}", "content-type": "application/json"}


def test_the_page_shows_both_kinds_of_pair_live(
    nodes: tuple[DaemonProcess, DaemonProcess], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    a, b = nodes
    peer = LaggingPeer()
    with peer.running(), httpx.Client(timeout=30) as http:
        paired = http.post(f"{b.url}/v1/federation/pairs", json={"url": a.url}, headers=admin(b))
        assert paired.status_code == 201, paired.text
        fed_id = paired.json()["pair_id"]
        created = http.post(
            f"{b.url}/v1/sync/pairs",
            json={"peer_did": peer.identity.did, "peer_url": peer.url, "thread_id": "th_ui", "mode": "on-demand"},
            headers=admin(b),
        )
        assert created.status_code == 201, created.text
        sync_id = created.json()["pair_id"]
        kicked = http.post(f"{b.url}/v1/sync/pairs/{sync_id}/kick?wait=1", headers=admin(b))
        assert kicked.status_code == 200, kicked.text
        sync_pair = http.get(f"{b.url}/v1/sync/pairs/{sync_id}", headers=admin(b)).json()
        assert sync_pair["lag_records"] == PEER_LAG, sync_pair
        token = mint_token(b, ["metrics:read"], "mesh page")

        driver = browser
        wait = WebDriverWait(driver, WAIT)
        driver.get(f"{b.url}/ui")
        field = wait.until(
            lambda d: d.find_element(By.ID, "token") if d.find_element(By.ID, "token").is_displayed() else None
        )
        field.send_keys(token)
        driver.find_element(By.ID, "token-submit").click()

        def text(selector: str) -> str:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            return str(found[0].text) if found else ""

        sync_row = f'tr[data-kind="sync"][data-pair-id="{sync_id}"]'
        fed_row = f'tr[data-kind="federation"][data-pair-id="{fed_id}"]'
        wait.until(lambda _: text(f"{sync_row} .lag-records") == str(sync_pair["lag_records"]))
        assert text(f"{sync_row} .state") == sync_pair["state"]
        fed_state = http.get(f"{b.url}/v1/federation/pairs/{fed_id}", headers=admin(b)).json()["state"]
        wait.until(lambda _: text(f"{fed_row} .state") == fed_state)
        assert text("#head-sequence").isdigit()
        assert "store-writer" in text("#tree")
        assert driver.find_elements(By.CSS_SELECTOR, f"{sync_row} svg.spark polyline")

        paused = http.post(f"{b.url}/v1/federation/pairs/{fed_id}/pause", json={}, headers=admin(b))
        assert paused.status_code == 200, paused.text
        wait.until(lambda _: text(f"{fed_row} .state") == "paused")

        # The token stays in this tab's sessionStorage, never in the address; the console is clean.
        assert driver.execute_script("return sessionStorage.getItem('spl.ui.token')") == token
        assert token not in driver.current_url
        # No script error, no CSP violation, no failed load (the page asks this daemon for nothing it lacks).
        console = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert console == [], console

        screenshot = tmp_path / "ui-screenshot.png"
        assert driver.save_screenshot(str(screenshot))
        SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT_COPY)
        print(f"screenshot of the mesh-health page: {screenshot} (copied to {SCREENSHOT_COPY})")
