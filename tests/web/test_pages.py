"""The web pages through the real app (httpx TestClient): login, cookie, CSRF, policy form,
escaping, blocks, and the serve-only mode."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from classifier.api import Settings, create_app
from classifier.enforce.audit import read_audit
from classifier.web.session import COOKIE
from tests.web.conftest import TOKEN, WebLive, feed

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("10.77.1.2", 50000)


_open: list[TestClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().__exit__(None, None, None)


def _client(
    live: WebLive | None, token: str | None = TOKEN, peer: tuple[str, int] = LOOPBACK
) -> TestClient:
    """A client of a new app (its lifespan runs; no model directory, so no model loads)."""
    settings = Settings(
        api_token=SecretStr(token) if token else None, model_dir=Path(__file__).parent / "none"
    )
    app = create_app(settings, live.state if live else None)
    client = TestClient(app, client=peer, follow_redirects=False)
    client.__enter__()
    _open.append(client)
    return client


def _login(c: TestClient) -> None:
    r = c.post("/login", data={"token": TOKEN, "next": "/policy"})
    assert r.status_code == 303 and r.headers["location"] == "/policy"


def _csrf(c: TestClient, path: str = "/policy") -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', r.text)
    assert m, "no CSRF token in the page"
    return m.group(1)


def _replace_cookie(client: TestClient, value: str) -> None:
    """Give the client one session cookie, ``value``, as a browser's jar holds one per
    name and site (a test client may keep the server's cookie beside a set one)."""
    client.cookies.clear()
    client.cookies.set(COOKIE, value)


def test_login_sets_a_signed_httponly_strict_cookie(web_live: WebLive) -> None:
    c = _client(web_live)
    r = c.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert c.post("/login", data={"token": "wrong" * 8}).status_code == 401
    r = c.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie
    assert c.get("/").status_code == 200
    assert "default-src 'none'" in c.get("/").headers["content-security-policy"]
    # a tampered cookie, or one signed by another process, lets nobody in
    value = c.cookies[COOKIE]
    _replace_cookie(c, value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert c.get("/").status_code == 303
    other = _client(web_live)
    _login(other)
    _replace_cookie(c, other.cookies[COOKIE])
    assert c.get("/").status_code == 303
    # the bearer header works as the JSON API's does
    bare = _client(web_live)
    assert bare.get("/live", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert bare.get("/live", headers={"Authorization": "Bearer nope"}).status_code == 303


def test_forms_need_the_csrf_token_of_the_session(web_live: WebLive) -> None:
    c = _client(web_live)
    _login(c)
    token = _csrf(c)
    before = web_live.policy_path.read_text()
    form = {
        "mode": "dry-run",
        "block_seconds": "60",
        "agreement_k": "1",
        "agreement_n": "1",
        "agreement_threshold": "0.5",
    }
    assert c.post("/policy", data=form).status_code == 403
    assert c.post("/policy", data={**form, "csrf": "0" * 64}).status_code == 403
    other = _client(web_live)
    _login(other)
    assert c.post("/policy", data={**form, "csrf": _csrf(other)}).status_code == 403
    assert (
        c.post(
            "/blocks", data={"client": "10.77.1.2", "server": "10.77.2.2", "minutes": "5"}
        ).status_code
        == 403
    )
    assert web_live.policy_path.read_text() == before
    # without the login, the right token is not enough either
    anon = _client(web_live)
    assert anon.post("/policy", data={**form, "csrf": token}).status_code == 401
    assert c.post("/policy", data={**form, "csrf": token}).status_code == 303


def test_without_a_token_only_loopback_browsers(web_live: WebLive) -> None:
    remote = _client(web_live, token=None, peer=REMOTE)
    r = remote.get("/")
    assert r.status_code == 403 and "loopback" in r.text
    local = _client(web_live, token=None)
    r = local.get("/policy")
    assert r.status_code == 200 and COOKIE in r.headers["set-cookie"]
    token = _csrf(local)
    assert local.post("/clients/name", data={"client": "10.77.1.2", "name": "x"}).status_code == 403
    r = local.post("/clients/name", data={"client": "10.77.1.2", "name": "x", "csrf": token})
    assert r.status_code == 303


def test_policy_form_errors_beside_the_field_and_save(web_live: WebLive) -> None:
    c = _client(web_live)
    _login(c)
    token = _csrf(c)
    before = web_live.policy_path.read_text()
    base = {
        "csrf": token,
        "mode": "nft",
        "categories": ["shorts"],
        "block_seconds": "600",
        "agreement_k": "2",
        "agreement_n": "3",
        "agreement_threshold": "0.7",
    }
    r = c.post("/policy", data={**base, "agreement_k": "5"})
    assert r.status_code == 422
    m = re.search(r'<span class="field-error" data-key="agreement.k">([^<]*)</span>', r.text)
    assert m and "must not exceed agreement.n" in m.group(1)
    assert 'name="agreement_k" value="5"' in r.text  # what was typed stays in the form
    r = c.post("/policy", data={**base, "schedules": "22:00-25:00"})
    assert r.status_code == 422 and 'data-key="schedules"' in r.text
    r = c.post("/policy", data={**base, "block_seconds": "ten"})
    assert r.status_code == 422 and 'data-key="block_seconds"' in r.text
    r = c.post("/policy", data={**base, "clients_only": "10.77.1.20 phone"})
    assert r.status_code == 422 and 'data-key="clients.only"' in r.text
    assert web_live.policy_path.read_text() == before
    assert web_live.state.policy()["mode"] == "dry-run"

    r = c.post(
        "/policy",
        data={**base, "schedules": "22:00-07:00", "clients_only": "10.77.1.20\naa:bb:cc:dd:ee:02"},
    )
    assert r.status_code == 303, r.text
    saved = tomllib.loads(web_live.policy_path.read_text())
    assert saved["mode"] == "nft" and saved["schedules"] == ["22:00-07:00"]
    assert saved["clients"]["only"] == ["10.77.1.20", "aa:bb:cc:dd:ee:02"]
    running = web_live.state.policy()
    assert running["mode"] == "nft" and running["agreement"]["threshold"] == 0.7
    assert running["source"] == str(web_live.policy_path)
    # raw TOML: a bad document is refused with the parser's message, a good one saved
    r = c.post("/policy", data={"csrf": token, "save_raw": "1", "raw": "mode = 'loud'"})
    assert r.status_code == 422 and 'data-key="mode"' in r.text and "loud" in r.text
    r = c.post("/policy", data={"csrf": token, "save_raw": "1", "raw": "mode = [oops"})
    assert r.status_code == 422 and 'data-key="raw"' in r.text
    r = c.post("/policy", data={"csrf": token, "save_raw": "1", "raw": 'mode = "off"\n'})
    assert r.status_code == 303
    assert tomllib.loads(web_live.policy_path.read_text())["mode"] == "off"
    assert web_live.state.policy()["mode"] == "off"


def test_names_from_sni_and_aliases_render_as_text(web_live: WebLive) -> None:
    feed(web_live.state)
    c = _client(web_live)
    _login(c)
    r = c.post(
        "/clients/name",
        data={"client": "10.77.1.2", "name": "<script>alert(2)</script>", "csrf": _csrf(c, "/")},
    )
    assert r.status_code == 303
    for path in ("/", "/live"):
        page = c.get(path).text
        assert "<script>alert(" not in page, path
        assert "&lt;script&gt;alert(" in page, path
    overview = c.get("/").text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in overview  # the alias
    assert "aa:bb:cc:dd:ee:01" in overview  # MAC from the leases file
    assert "short-form" in overview


def test_sessions_say_when_short_form_is_likeliest_but_not_agreed(web_live: WebLive) -> None:
    verdict = {"label": "long-form", "probability": 0.05, "action": "none", "reason": "churn"}
    web_live.state.update_session(
        "10.77.1.4",
        "youtube",
        verdict | {"pending": "short-form", "short_form_votes": 2, "short_form_needed": 3},
    )
    web_live.state.update_session("10.77.1.5", "youtube", verdict | {"pending": None})
    c = _client(web_live)
    _login(c)
    badge = re.compile(
        r'<span class="label l-long-form">long-form</span> <span class="label l-pending" '
        r'title="short-form likeliest, 2 of 3 windows needed">short-form\? 2 of 3 windows</span>'
    )
    for path in ("/", "/live", "/clients/10.77.1.4"):
        page = c.get(path).text
        assert len(badge.findall(page)) == 1, path  # the other client's long-form has none
    assert "l-pending" not in c.get("/clients/10.77.1.5").text


def test_block_now_and_unblock(web_live: WebLive) -> None:
    c = _client(web_live)
    _login(c)
    token = _csrf(c, "/blocks")
    r = c.post(
        "/blocks", data={"csrf": token, "client": "10.77.1.2", "server": "bad", "minutes": "5"}
    )
    assert r.status_code == 303 and "err=" in r.headers["location"]
    r = c.post(
        "/blocks",
        data={"csrf": token, "client": "10.77.1.2", "server": "10.77.2.2", "minutes": "5"},
    )
    assert r.status_code == 303 and "msg=" in r.headers["location"]
    (block,) = web_live.state.blocks()
    page = c.get("/blocks").text
    assert f'data-block="{block["id"]}"' in page and "dry-run" in page
    r = c.post(f"/blocks/{block['id']}/unblock", data={"csrf": token})
    assert r.status_code == 303 and web_live.state.blocks() == []
    actions = [e["action"] for e in read_audit(web_live.audit_path)]
    assert actions == ["dry-run-block", "unblock"]
    page = c.get("/blocks", params={"q": "unblock"}).text
    assert page.count('"action">unblock</td>') == 1 and '"action">dry-run-block<' not in page


def test_serve_mode_says_live_is_not_running() -> None:
    c = _client(None)
    c.post("/login", data={"token": TOKEN})
    for path in ("/", "/live", "/blocks", "/policy"):
        r = c.get(path)
        assert r.status_code == 200 and 'id="no-live"' in r.text, path
    r = c.get("/model")
    assert r.status_code == 200 and 'id="model-error"' in r.text  # no model directory
    assert c.get("/captures").status_code == 200
    token = _csrf(c, "/captures")
    r = c.post("/blocks", data={"csrf": token, "client": "1.2.3.4", "server": "1.2.3.5"})
    assert r.status_code == 303 and "not+running" in r.headers["location"]


@pytest.mark.parametrize("path", ["/static/web.css", "/static/vendor/uPlot.iife.min.js"])
def test_static_files_are_served(path: str) -> None:
    r = _client(None).get(path)
    assert r.status_code == 200 and len(r.content) > 1000
