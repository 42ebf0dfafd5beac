"""GET /v1/live/flows and /v1/live/sessions keep what ended in the last 10 minutes, marked
ended, through a real uvicorn server (LiveState with a real dry-run Enforcer, fake clock)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from classifier.api import Settings
from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder
from classifier.live.state import LiveState
from tests.api.conftest import TOKEN, ServerFactory, session_verdict

AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = {
    "proto": "udp",
    "client": "10.77.1.2",
    "client_port": 50000,
    "server": "10.77.2.2",
    "server_port": 443,
}


def test_ended_flows_and_sessions_are_served_marked_ended(
    serve: ServerFactory, model_dir: Path, tmp_path: Path
) -> None:
    now = [1_800_000_000.0]
    holder = PolicyHolder()
    enforcer = Enforcer("dry-run", None, AuditLog(tmp_path / "audit.jsonl", fsync=False), holder)
    state = LiveState(enforcer, holder, clock=lambda: now[0])
    srv = serve(Settings(model_dir=model_dir, api_token=SecretStr(TOKEN)), state)
    try:
        state.update_flow(KEY, {"label": "short-form", "probability": 0.93})
        state.update_flow(dict(KEY, client_port=50001), {"label": "other"})
        state.update_session(
            "10.77.1.2",
            "youtube",
            session_verdict(label="short-form", action="would block (dry-run)"),
        )
        now[0] += 20
        assert state.remove_flow(KEY)
        state.end_sessions()
        with srv.client(headers=AUTH) as c:
            flows = c.get("/v1/live/flows").json()["flows"]
            sessions = c.get("/v1/live/sessions").json()["sessions"]
            assert [(f["key"]["client_port"], f["ended"], f["ended_at"]) for f in flows] == [
                (50001, False, None),
                (50000, True, now[0]),
            ]
            assert flows[1]["verdict"] == {"label": "short-form", "probability": 0.93}
            assert [
                (s["group"], s["ended"], s["ended_at"], s["verdict"]["action"]) for s in sessions
            ] == [("youtube", True, now[0], "would block (dry-run)")]
            now[0] += 601
            assert [f["ended"] for f in c.get("/v1/live/flows").json()["flows"]] == [False]
            assert c.get("/v1/live/sessions").json()["sessions"] == []
    finally:
        enforcer.close()
