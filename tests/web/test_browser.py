"""The web pages in a real headless Chromium against a real uvicorn on 127.0.0.1 with a real
LiveState (dry-run enforcer, real audit log and policy file) and the shipped model:
login, every page at desktop and phone widths (screenshots), charts drawn by uPlot under
the page's CSP, a script-tag SNI and alias shown as text, the policy form, block and
unblock, and a capture upload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from classifier.api import Settings, create_app
from classifier.live.recording import Recorder
from tests.api.conftest import RunningServer, start_server
from tests.test_recording import _tcp
from tests.web.browser import chromium, requires_browser, screenshot_dir, shoot, submit
from tests.web.conftest import SCRIPT_NAME, TOKEN, WebLive, feed

pytestmark = [requires_browser]

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "sample.pcap"


@pytest.fixture
def server(web_live: WebLive, tmp_path: Path) -> Iterator[RunningServer]:
    feed(web_live.state)
    recorder = web_live.state.recorder = Recorder(tmp_path / "data")
    usage = web_live.state.usage
    assert usage is not None
    now = time.time()
    for hours_ago, kind, seconds in ((1, 0, 900), (3, 1, 1800), (5, 2, 600), (20, 0, 300)):
        usage.add("10.77.1.2", kind, now - hours_ago * 3600, seconds)
    srv = start_server(create_app(Settings(api_token=SecretStr(TOKEN)), web_live.state))
    try:
        yield srv
    finally:
        srv.stop()
        recorder.close()


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when there is none


def test_pages_in_chromium(server: RunningServer, web_live: WebLive) -> None:
    from selenium.webdriver.common.by import By

    # a session where short-form is likeliest but too few windows agree yet
    web_live.state.update_session(
        "10.77.1.4",
        "youtube",
        {"label": "long-form", "probability": 0.05, "action": "none", "reason": "churn"}
        | {"pending": "short-form", "short_form_votes": 2, "short_form_needed": 3},
    )
    with chromium() as d:
        d.get(server.url + "/live")
        assert "/login" in d.current_url
        shoot(d, "login")
        d.find_element(By.NAME, "token").send_keys(TOKEN)
        submit(d, d.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        assert d.current_url.endswith("/live")

        # the script-tag SNI is text, and no script of it ran
        flows = d.find_element(By.ID, "flows").text
        assert SCRIPT_NAME in flows
        _no_alert(d)
        # the "short-form?" badge is shown in its own colour (the stylesheet applies
        # under the page's CSP), with the agreeing windows
        badge = d.find_element(By.CSS_SELECTOR, ".l-pending")
        assert badge.is_displayed() and badge.text == "short-form? 2 of 3 windows"
        assert badge.value_of_css_property("color") in ("rgba(217, 72, 15, 1)", "rgb(217, 72, 15)")
        shoot(d, "live")

        d.get(server.url + "/")
        name = d.find_element(By.CSS_SELECTOR, "#client-0 details")
        name.click()
        box = name.find_element(By.NAME, "name")
        box.clear()
        box.send_keys("<script>alert(3)</script> phone")
        submit(d, name.find_element(By.CSS_SELECTOR, "button"))
        assert "<script>alert(3)</script> phone" in d.find_element(By.ID, "client-0").text
        _no_alert(d)
        assert d.find_elements(By.CSS_SELECTOR, "#client-0 .chart canvas"), "no chart drawn"
        shoot(d, "overview")

        # the client's page: record it, stop, relabel, delete (behind a second click)
        submit(d, d.find_element(By.CSS_SELECTOR, 'a.alias[href="/clients/10.77.1.2"]'))
        assert d.current_url.endswith("/clients/10.77.1.2")
        assert d.find_elements(By.CSS_SELECTOR, ".chart canvas"), "no chart drawn"
        form = d.find_element(By.ID, "record-form")
        form.find_element(By.NAME, "minutes").clear()
        form.find_element(By.NAME, "minutes").send_keys("0.5")
        submit(d, form.find_element(By.CSS_SELECTOR, "button"))
        assert "started" in d.find_element(By.CSS_SELECTOR, ".note.ok").text
        web_live.state.record_packets([_tcp(i) for i in range(40)])
        for rec in (web_live.state.start_recording("10.77.1.3", 1, "long-form"),):
            web_live.state.stop_recording(rec["id"])  # a second, ended one for the picture
        shoot(d, "client-recording")
        submit(d, d.find_element(By.CSS_SELECTOR, "tr[data-state=running] button.stop"))
        row = d.find_element(By.CSS_SELECTOR, "tr[data-recording]")
        assert row.get_attribute("data-state") == "stopped"
        assert row.find_element(By.CSS_SELECTOR, ".rec-packets").text == "40"
        shoot(d, "client")
        d.get(server.url + "/recordings")
        shoot(d, "recordings")
        row = d.find_element(By.CSS_SELECTOR, "tr[data-state=stopped]")
        row.find_element(By.CSS_SELECTOR, "details.confirm summary").click()
        submit(d, row.find_element(By.CSS_SELECTOR, "button.delete"))
        assert len(d.find_elements(By.CSS_SELECTOR, "tr[data-recording]")) == 1

        d.get(server.url + "/policy")
        d.find_element(By.NAME, "agreement_k").clear()
        d.find_element(By.NAME, "agreement_k").send_keys("9")
        submit(d, d.find_element(By.CSS_SELECTOR, "#policy-form button[name=save_form]"))
        err = d.find_element(By.CSS_SELECTOR, '.field-error[data-key="agreement.k"]')
        assert "must not exceed" in err.text
        shoot(d, "policy-error")
        d.find_element(By.NAME, "agreement_k").clear()
        d.find_element(By.NAME, "agreement_k").send_keys("1")
        submit(d, d.find_element(By.CSS_SELECTOR, "#policy-form button[name=save_form]"))
        assert "saved to" in d.find_element(By.CSS_SELECTOR, ".note.ok").text
        assert "k = 1" in web_live.policy_path.read_text()
        shoot(d, "policy")

        d.get(server.url + "/blocks")
        form = d.find_element(By.ID, "block-form")
        form.find_element(By.NAME, "client").send_keys("10.77.1.2")
        form.find_element(By.NAME, "server").send_keys("10.77.2.2")
        submit(d, form.find_element(By.CSS_SELECTOR, "button"))
        assert d.find_elements(By.CSS_SELECTOR, "tr[data-block]")
        shoot(d, "blocks")
        submit(d, d.find_element(By.CSS_SELECTOR, "tr[data-block] button.unblock"))
        assert not d.find_elements(By.CSS_SELECTOR, "tr[data-block]")
        assert web_live.state.blocks() == []

        d.get(server.url + "/model")
        assert d.find_element(By.ID, "model-card").text
        shoot(d, "model")

        d.get(server.url + "/captures")
        shoot(d, "captures-empty")
        d.find_element(By.NAME, "file").send_keys(str(SAMPLE))
        submit(d, d.find_element(By.CSS_SELECTOR, "#capture-form button"))
        assert d.find_element(By.ID, "capture-flows").text
        assert d.find_elements(By.CSS_SELECTOR, ".chart canvas"), "no timeline drawn"
        shoot(d, "captures")
        logs = d.get_log("browser") if hasattr(d, "get_log") else []
        # script errors and CSP refusals (the 422 of the bad policy is a network entry)
        assert not [e for e in logs if e.get("source") != "network"], logs
    assert any(screenshot_dir().glob("overview-phone.png"))
