"""Fixtures for the API tests: a real small model, real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from classifier.api import Settings, create_app
from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder
from classifier.features.schema import FEATURE_COLUMNS
from classifier.live.recording import Recorder
from classifier.live.state import LiveState
from classifier.model.artifact import LABELS, save_model
from tests.shared_data import SHARED

PCAPS = SHARED
TOKEN = "test-token-0123456789abcdef"


def session_verdict(**fields: object) -> dict[str, object]:
    """A live session verdict with every field live mode fills in; ``fields`` replace
    some."""
    verdict: dict[str, object] = {
        "label": "long-form",
        "probability": 0.7,
        "p_short_form": 0.2,
        "p_long_form": 0.7,
        "pending": None,
        "short_form_votes": 0,
        "short_form_needed": 3,
        "window_end": 1_800_000_000.0,
        "media_flows": 1,
        "action": "none",
        "reason": "1 media conn (1 new), 2 bursts of 3.6 MB, gap cv 0.00, 1.0 Mbit/s",
    }
    return verdict | fields


def train_small_model(directory: Path) -> Path:
    """Fit a small real pipeline on synthetic rows and save it as a model artifact."""
    rng = np.random.default_rng(7)
    n = 240
    x = pd.DataFrame(
        rng.gamma(2.0, 1.0, size=(n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS)
    )
    labels = np.array(LABELS, dtype=object)[rng.integers(0, len(LABELS), n)]
    x.loc[labels == "short-form", "burst_count"] += 8.0
    x.loc[labels == "long-form", "duration"] += 50.0
    x["service"] = rng.choice(["youtube", "instagram", "unknown"], n)
    pre = ColumnTransformer(
        [
            ("num", "passthrough", list(FEATURE_COLUMNS)),
            ("svc", OneHotEncoder(handle_unknown="ignore"), ["service"]),
        ]
    )
    pipe = Pipeline(
        [("pre", pre), ("clf", RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0))]
    )
    pipe.fit(x, labels)
    save_model(
        pipe,
        directory,
        name="api-test-model",
        labels=list(LABELS),
        decision_windows=[None, 3.0, 10.0],
        estimator="RandomForestClassifier",
        metrics={"note": "synthetic rows, for API tests only"},
    )
    return directory


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("model"))


@dataclass
class RunningServer:
    """A uvicorn server in a thread, bound to 127.0.0.1 on a free port."""

    app: FastAPI
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def start_server(app: FastAPI) -> RunningServer:
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}"
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return RunningServer(app, f"http://127.0.0.1:{port}", server, thread, sock)


ServerFactory = Callable[..., RunningServer]


@pytest.fixture(scope="module")
def serve() -> Iterator[ServerFactory]:
    """``serve(settings, live=None, app_hook=None)`` -> a running server (stopped at the
    end of the module)."""
    running: list[RunningServer] = []

    def _serve(
        settings: Settings,
        live: LiveState | None = None,
        app_hook: Callable[[FastAPI], None] | None = None,
    ) -> RunningServer:
        app = create_app(settings, live)
        if app_hook is not None:
            app_hook(app)
        srv = start_server(app)
        running.append(srv)
        return srv

    try:
        yield _serve
    finally:
        for srv in running:
            srv.stop()


@dataclass
class LiveParts:
    state: LiveState
    enforcer: Enforcer
    audit_path: Path


def make_live(directory: Path) -> tuple[LiveParts, Callable[[], None]]:
    """A real dry-run Enforcer with a real AuditLog in ``directory``, and a real Recorder
    (recordings in ``directory/data``)."""
    audit_path = directory / "audit.jsonl"
    audit = AuditLog(audit_path, fsync=False)
    holder = PolicyHolder()
    enforcer = Enforcer("dry-run", None, audit, holder)
    recorder = Recorder(directory / "data")
    state = LiveState(enforcer, holder, recorder=recorder)

    def _close() -> None:
        recorder.close()
        enforcer.close()
        audit.close()

    return LiveParts(state, enforcer, audit_path), _close


@pytest.fixture(scope="module")
def live_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveParts]:
    parts, close = make_live(tmp_path_factory.mktemp("live"))
    try:
        yield parts
    finally:
        close()


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def api(serve: ServerFactory, model_dir: Path, upload_dir: Path) -> RunningServer:
    """Model loaded, no live state, default limits, uploads spooled to ``upload_dir``."""
    return serve(Settings(model_dir=model_dir, upload_dir=upload_dir))


@pytest.fixture(scope="module")
def live_api(serve: ServerFactory, model_dir: Path, live_parts: LiveParts) -> RunningServer:
    """Model loaded, live state attached, token required."""
    return serve(Settings(model_dir=model_dir, api_token=SecretStr(TOKEN)), live_parts.state)
