"""A client's page and its recordings through the real app (httpx TestClient) with a real
LiveState and a real Recorder writing pcaps and a manifest in a temporary data directory:
the form starts a recording, needs the CSRF token, shows a refusal beside the form; stop,
relabel, download and delete; a script-tag alias renders as text."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from classifier.api import Settings, create_app
from classifier.live.recording import Recorder
from tests.test_recording import PHONE, _tcp
from tests.web.conftest import TOKEN, WebLive, feed

PAGE = f"/clients/{PHONE}"


@pytest.fixture
def recording_live(web_live: WebLive, tmp_path: Path) -> Iterator[WebLive]:
    recorder = Recorder(tmp_path / "data")
    web_live.state.recorder = recorder
    try:
        yield web_live
    finally:
        recorder.close()


@pytest.fixture
def client(recording_live: WebLive) -> Iterator[TestClient]:
    settings = Settings(api_token=SecretStr(TOKEN), model_dir=Path(__file__).parent / "none")
    app = create_app(settings, recording_live.state)
    with TestClient(app, client=("127.0.0.1", 50000), follow_redirects=False) as c:
        r = c.post("/login", data={"token": TOKEN, "next": PAGE})
        assert r.status_code == 303 and r.headers["location"] == PAGE
        yield c


def _csrf(c: TestClient, path: str = PAGE) -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', r.text)
    assert m, "no CSRF token in the page"
    return m.group(1)


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_record_from_the_client_page_then_stop_relabel_download_delete(
    client: TestClient, recording_live: WebLive
) -> None:
    state = recording_live.state
    feed(state)
    page = client.get(PAGE).text
    assert 'id="record-form"' in page and 'id="no-recordings"' in page
    assert 'name="alias" maxlength="64" value="annas-phone"' in page  # the lease's name
    assert "youtube" in page  # the client's session
    overview = client.get("/").text
    assert f'href="/clients/{PHONE}"' in overview  # the overview links the client's page

    form = {"minutes": "5", "label": "shorts", "app": "", "alias": "Anna's phone"}
    assert client.post(f"{PAGE}/record", data=form).status_code == 403  # no CSRF token
    assert state.recordings() == []
    token = _csrf(client)
    r = client.post(f"{PAGE}/record", data={**form, "csrf": token})
    assert r.status_code == 303 and r.headers["location"].startswith(PAGE + "?msg=")
    (rec,) = state.recordings()
    assert (rec["client"], rec["label"], rec["app"], rec["alias"]) == (
        PHONE,
        "shorts",
        "youtube",
        "Anna's phone",
    )
    assert rec["planned_s"] == 300 and rec["state"] == "running"
    state.record_packets([_tcp(i) for i in range(30)])
    _wait(lambda: state.recordings()[0]["packets"] == 30)
    page = client.get(r.headers["location"]).text
    assert "recording " + rec["id"] + " started" in page
    row = page.split(f'data-recording="{rec["id"]}"')[1].split("</tr>")[0]
    assert 'data-state="running"' in page and ">30</td>" in row and "/stop" in row
    assert "/capture" not in row  # no download while it runs
    # a running recording cannot be downloaded; the refusal is one line
    r = client.get(f"/recordings/{rec['id']}/capture")
    assert r.status_code == 409 and "still running" in r.text

    # a second one of the same client is refused, beside the form, with what was typed
    r = client.post(f"{PAGE}/record", data={**form, "minutes": "7", "csrf": token})
    assert r.status_code == 422
    err = re.search(r'<p class="note bad" role="alert" id="record-error">([^<]*)</p>', r.text)
    assert err and "already being recorded" in err.group(1)
    assert 'name="minutes" min="0.1" max="1440" step="any" value="7"' in r.text

    r = client.post(f"/recordings/{rec['id']}/stop", data={"csrf": token, "next": PAGE})
    assert r.status_code == 303 and r.headers["location"].startswith(PAGE + "?")
    (done,) = state.recordings()
    assert done["state"] == "stopped" and done["packets"] == 30
    page = client.get(PAGE).text
    row = page.split(f'data-recording="{rec["id"]}"')[1].split("</tr>")[0]
    assert f'href="/recordings/{rec["id"]}/capture"' in row and "/stop" not in row

    r = client.get(f"/recordings/{rec['id']}/capture")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert r.content == state.recording_file(rec["id"]).read_bytes()
    assert r.content[:4] == b"\xd4\xc3\xb2\xa1" and len(r.content) == done["bytes"]

    # relabel: needs the token too; the manifest row follows
    relabel = f"/recordings/{rec['id']}/relabel"
    assert client.post(relabel, data={"label": "tiktok", "next": PAGE}).status_code == 403
    r = client.post(relabel, data={"label": "tiktok", "next": PAGE, "csrf": token})
    assert r.status_code == 303 and "relabelled" in r.headers["location"]
    assert (state.recordings()[0]["label"], state.recordings()[0]["app"]) == ("tiktok", "tiktok")
    manifest = recording_live.state.recorder.manifest  # type: ignore[union-attr]
    assert ",short-form,tiktok," in manifest.read_text()
    r = client.post(relabel, data={"label": "cartoons", "next": PAGE, "csrf": token})
    assert r.status_code == 303 and "rec_err=" in r.headers["location"]
    page = client.get(r.headers["location"]).text
    err = re.search(r'id="recordings-error">([^<]*)</p>', page)
    assert err and "unknown label" in err.group(1)
    assert state.recordings()[0]["label"] == "tiktok"

    # the list of all recordings names the client; an outside "next" goes home
    page = client.get("/recordings").text
    assert f'data-recording="{rec["id"]}"' in page and f'href="/clients/{PHONE}"' in page

    delete = f"/recordings/{rec['id']}/delete"
    assert client.post(delete, data={"next": PAGE}).status_code == 403
    assert state.recordings()
    r = client.post(delete, data={"next": "//evil.example/", "csrf": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/?msg=")
    assert state.recordings() == [] and not list(manifest.parent.glob("rec-*"))
    assert client.get(f"/recordings/{rec['id']}/capture").status_code == 404
    r = client.post(delete, data={"next": PAGE, "csrf": token})
    assert r.status_code == 303 and "rec_err=" in r.headers["location"]


def test_a_bad_label_is_shown_beside_the_form(client: TestClient, recording_live: WebLive) -> None:
    token = _csrf(client)
    form = {"minutes": "5", "label": "cartoons", "app": "", "alias": "", "csrf": token}
    r = client.post(f"{PAGE}/record", data=form)
    assert r.status_code == 422
    err = re.search(r'id="record-error">([^<]*)</p>', r.text)
    message = html.unescape(err.group(1)) if err else ""
    assert "unknown label 'cartoons': use one of shorts, reels" in message
    assert "\n" not in message
    for bad, words in (
        ({"minutes": "0"}, "minutes must be more than 0"),
        ({"minutes": "lots"}, "minutes must be a number"),
        ({"label": "shorts", "app": "you tube"}, "app &#39;you tube&#39;"),
    ):
        r = client.post(f"{PAGE}/record", data={**form, "label": "shorts", **bad})
        assert r.status_code == 422 and words in r.text, words
    assert recording_live.state.recordings() == []
    r = client.get("/clients/not-an-ip")
    assert r.status_code == 404 and "not a client" in r.text


def test_alias_with_a_script_tag_renders_as_text(
    client: TestClient, recording_live: WebLive
) -> None:
    state = recording_live.state
    feed(state)  # the overview lists the client
    evil = "<script>alert(4)</script>"
    token = _csrf(client)
    r = client.post(
        f"{PAGE}/record",
        data={"minutes": "1", "label": "reels", "alias": evil + " phone", "csrf": token},
    )
    assert r.status_code == 303
    r = client.post("/clients/name", data={"client": PHONE, "name": evil, "csrf": token})
    assert r.status_code == 303
    for path in (PAGE, "/recordings", "/"):
        page = client.get(path).text
        assert "<script>alert(" not in page, path
        assert "&lt;script&gt;alert(4)&lt;/script&gt;" in page, path
    assert state.recordings()[0]["alias"] == evil + " phone"


def test_recording_off_says_why(web_live: WebLive) -> None:
    settings = Settings(api_token=SecretStr(TOKEN), model_dir=Path(__file__).parent / "none")
    with TestClient(create_app(settings, web_live.state), follow_redirects=False) as c:
        c.post("/login", data={"token": TOKEN})
        page = c.get(PAGE).text
        assert 'id="record-off"' in page and "--data-dir" in page
        assert 'id="record-form"' not in page
        token = _csrf(c)
        r = c.post(f"{PAGE}/record", data={"minutes": "1", "label": "shorts", "csrf": token})
        assert r.status_code == 422 and "recording is off" in r.text
        assert 'id="record-off"' in c.get("/recordings").text


def test_serve_mode_client_and_recordings_pages_say_live_is_not_running() -> None:
    settings = Settings(api_token=SecretStr(TOKEN), model_dir=Path(__file__).parent / "none")
    with TestClient(create_app(settings, None), follow_redirects=False) as c:
        c.post("/login", data={"token": TOKEN})
        for path in (PAGE, "/recordings"):
            r = c.get(path)
            assert r.status_code == 200 and 'id="no-live"' in r.text, path
        token = _csrf(c, "/recordings")
        r = c.post(f"{PAGE}/record", data={"minutes": "1", "label": "shorts", "csrf": token})
        assert r.status_code == 303 and "not+running" in r.headers["location"]
        r = c.post("/recordings/rec-20260101T000000-abcdef/stop", data={"csrf": token})
        assert r.status_code == 303 and "not+running" in r.headers["location"]
        assert c.get("/recordings/rec-20260101T000000-abcdef/capture").status_code == 404
