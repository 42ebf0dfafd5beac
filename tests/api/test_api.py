"""The HTTP API against a real uvicorn server on 127.0.0.1, with real captures and a real
(small) model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI

from classifier.api import Settings
from classifier.capture import open_capture
from classifier.cli import main as cli_main
from classifier.enforce.audit import read_audit
from classifier.errors import CaptureError
from classifier.features.featurize import featurize
from classifier.model.artifact import LABELS, load_model
from classifier.model.predict import MODEL_INPUT_COLUMNS, classify_table, model_inputs
from tests.api.conftest import (
    PCAPS,
    TOKEN,
    LiveParts,
    RunningServer,
    ServerFactory,
    session_verdict,
)
from tests.shared_data import needs_files

YOUTUBE = PCAPS / "ndpi" / "youtube_quic.pcap"
INSTAGRAM = PCAPS / "nfstream" / "instagram.pcap"
PCAPNG = PCAPS / "ndpi" / "doh.pcapng"
needs_captures = needs_files(
    "ndpi/youtube_quic.pcap", "nfstream/instagram.pcap", "ndpi/doh.pcapng", "ndpi/443-safari.pcap"
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _is_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == status
    assert "\n" not in str(body["detail"]) and "Traceback" not in r.text
    return dict(body)


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def client(api: RunningServer) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


# -- health and model -------------------------------------------------------------------


def test_health_ready_and_model(client: httpx.Client, model_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "api-test-model", "live": False}
    card = client.get("/v1/model")
    assert card.status_code == 200
    assert card.json() == json.loads((model_dir / "model.json").read_text())


@needs_captures
def test_not_ready_without_model(serve: ServerFactory, tmp_path: Path) -> None:
    srv = serve(Settings(model_dir=tmp_path / "no-such-model"))
    with srv.client() as c:
        assert c.get("/healthz").status_code == 200
        body = _is_problem(c.get("/readyz"), 503)
        assert "no-such-model" in str(body["detail"])
        _is_problem(c.get("/v1/model"), 503)
        with YOUTUBE.open("rb") as fh:
            _is_problem(c.post("/v1/captures:classify", files={"file": fh}), 503)


def test_openapi_is_served(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert "/v1/captures:classify" in doc["paths"]
    body = doc["paths"]["/v1/captures:classify"]["post"]["requestBody"]["content"]
    assert {
        "multipart/form-data",
        "application/octet-stream",
        "application/vnd.tcpdump.pcap",
    } <= set(body)
    assert "Problem" in doc["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# -- captures ---------------------------------------------------------------------------


@needs_captures
def test_classify_capture_multipart_matches_library(client: httpx.Client, model_dir: Path) -> None:
    with YOUTUBE.open("rb") as fh:
        r = client.post(
            "/v1/captures:classify",
            files={"file": ("youtube_quic.pcap", fh, "application/octet-stream")},
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["capture"] == "youtube_quic.pcap"
    assert doc["model"] == "api-test-model"
    expected = classify_table(load_model(model_dir), featurize(YOUTUBE))
    assert len(doc["flows"]) == len(expected) == doc["stats"]["rows"] > 0
    got = {(f["client_port"], f["server"]): (f["label"], f["probability"]) for f in doc["flows"]}
    want = {(r.client_port, r.server): (r.label, r.probability) for r in expected.itertuples()}
    assert got == want
    for f in doc["flows"]:
        assert f["label"] in LABELS and 0.0 <= f["probability"] <= 1.0
        assert f["decision_window"] == "whole flow" and f["reason"]
    assert [c["client"] for c in doc["clients"]] == ["192.168.1.7"]
    assert doc["clients"][0]["flows"] == len(expected)
    assert doc["stats"]["bytes"] == YOUTUBE.stat().st_size
    assert doc["stats"]["packets"] == 289


@needs_captures
def test_classify_capture_raw_body_and_pcapng(client: httpx.Client, model_dir: Path) -> None:
    r = client.post(
        "/v1/captures:classify",
        content=INSTAGRAM.read_bytes(),
        headers={"content-type": "application/vnd.tcpdump.pcap"},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["capture"] == "upload"
    table = featurize(INSTAGRAM)
    assert len(doc["flows"]) == len(table) > 10
    assert sum(c["flows"] for c in doc["clients"]) == len(table)
    r = client.post(
        "/v1/captures:classify",
        content=PCAPNG.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["stats"]["format"] == "pcapng"


@needs_captures
def test_capture_horizon_and_windows(client: httpx.Client) -> None:
    data = YOUTUBE.read_bytes()
    raw = {"content-type": "application/octet-stream"}
    r = client.post("/v1/captures:classify", params={"horizon": 3}, content=data, headers=raw)
    assert r.status_code == 200, r.text
    assert {f["decision_window"] for f in r.json()["flows"]} == {"first 3 s"}
    r = client.post("/v1/captures:classify", params={"window": 0.25}, content=data, headers=raw)
    assert r.status_code == 200, r.text
    flows = r.json()["flows"]
    assert len(flows) > 3 and all(f["window_end"] - f["window_start"] == 0.25 for f in flows)
    body = _is_problem(
        client.post("/v1/captures:classify", params={"horizon": 7}, content=data, headers=raw), 422
    )
    assert "3, 10" in str(body["detail"])


def test_garbage_gets_the_cli_reason(
    client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dir: Path
) -> None:
    garbage = bytes(range(256)) * 8
    r = client.post("/v1/captures:classify", files={"file": ("junk.bin", garbage)})
    body = _is_problem(r, 422)
    bad = tmp_path / "junk.bin"
    bad.write_bytes(garbage)
    with pytest.raises(CaptureError) as info:
        open_capture(bad)
    assert body["detail"] == f"junk.bin at byte 0: {info.value.reason}"
    # the CLI gives the same reason for the same bytes
    assert cli_main(["classify", str(bad), "--model", str(model_dir)]) == 2
    assert info.value.reason in capsys.readouterr().err


def test_empty_and_wrong_bodies(client: httpx.Client, upload_dir: Path) -> None:
    body = _is_problem(
        client.post(
            "/v1/captures:classify",
            content=b"",
            headers={"content-type": "application/octet-stream"},
        ),
        422,
    )
    assert body["detail"] == "upload: empty file (0 bytes); nothing to read"
    _is_problem(
        client.post("/v1/captures:classify", content=b"x", headers={"content-type": "text/plain"}),
        415,
    )
    body = _is_problem(client.post("/v1/captures:classify", files={"other": ("a", b"b")}), 422)
    assert "'file'" in str(body["detail"])
    _is_problem(
        client.post(
            "/v1/captures:classify",
            params={"horizon": -1},
            content=b"x",
            headers={"content-type": "application/octet-stream"},
        ),
        422,
    )
    # every upload, good or bad, left no temporary file behind
    assert list(upload_dir.iterdir()) == []


@needs_captures
def test_upload_limit(serve: ServerFactory, model_dir: Path, tmp_path: Path) -> None:
    srv = serve(Settings(model_dir=model_dir, max_upload_bytes=100_000, upload_dir=tmp_path))
    data = YOUTUBE.read_bytes()  # 196 kB
    assert len(data) > 100_000
    with srv.client() as c:
        raw = {"content-type": "application/octet-stream"}
        # declared Content-Length over the limit
        body = _is_problem(c.post("/v1/captures:classify", content=data, headers=raw), 413)
        assert "100000" in str(body["detail"])
        # no Content-Length (chunked): counted while streaming

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(data), 16_384):
                yield data[i : i + 16_384]

        _is_problem(c.post("/v1/captures:classify", content=chunks(), headers=raw), 413)
        with YOUTUBE.open("rb") as fh:
            _is_problem(c.post("/v1/captures:classify", files={"file": fh}), 413)
        # JSON bodies count too
        _is_problem(c.post("/v1/flows:classify", json={"rows": [{"x": "y" * 200_000}]}), 413)
        # a small capture still passes
        small = (PCAPS / "ndpi" / "443-safari.pcap").read_bytes()
        assert c.post("/v1/captures:classify", content=small, headers=raw).status_code == 200
        assert c.get("/healthz").status_code == 200
    assert list(tmp_path.iterdir()) == []


# -- flows ------------------------------------------------------------------------------


def _rows(path: Path = YOUTUBE) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    table = featurize(path)
    inputs = model_inputs(table)
    return table, json.loads(inputs.to_json(orient="records"))


@needs_captures
def test_classify_rows_matches_library(client: httpx.Client, model_dir: Path) -> None:
    table, rows = _rows(INSTAGRAM)
    r = client.post("/v1/flows:classify", json={"rows": rows})
    assert r.status_code == 200, r.text
    verdicts = r.json()["verdicts"]
    expected = classify_table(load_model(model_dir), table)
    assert [v["label"] for v in verdicts] == list(expected["label"])
    assert [v["probability"] for v in verdicts] == pytest.approx(list(expected["probability"]))
    assert [v["index"] for v in verdicts] == list(range(len(rows)))
    r = client.post("/v1/flows:classify", json={"rows": rows[:2], "horizon": 3})
    assert r.status_code == 200
    assert {v["decision_window"] for v in r.json()["verdicts"]} == {"first 3 s"}
    assert client.post("/v1/flows:classify", json={"rows": []}).json()["verdicts"] == []


@needs_captures
def test_a_featurize_row_is_accepted_as_it_is(client: httpx.Client, model_dir: Path) -> None:
    """Rows straight from `shortflow featurize` (names, flow keys, snapshots and all) get
    the same verdicts as the model's input columns alone; the rest is listed as ignored."""
    table, rows = _rows(INSTAGRAM)
    whole = json.loads(table.to_json(orient="records"))
    r = client.post("/v1/flows:classify", json={"rows": whole})
    assert r.status_code == 200, r.text
    expected = classify_table(load_model(model_dir), table)
    assert [v["label"] for v in r.json()["verdicts"]] == list(expected["label"])
    (warning,) = r.json()["warnings"]
    ignored = len(set(table.columns) - set(MODEL_INPUT_COLUMNS))
    assert warning.startswith(f"ignored {ignored} column(s)") and "alpn" in warning


@needs_captures
def test_rows_with_wrong_columns(client: httpx.Client) -> None:
    _, rows = _rows()
    missing = [dict(rows[0]), dict(rows[1])]
    del missing[1]["burst_count"]
    body = _is_problem(client.post("/v1/flows:classify", json={"rows": missing}), 422)
    assert "row 1" in str(body["detail"]) and "burst_count" in str(body["detail"])
    extra = [dict(rows[0], bogus_column=1.0)]
    r = client.post("/v1/flows:classify", json={"rows": extra})
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == ["ignored 1 column(s) the model does not read: bogus_column"]
    assert client.post("/v1/flows:classify", json={"rows": rows[:1]}).json()["warnings"] == []
    wrong = [dict(rows[0], duration="long")]
    body = _is_problem(client.post("/v1/flows:classify", json={"rows": wrong}), 422)
    assert "duration" in str(body["detail"])
    # an integer too large for a float is a wrong value (was a 500), in any row
    for at in (0, 1):
        huge = [dict(r) for r in rows[:2]]
        huge[at]["duration"] = "HUGE"
        text = json.dumps({"rows": huge}).replace('"HUGE"', "1" + "0" * 400)
        body = _is_problem(
            client.post(
                "/v1/flows:classify",
                content=text.encode(),
                headers={"content-type": "application/json"},
            ),
            422,
        )
        assert f"row {at}" in str(body["detail"]) and "duration" in str(body["detail"])
    body = _is_problem(client.post("/v1/flows:classify", json={"rows": [{"a": 1}]}), 422)
    assert "missing columns" in str(body["detail"])
    assert len(MODEL_INPUT_COLUMNS) > 100
    body = _is_problem(
        client.post(
            "/v1/flows:classify", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    _is_problem(client.post("/v1/flows:classify", json={"nothing": []}), 422)


# -- metrics and errors -----------------------------------------------------------------


@needs_captures
def test_metrics_change_after_requests(client: httpx.Client) -> None:
    before = client.get("/metrics")
    assert before.headers["content-type"].startswith("text/plain")
    route = "/v1/flows:classify"
    n0 = _metric(before.text, "shortflow_http_requests_total", route=route, status="200")
    f0 = _metric(before.text, "shortflow_flows_classified_total", source="rows")
    _, rows = _rows()
    for _ in range(3):
        assert client.post(route, json={"rows": rows}).status_code == 200
    after = client.get("/metrics").text
    assert _metric(after, "shortflow_http_requests_total", route=route, status="200") == n0 + 3
    assert _metric(after, "shortflow_flows_classified_total", source="rows") == f0 + 3 * len(rows)
    assert _metric(after, "shortflow_http_request_duration_seconds_count", route=route) >= 3
    assert _metric(after, "shortflow_model_loaded") == 1.0


def test_unexpected_error_is_a_bare_500(serve: ServerFactory, model_dir: Path) -> None:
    def hook(app: FastAPI) -> None:
        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("secret internal detail")

    srv = serve(Settings(model_dir=model_dir), app_hook=hook)
    with srv.client() as c:
        r = c.get("/boom")
        body = _is_problem(r, 500)
        assert "secret" not in r.text and "RuntimeError" not in r.text
        assert body["title"] == "internal server error"
        assert c.get("/healthz").status_code == 200
        _is_problem(c.get("/no/such/path"), 404)
        _is_problem(c.delete("/healthz"), 405)


# -- live, auth and policy --------------------------------------------------------------


def test_live_endpoints_without_live_mode(client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/live/flows"),
        ("GET", "/v1/live/blocks"),
        ("GET", "/v1/policy"),
        ("DELETE", "/v1/live/blocks/b1"),
    ):
        body = _is_problem(client.request(method, path), 409)
        assert body["title"] == "live mode is not running"


@pytest.mark.parametrize(
    "path", ["/v1/live/flows", "/v1/live/sessions", "/v1/live/blocks", "/v1/policy"]
)
def test_auth_required_refused_accepted(live_api: RunningServer, path: str) -> None:
    with live_api.client() as c:
        r = c.get(path)
        _is_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        _is_problem(c.get(path, headers={"Authorization": "Bearer wrong-token"}), 401)
        _is_problem(c.get(path, headers={"Authorization": f"Basic {TOKEN}"}), 401)
        assert c.get(path, headers=AUTH).status_code == 200
        # read-only, model-only endpoints stay open
        assert c.get("/v1/model").status_code == 200


def test_no_token_means_loopback_only(
    serve: ServerFactory, model_dir: Path, tmp_path: Path
) -> None:
    from tests.api.conftest import make_live

    parts, close = make_live(tmp_path)
    try:
        srv = serve(Settings(model_dir=model_dir), parts.state)
        with srv.client() as c:  # we are on 127.0.0.1: allowed without a token
            assert c.get("/v1/live/flows").status_code == 200
    finally:
        close()


def test_live_sessions_show_the_latest_judgement(
    live_api: RunningServer, live_parts: LiveParts
) -> None:
    state = live_parts.state
    state.update_session("10.77.1.2", "youtube", session_verdict(reason="first"))
    # short-form is the likeliest but only 2 of the 3 windows needed agree yet
    pending = session_verdict(
        label="long-form",
        probability=0.05,
        p_short_form=0.93,
        p_long_form=0.05,
        pending="short-form",
        short_form_votes=2,
        reason="<b>x",
    )
    state.update_session("10.77.1.2", "youtube", pending)
    state.update_session("10.77.1.3", "net:10.77.9.0/24", session_verdict(label="other"))
    with live_api.client(headers=AUTH) as c:
        doc = c.get("/v1/live/sessions").json()
    mine = {(s["client"], s["group"]): s for s in doc["sessions"]}
    assert mine[("10.77.1.2", "youtube")]["verdict"] == pending
    assert mine[("10.77.1.3", "net:10.77.9.0/24")]["verdict"]["pending"] is None
    assert doc["sessions"][0]["client"] == "10.77.1.3"  # most recent first


def test_live_flows_blocks_and_audit(live_api: RunningServer, live_parts: LiveParts) -> None:
    state = live_parts.state
    key = {
        "proto": 6,
        "client": "10.77.1.2",
        "client_port": 50000,
        "server": "10.77.2.2",
        "server_port": 443,
    }
    state.update_flow(key, {"label": "short-form", "probability": 0.91, "service": "youtube"})
    state.incr("packets", 120)
    state.incr("drops", 2)
    with live_api.client(headers=AUTH) as c:
        doc = c.get("/v1/live/flows").json()
        mine = [f for f in doc["flows"] if f["key"] == key]
        assert len(mine) == 1 and mine[0]["verdict"]["label"] == "short-form"
        assert doc["counters"]["packets"] >= 120 and doc["counters"]["verdicts"] >= 1
        assert doc["enforcement"]["flag"] == "dry-run"
        assert doc["enforcement"]["effective"] == "dry-run"

        r = c.post(
            "/v1/live/blocks",
            json={
                "client": "10.77.1.2",
                "server": "10.77.2.2",
                "port": 443,
                "proto": "tcp",
                "duration_s": 120,
                "reason": "test block",
            },
        )
        assert r.status_code == 201, r.text
        block = r.json()
        assert block["dry_run"] is True and block["reason"] == "test block"
        assert block["expires"] - block["created"] == pytest.approx(120, abs=1)
        assert block["id"] in [b["id"] for b in c.get("/v1/live/blocks").json()["blocks"]]
        events = list(read_audit(live_parts.audit_path))
        assert events[-1]["action"] == "dry-run-block" and events[-1]["server"] == "10.77.2.2"
        # the policy in force is unchanged by the manual block
        assert c.get("/v1/policy").json()["block_seconds"] == 300

        text = c.get("/metrics").text
        assert _metric(text, "shortflow_live_packets_total") >= 120
        assert _metric(text, "shortflow_live_drops_total") >= 2
        assert _metric(text, "shortflow_live_active_blocks") >= 1

        assert c.delete(f"/v1/live/blocks/{block['id']}").status_code == 204
        assert block["id"] not in [b["id"] for b in c.get("/v1/live/blocks").json()["blocks"]]
        _is_problem(c.delete(f"/v1/live/blocks/{block['id']}"), 404)
        assert list(read_audit(live_parts.audit_path))[-1]["action"] == "unblock"

        _is_problem(
            c.post("/v1/live/blocks", json={"client": "10.77.1.2", "server": "not-an-ip"}), 422
        )
        _is_problem(
            c.post(
                "/v1/live/blocks", json={"client": "10.77.1.2", "server": "10.77.2.2", "port": 443}
            ),
            422,
        )
    assert state.remove_flow(key) is True


def test_policy_get_put(live_api: RunningServer) -> None:
    with live_api.client(headers=AUTH) as c:
        before = c.get("/v1/policy").json()
        assert before["mode"] == "dry-run"
        toml = 'mode = "dry-run"\nblock_seconds = 600\n[agreement]\nk = 2\nn = 4\n'
        r = c.put("/v1/policy", content=toml, headers={"content-type": "application/toml"})
        assert r.status_code == 200, r.text
        assert r.json()["block_seconds"] == 600 and r.json()["agreement"]["k"] == 2
        body = _is_problem(
            c.put("/v1/policy", content='mode = "loud"\n', headers={"content-type": "text/plain"}),
            422,
        )
        assert "mode" in str(body["detail"])
        _is_problem(
            c.put(
                "/v1/policy",
                content="this is = = not toml",
                headers={"content-type": "application/toml"},
            ),
            422,
        )
        _is_problem(c.put("/v1/policy", json={"block_seconds": 0}), 422)
        _is_problem(c.put("/v1/policy", json=[1, 2]), 422)
        _is_problem(c.put("/v1/policy", content=b"x", headers={"content-type": "image/png"}), 415)
        assert c.get("/v1/policy").json()["block_seconds"] == 600  # running policy stayed
        # GET's document goes back through PUT as JSON
        doc = dict(before)
        r = c.put("/v1/policy", json=doc)
        assert r.status_code == 200, r.text
        got = r.json()
        assert {k: v for k, v in got.items() if k != "source"} == {
            k: v for k, v in before.items() if k != "source"
        }
    assert re.match(r"^PUT", got["source"])


def test_classify_capture_returns_the_session_timeline(
    serve: ServerFactory, model_dir: Path, tmp_path: Path
) -> None:
    """With a session model beside the flow model, the upload's answer carries the same
    per-client timeline as the library (and the CLI) computes."""
    import shutil

    from classifier.features.session import SESSION_FEATURES, SessionConfig
    from classifier.model.session_model import load_session_model, save_session_model
    from classifier.model.timeline import capture_sessions, timeline
    from training.sessions import CANDIDATES, simulated_rows

    directory = tmp_path / "with-sessions"
    shutil.copytree(model_dir, directory)
    sims = simulated_rows(2, seed=3)
    est = CANDIDATES["logreg"]().fit(sims[list(SESSION_FEATURES)], sims["label"])
    save_session_model(est, directory, name="t", config=SessionConfig())
    sample = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "sample.pcap"
    srv = serve(Settings(model_dir=directory))
    with srv.client() as c:
        r = c.post(
            "/v1/captures:classify",
            content=sample.read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
    assert r.status_code == 200, r.text
    got = r.json()["timeline"]
    want = timeline(capture_sessions(load_session_model(directory), sample).windows)
    assert len(got) == len(want) > 0
    pending = want["pending"].where(want["pending"].notna(), None)
    assert [(s["client"], s["group"], s["label"], s["pending"]) for s in got] == list(
        zip(want["client"], want["group"], want["label"], pending, strict=True)
    )
    assert [s["short_form_votes"] for s in got] == want["short_form_votes"].tolist()
    assert all(s["reason"] and s["end"] > s["start"] and s["short_form_needed"] == 3 for s in got)
