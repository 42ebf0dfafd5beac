"""Fuzz the upload endpoint: damaged captures and damaged multipart bodies get a 4xx
problem+json with one line of detail (or 200), never a 500 or a hang."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from classifier.api import Settings, create_app
from tests.api.conftest import train_small_model
from tests.fuzz.harness import fuzz_settings, mutate, seeds

_CAPTURES = seeds("capture")
_OPS = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 1 << 16), st.integers(0, 1 << 16)), max_size=6
)
_OK = {200, 400, 413, 415, 422}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model = train_small_model(tmp_path_factory.mktemp("fuzz-api-model"))
    settings = Settings(
        model_dir=model, max_upload_bytes=64 * 1024, upload_dir=tmp_path_factory.mktemp("uploads")
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _check(resp_status: int, body: dict[str, object] | None) -> None:
    assert resp_status in _OK, (resp_status, body)
    if resp_status != 200:
        assert body is not None
        detail = str(body.get("detail", ""))
        assert detail and "\n" not in detail, body


@fuzz_settings(100)
@given(seed=st.integers(0, len(_CAPTURES) - 1), ops=_OPS, skip_bad=st.booleans())
def test_raw_uploads(
    client: TestClient, seed: int, ops: list[tuple[int, int, int]], skip_bad: bool
) -> None:
    data = mutate(_CAPTURES[seed], ops)
    resp = client.post(
        "/v1/captures:classify",
        content=data,
        params={"skip_bad": str(skip_bad).lower()},
        headers={"content-type": "application/octet-stream"},
    )
    _check(resp.status_code, resp.json() if resp.content else None)


@fuzz_settings(60)
@given(seed=st.integers(0, len(_CAPTURES) - 1), ops=_OPS)
def test_multipart_bodies(client: TestClient, seed: int, ops: list[tuple[int, int, int]]) -> None:
    boundary = b"sfboundary"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="x.pcap"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + _CAPTURES[seed]
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    resp = client.post(
        "/v1/captures:classify",
        content=mutate(body, ops),
        headers={"content-type": "multipart/form-data; boundary=sfboundary"},
    )
    _check(resp.status_code, resp.json() if resp.content else None)


def test_intact_capture_is_classified(client: TestClient) -> None:
    head = next(
        s
        for s, p in zip(
            _CAPTURES,
            sorted((Path(__file__).parent / "corpus" / "capture").glob("*.bin")),
            strict=True,
        )
        if "443-safari" in p.name
    )
    resp = client.post(
        "/v1/captures:classify", content=head, headers={"content-type": "application/octet-stream"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["stats"]["packets"] > 0
