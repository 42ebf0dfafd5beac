"""The Model page (choose among SHORTFLOW_MODELS_DIR, refuse a tampered model) and the
Captures page (an upload classified, a file that is not a capture refused in one line)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from classifier.api import Settings, create_app
from tests.api.conftest import train_small_model
from tests.web.conftest import TOKEN

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "sample.pcap"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    good = train_small_model(root / "small")
    bad = root / "tampered"
    shutil.copytree(good, bad)
    info = json.loads((bad / "model.json").read_text())
    info["sha256"] = "0" * 64
    (bad / "model.json").write_text(json.dumps(info))
    (root / "not-a-model").mkdir()
    return root


@pytest.fixture
def client(models: Path) -> Iterator[TestClient]:
    settings = Settings(api_token=SecretStr(TOKEN), models_dir=models, model_dir=models / "small")
    with TestClient(create_app(settings), client=("127.0.0.1", 5000)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"  # the header needs no CSRF token
        yield c


def test_model_page_lists_loads_and_refuses(client: TestClient, models: Path) -> None:
    page = client.get("/model").text
    assert '<option value="small">' in page and '<option value="tampered">' in page
    assert "not-a-model" not in page  # no model.json: not offered
    assert "api-test-model" in page
    app = client.app
    before = app.state.model  # type: ignore[attr-defined]
    r = client.post("/model", data={"directory": "tampered"}, follow_redirects=True)
    assert "sha256" in r.text and 'class="note bad"' in r.text
    assert app.state.model is before  # type: ignore[attr-defined]
    r = client.post("/model", data={"directory": "../small"}, follow_redirects=True)
    assert "is not a model directory under SHORTFLOW_MODELS_DIR" in r.text
    r = client.post("/model", data={"directory": "small"}, follow_redirects=True)
    assert "loaded from small" in r.text
    assert app.state.model is not before  # type: ignore[attr-defined]
    # without the token (no cookie, no header) nothing changes
    bare = TestClient(app, client=("127.0.0.1", 5000), follow_redirects=False)
    assert bare.post("/model", data={"directory": "small"}).status_code == 401


def test_captures_page(client: TestClient, tmp_path: Path) -> None:
    junk = tmp_path / "notes.pcap"
    junk.write_bytes(b"this is not a capture at all" * 10)
    r = client.post("/captures", files={"file": ("notes.pcap", junk.read_bytes())})
    assert r.status_code == 422
    m = re.search(r'id="capture-error">([^<]*)<', r.text)
    assert m and "notes.pcap" in m.group(1) and "\n" not in m.group(1).strip()
    assert "Traceback" not in r.text
    r = client.post("/captures", files={"file": ("sample.pcap", SAMPLE.read_bytes())})
    assert r.status_code == 200, r.text
    assert 'id="capture-flows"' in r.text and "10.77.10.2" in r.text
    assert re.search(r'<script type="application/json" id="usage-data">\[.*\]</script>', r.text)
    r = client.post("/captures")  # no file at all
    assert r.status_code == 422 and "choose a pcap" in r.text


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_model_chosen_on_the_page_is_used_by_the_live_router(models: Path, tmp_path: Path) -> None:
    """With live mode, a chosen model with the same session view decides from the next
    judgement on; one without a session model is refused and the running one stays."""
    from classifier.live.router import LiveConfig, LiveRouter
    from classifier.model.artifact import DEFAULT_MODEL_DIR

    shutil.copytree(DEFAULT_MODEL_DIR, models / "default-copy", dirs_exist_ok=True)
    router = LiveRouter(
        LiveConfig(ifaces=("lo",), summary_every=0, audit_log=tmp_path / "audit.jsonl")
    )
    try:
        started, started_session = router.model, router.session_model
        settings = Settings(api_token=SecretStr(TOKEN), models_dir=models)
        with TestClient(create_app(settings, live=router.state), client=("127.0.0.1", 5000)) as c:
            c.headers["Authorization"] = f"Bearer {TOKEN}"
            r = c.post("/model", data={"directory": "small"}, follow_redirects=True)
            assert "reads another session view" in r.text and 'class="note bad"' in r.text
            assert router.model is started and router.session_model is started_session
            r = c.post("/model", data={"directory": "default-copy"}, follow_redirects=True)
            assert "in use by the live router" in r.text, r.text
            assert router.model is not started and router.model is c.app.state.model  # type: ignore[attr-defined]
            assert router.model.path == models / "default-copy"
            assert router.session_model is not None and router.session_model is not started_session
    finally:
        router.close()
