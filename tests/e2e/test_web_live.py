"""End to end: the web pages of a real `shortflow live --enforce nft --api` in the lab's
router namespace, in a real headless Chromium.

One live run: a Shorts session from the lab's client shows on the overview (named from a
dnsmasq leases file) and is blocked (the Blocks page lists it, the nftables set holds it);
the client's page records 15 s of that session as Shorts (the row ends "done" with packets,
the pcap downloads, `shortflow dataset verify` accepts the recordings manifest);
a policy edit in the form takes effect (GET /v1/policy and the file); Unblock lifts the
block (the row and the set entry go); a TLS ClientHello whose SNI is a script tag shows as
text on the Live page and runs nothing. Screenshots of every page at desktop and phone
widths go to build/screenshots (or SHORTFLOW_SCREENSHOTS).
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from classifier.web.session import COOKIE
from tests.netns import requires_netns
from tests.web.browser import chromium, requires_browser, shoot, submit

pytestmark = [requires_netns, requires_browser, pytest.mark.netns, pytest.mark.slow]

lab = pytest.importorskip("training.lab.generate")
from tests.e2e.live_lab import (  # noqa: E402
    NetnsForward,
    nft_elements,
    start_live,
    start_play,
    stop,
)
from training.lab.topology import CLIENT_IP, SERVER_IP, child_env, repo_root  # noqa: E402

TOKEN = "e2e-web-token-0123456789abcdef"
API_PORT = 8765  # on the router namespace's loopback
SNI = "<script>alert(1)</script>.example"
BLOCK_WAIT_S = 100
RECORD_MIN = "0.25"  # 15 s of the Shorts session

_SNI_SERVER = (
    "import socket,sys,time; s=socket.create_server((sys.argv[1], 8443)); "
    "c,_=s.accept(); c.settimeout(60)\n"
    "try:\n while c.recv(65536): pass\nexcept OSError: pass"
)
_SNI_CLIENT = (
    "import socket,sys,time; from classifier.names.tls import build_client_hello; "
    "c=socket.create_connection((sys.argv[1], 8443), timeout=10); "
    "c.sendall(build_client_hello(sys.argv[2], ('h2',)))\n"
    "for _ in range(40): time.sleep(0.5); c.sendall(b'x' * 200)"
)


@dataclass
class Router:
    the_lab: Any
    live: Any
    audit: Path
    policy: Path
    forward: NetnsForward
    tmp: Path
    data: Path


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("web-live")
    leases = tmp / "dnsmasq.leases"
    leases.write_text(f"{int(time.time()) + 3600} aa:bb:cc:dd:ee:10 {CLIENT_IP} kids-phone *\n")
    with lab.Lab("fibre") as the_lab:
        live, audit = start_live(
            the_lab,
            tmp,
            "nft",
            block=600,
            extra_args=[
                "--api",
                f"127.0.0.1:{API_PORT}",
                "--leases",
                str(leases),
                "--data-dir",
                str(tmp / "data"),
            ],
            env={"SHORTFLOW_API_TOKEN": TOKEN},
        )
        forward = NetnsForward(the_lab.topo.router_ns, API_PORT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(forward.url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the live API did not answer"
                time.sleep(0.5)
            yield Router(the_lab, live, audit, tmp / "policy-nft.toml", forward, tmp, tmp / "data")
        finally:
            forward.close()
            stop(live)


def _sni_flow(r: Router) -> list[Any]:
    """A TCP connection from the client to the server whose ClientHello names SNI."""
    topo = r.the_lab.topo
    server = topo.popen(
        topo.server_ns,
        [sys.executable, "-c", _SNI_SERVER, SERVER_IP],
        log=r.tmp / "sni-server.log",
        env=child_env(),
        cwd=repo_root(),
    )
    time.sleep(0.5)
    client = topo.popen(
        topo.client_ns,
        [sys.executable, "-c", _SNI_CLIENT, SERVER_IP, SNI],
        log=r.tmp / "sni-client.log",
        env=child_env(),
        cwd=repo_root(),
    )
    return [server, client]


def _block_row(d: Any, url: str) -> Any:
    """Reload the Blocks page until it lists an nft block of the lab's client."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + BLOCK_WAIT_S
    while True:
        d.get(url + "/blocks")
        for row in d.find_elements(By.CSS_SELECTOR, "tr[data-block]"):
            if row.text.startswith(CLIENT_IP) and "dry-run" not in row.text:
                return row
        assert time.monotonic() < deadline, "the Shorts session was not blocked in time"
        time.sleep(3)


def _recording_done(d: Any, rec_id: str | None, timeout: float = 40.0) -> None:
    """Reload the client's page until the recording's row says it is done."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        rows = d.find_elements(By.CSS_SELECTOR, f'tr[data-recording="{rec_id}"]')
        if rows and rows[0].get_attribute("data-state") != "running":
            assert rows[0].get_attribute("data-state") == "done", rows[0].text
            return
        assert time.monotonic() < deadline, "the recording did not end in time"
        time.sleep(1)
        d.refresh()


def test_web_pages_on_the_live_router(router: Router) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    url = router.forward.url
    procs = _sni_flow(router)
    player, _result, _log = start_play(router.the_lab, router.tmp, "shorts", seed=902, seconds=90)
    procs.append(player)
    try:
        with chromium() as d:
            d.get(url + "/")
            assert "/login" in d.current_url
            d.find_element(By.NAME, "token").send_keys(TOKEN)
            submit(d, d.find_element(By.CSS_SELECTOR, "form button[type=submit]"))

            # record the client from its page while the Shorts session plays
            d.get(url + f"/clients/{CLIENT_IP}")
            form = d.find_element(By.ID, "record-form")
            assert form.find_element(By.NAME, "alias").get_attribute("value") == "kids-phone"
            form.find_element(By.NAME, "minutes").clear()
            form.find_element(By.NAME, "minutes").send_keys(RECORD_MIN)
            submit(d, form.find_element(By.CSS_SELECTOR, "button"))
            assert "started" in d.find_element(By.CSS_SELECTOR, ".note.ok").text
            rec_id = d.find_element(By.CSS_SELECTOR, "tr[data-recording]").get_attribute(
                "data-recording"
            )

            _block_row(d, url)
            time.sleep(2)  # a block covers each media connection of the session: all of them
            player.terminate()  # the session is over: nothing new to block
            d.get(url + "/blocks")
            block_ids = [
                row.get_attribute("data-block")
                for row in d.find_elements(By.CSS_SELECTOR, "tr[data-block]")
                if row.text.startswith(CLIENT_IP)
            ]
            assert CLIENT_IP in str(nft_elements(router.the_lab.topo))
            shoot(d, "e2e-blocks")

            d.get(url + "/")
            card = d.find_element(By.CSS_SELECTOR, ".card.client")
            assert "kids-phone" in card.text and "aa:bb:cc:dd:ee:10" in card.text
            assert "blocked" in card.text
            assert card.find_elements(By.CSS_SELECTOR, ".chart canvas")
            shoot(d, "e2e-overview")

            # the recording: done, with packets; the pcap downloads; the manifest verifies
            submit(d, card.find_element(By.CSS_SELECTOR, "a.alias"))
            _recording_done(d, rec_id)
            row = d.find_element(By.CSS_SELECTOR, f'tr[data-recording="{rec_id}"]')
            assert int(row.find_element(By.CSS_SELECTOR, ".rec-packets").text) > 0
            assert row.find_element(By.CSS_SELECTOR, ".rec-dropped").text == "0"
            assert "blocked" in d.find_element(By.CSS_SELECTOR, "h1").text
            shoot(d, "e2e-client")
            href = row.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
            got = httpx.get(href, cookies={COOKIE: d.get_cookie(COOKIE)["value"]}, timeout=30)
            assert got.status_code == 200, got.text
            pcap = router.data / "recordings" / f"{rec_id}.pcap"
            assert got.content == pcap.read_bytes() and len(got.content) > 24
            manifest = router.data / "recordings" / "manifest.csv"
            verify = subprocess.run(
                [sys.executable, "-m", "classifier.cli", "dataset", "verify", str(manifest)],
                capture_output=True,
                text=True,
                cwd=repo_root(),
                timeout=120,
            )
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "1 capture(s), ok" in verify.stderr
            assert ",short-form,youtube,household,kids-phone," in manifest.read_text()

            d.get(url + "/live?" + httpx.QueryParams({"client": CLIENT_IP}).__str__())
            assert SNI in d.find_element(By.ID, "flows").text
            with pytest.raises(NoAlertPresentException):
                d.switch_to.alert  # noqa: B018 - raises when no alert opened
            shoot(d, "e2e-live")

            # the policy form: stop blocking Shorts; it is saved and in force at once
            before = router.policy.read_text()
            d.get(url + "/policy")
            shorts = d.find_element(By.CSS_SELECTOR, "input[name=categories][value=shorts]")
            assert shorts.is_selected()
            shorts.click()
            submit(d, d.find_element(By.CSS_SELECTOR, "#policy-form button[name=save_form]"))
            assert "saved to" in d.find_element(By.CSS_SELECTOR, ".note.ok").text
            shoot(d, "e2e-policy")
            running = httpx.get(
                url + "/v1/policy", headers={"Authorization": f"Bearer {TOKEN}"}
            ).json()
            assert running["categories"] == ["reels", "tiktok"]
            assert router.policy.read_text() != before
            assert tomllib.loads(router.policy.read_text())["categories"] == ["reels", "tiktok"]

            # Unblock: the rows go, and so do the nftables set entries
            for block_id in block_ids:
                d.get(url + "/blocks")
                submit(d, d.find_element(By.CSS_SELECTOR, f'tr[data-block="{block_id}"] .unblock'))
                assert "unblocked" in d.find_element(By.CSS_SELECTOR, ".note.ok").text
                assert not d.find_elements(By.CSS_SELECTOR, f'tr[data-block="{block_id}"]')
            assert CLIENT_IP not in str(nft_elements(router.the_lab.topo))
            shoot(d, "e2e-blocks-after")

            d.get(url + "/model")
            shoot(d, "e2e-model")
            d.get(url + "/captures")
            shoot(d, "e2e-captures")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
