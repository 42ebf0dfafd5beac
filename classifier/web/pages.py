"""The web pages: overview, a client's page, live, blocks, policy, model, captures,
recordings (server-rendered).

Every page needs what the JSON API's live endpoints need (see :mod:`classifier.web.session`);
every form that changes something carries a CSRF token. Templates are Jinja2 with
autoescape on: names from DNS/SNI and client aliases render as text. Responses carry a
Content-Security-Policy that allows only the app's own scripts and styles.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from classifier.api.routers import run_cpu
from classifier.enforce.audit import read_audit
from classifier.enforce.policy import CATEGORIES, MODES, SINKHOLE_ANSWERS
from classifier.errors import RecordingError, RecordingNotFound, ShortflowError
from classifier.live.state import LiveState
from classifier.model.session_model import pending_text
from classifier.web import policy_form
from classifier.web.clients import ALIASES_FILE, Aliases, read_leases
from classifier.web.session import COOKIE, MAX_AGE, Signer, Who, token_matches, who
from classifier.web.usage import KINDS, UsageLog

__all__ = ["router", "STATIC_DIR"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_TEMPLATES = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,  # a verdict without a key shows nothing
    trim_blocks=True,
    lstrip_blocks=True,
)

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_NAV = (
    ("/", "Overview"),
    ("/live", "Live"),
    ("/blocks", "Blocks"),
    ("/policy", "Policy"),
    ("/model", "Model"),
    ("/captures", "Captures"),
    ("/recordings", "Recordings"),
)
_AUDIT_ROWS = 200
_LOGIN_DELAY_S = 0.5
_TABLE_ROWS = 500


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _isotime(text: Any) -> str:
    """An audit log's ISO 8601 UTC time in local time, to the second."""
    try:
        return _when(datetime.fromisoformat(str(text)).timestamp())
    except ValueError:
        return str(text)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60.0:.0f}" if seconds >= 60 or seconds == 0 else "<1"


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


_env.filters["when"] = _when
_env.filters["minutes"] = _minutes
_env.filters["left"] = _left
_env.filters["isotime"] = _isotime
_env.globals["pending_text"] = pending_text


def _signer(request: Request) -> Signer:
    signer: Signer | None = getattr(request.app.state, "web_signer", None)
    if signer is None:
        signer = request.app.state.web_signer = Signer()
    return signer


async def _live_post(request: Request, back: str) -> tuple[Who, FormData, LiveState] | Response:
    """A POST that changes the live router: who sent it, its form and the live state, or
    the response refusing it (login, CSRF, live mode not running; back to ``back``)."""
    who_, form, refused = await _post_guard(request)
    if refused is not None or form is None:
        return refused or _back(back)
    live = _live(request)
    if live is None:
        return _back(back, err="live mode is not running")
    return who_, form, live


def _live(request: Request) -> LiveState | None:
    live: LiveState | None = request.app.state.live
    return live


def _aliases(request: Request, live: LiveState | None) -> Aliases:
    aliases: Aliases | None = getattr(request.app.state, "web_aliases", None)
    if aliases is None:
        path = live.audit_path.with_name(ALIASES_FILE) if live and live.audit_path else None
        aliases = request.app.state.web_aliases = Aliases(path)
    return aliases


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _render(
    request: Request, template: str, who_: Who, status: int = 200, **context: Any
) -> Response:
    """A page; a loopback browser without a session cookie gets one (for its CSRF token)."""
    signer = _signer(request)
    token = request.app.state.settings.token()
    new_cookie = None
    sid = who_.sid
    if who_.ok and sid is None and who_.by == "loopback":
        new_cookie = signer.issue(token)
        sid = signer.check(token, new_cookie)
    live = _live(request)
    html = _env.get_template(template).render(
        nav=_NAV,
        path=request.url.path,
        csrf=signer.csrf(token, sid) if sid else "",
        by=who_.by,
        live_running=live is not None,
        msg=request.query_params.get("msg", "")[:300],
        err=request.query_params.get("err", "")[:300],
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if new_cookie is not None:
        _set_cookie(request, response, new_cookie)
    return _secure(response)


def _denied(request: Request, who_: Who) -> Response:
    if request.app.state.settings.token() is not None and request.method == "GET":
        target = "/login?" + urlencode({"next": request.url.path})
        return _secure(RedirectResponse(target, status_code=303))
    status = 401 if request.app.state.settings.token() is not None else 403
    return _render(request, "denied.html", who_, status=status, why=who_.why)


async def _post_guard(request: Request) -> tuple[Who, FormData | None, Response | None]:
    """The form of a POST that may change something, or the refusal: 401/403 without
    the right login, 403 without the right CSRF token."""
    who_ = who(request, _signer(request))
    if not who_.ok:
        return who_, None, _denied(request, who_)
    try:
        form = await request.form()
    except Exception as exc:  # a malformed body: multipart errors, bad encodings
        if getattr(exc, "status_code", None) == 413:
            raise
        return who_, None, _error(request, who_, 400, f"the form could not be read: {exc}")
    if who_.by != "token":
        given = form.get("csrf")
        token = request.app.state.settings.token()
        if not _signer(request).csrf_ok(token, who_.sid, given if isinstance(given, str) else None):
            return (
                who_,
                None,
                _error(
                    request,
                    who_,
                    403,
                    "the form's CSRF token is missing or wrong; reload the page and try again",
                ),
            )
    return who_, form, None


def _error(request: Request, who_: Who, status: int, message: str) -> Response:
    return _render(request, "denied.html", who_, status=status, why=message)


def _back(path: str, msg: str = "", err: str = "") -> Response:
    query = urlencode({k: v for k, v in (("msg", msg), ("err", err)) if v})
    return _secure(RedirectResponse(path + ("?" + query if query else ""), status_code=303))


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# -- login ------------------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
async def login_page(request: Request) -> Response:
    next_ = _safe_next(request.query_params.get("next", "/"))
    no_token = request.app.state.settings.token() is None
    return _render(request, "login.html", Who(False), next=next_, no_token=no_token, error="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    next_ = _safe_next(_field(form, "next") or "/")
    expected = request.app.state.settings.token()
    if expected is None:
        return _back(next_)
    given = form.get("token")
    if not token_matches(given.strip() if isinstance(given, str) else None, expected):
        log.warning("web login refused from %s", request.client.host if request.client else "?")
        await anyio.sleep(_LOGIN_DELAY_S)  # slows guessing; the token should be long anyway
        return _render(
            request,
            "login.html",
            Who(False),
            status=401,
            next=next_,
            no_token=False,
            error="That is not the API token.",
        )
    response = RedirectResponse(next_, status_code=303)
    _set_cookie(request, response, _signer(request).issue(expected))
    return _secure(response)


@router.post("/logout")
async def logout(request: Request) -> Response:
    _who, _form, refused = await _post_guard(request)
    if refused is not None:
        return refused
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return _secure(response)


# -- overview ---------------------------------------------------------------------------------


def _client_rows(request: Request, live: LiveState) -> list[dict[str, Any]]:
    now = time.time()
    usage: UsageLog | None = live.usage
    leases = read_leases(live.leases_path)
    aliases = _aliases(request, live)
    sessions = live.sessions()
    blocked = {b["client"] for b in live.blocks() if not b.get("dry_run")}
    would = {b["client"] for b in live.blocks() if b.get("dry_run")}
    latest: dict[str, dict[str, Any]] = {}
    for s in sessions:  # most recent first; active before ended
        latest.setdefault(s["client"], s)
    order = list(usage.clients()) if usage is not None else []
    order += [c for c in latest if c not in order]
    day, week = UsageLog.day_start(now), UsageLog.week_start(now)
    rows = []
    for client in order:
        lease = leases.get(client)
        mac = lease.mac if lease else None
        today = usage.total(client, day) if usage else [0.0, 0.0, 0.0]
        this_week = usage.total(client, week) if usage else [0.0, 0.0, 0.0]
        current = latest.get(client)
        rows.append(
            {
                "ip": client,
                "mac": mac,
                "alias": aliases.get(client, mac) or (lease.hostname if lease else None),
                "today": today,
                "week": this_week,
                "now": current,
                "blocked": client in blocked,
                "would_block": client in would,
                "chart": usage.last_hours(client, now) if usage else None,
            }
        )
    return rows


@router.get("/")
async def overview(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    if live is None:
        return _render(request, "overview.html", who_, clients=[], charts=[], usage_kept=False)
    clients = _client_rows(request, live)
    charts = [{"unit": "min per hour", **c["chart"]} for c in clients if c["chart"] is not None]
    return _render(
        request,
        "overview.html",
        who_,
        clients=clients,
        charts=charts,
        usage_kept=live.audit_path is not None,
        enforcement=live.enforcement(),
    )


@router.post("/clients/name")
async def set_name(request: Request) -> Response:
    got = await _live_post(request, "/")
    if isinstance(got, Response):
        return got
    who_, form, live = got
    try:
        _aliases(request, live).set(_field(form, "client"), _field(form, "name"))
    except ShortflowError as exc:
        return _back("/", err=str(exc))
    return _back("/", msg="name saved")


# -- live -------------------------------------------------------------------------------------


@router.get("/live")
async def live_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    client = request.query_params.get("client", "").strip()[:64]
    label = request.query_params.get("label", "").strip()[:32]
    if live is None:
        return _render(
            request,
            "live.html",
            who_,
            sessions=[],
            flows=[],
            client=client,
            label=label,
            clients=[],
            labels=[],
            counters={},
        )
    sessions, flows = live.sessions(), live.flows()
    clients = sorted(
        {s["client"] for s in sessions}
        | {f["key"].get("client") for f in flows if f["key"].get("client")}
    )
    labels = sorted(
        {str(s["verdict"].get("label")) for s in sessions}
        | {str(f["verdict"].get("label")) for f in flows}
    )

    def keep(c: Any, lab: Any) -> bool:
        return (not client or str(c) == client) and (not label or str(lab) == label)

    sessions = [s for s in sessions if keep(s["client"], s["verdict"].get("label"))]
    flows = [f for f in flows if keep(f["key"].get("client"), f["verdict"].get("label"))]
    return _render(
        request,
        "live.html",
        who_,
        sessions=sessions[:_TABLE_ROWS],
        flows=flows[:_TABLE_ROWS],
        client=client,
        label=label,
        clients=clients,
        labels=labels,
        counters=live.counters_snapshot(),
    )


# -- blocks -----------------------------------------------------------------------------------


@router.get("/blocks")
async def blocks_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    q = request.query_params.get("q", "").strip()[:100]
    if live is None:
        return _render(
            request, "blocks.html", who_, blocks=[], audit=[], q=q, now=time.time(), audit_error=""
        )
    audit: list[dict[str, Any]] = []
    audit_error = ""
    if live.audit_path is not None:
        try:
            events = await run_cpu(request, lambda p: list(read_audit(p)), live.audit_path)
        except ShortflowError as exc:
            events, audit_error = [], str(exc)
        needle = q.lower()
        for event in reversed(events):
            if needle and needle not in " ".join(str(v) for v in event.values()).lower():
                continue
            audit.append(event)
            if len(audit) >= _AUDIT_ROWS:
                break
    return _render(
        request,
        "blocks.html",
        who_,
        blocks=live.blocks(),
        audit=audit,
        q=q,
        now=time.time(),
        audit_error=audit_error,
        enforcement=live.enforcement(),
    )


@router.post("/blocks")
async def block_now(request: Request) -> Response:
    got = await _live_post(request, "/blocks")
    if isinstance(got, Response):
        return got
    who_, form, live = got
    client, server = _field(form, "client"), _field(form, "server")
    try:
        minutes = float(_field(form, "minutes") or "0")
        if not 0 < minutes <= 1440:
            raise ValueError
    except ValueError:
        return _back("/blocks", err="minutes must be a number in 1..1440")
    import ipaddress

    try:
        client = str(ipaddress.ip_address(client))
        server = str(ipaddress.ip_network(server, strict=False))
        if server.endswith(("/32", "/128")):
            server = server.rsplit("/", 1)[0]
    except ValueError:
        return _back("/blocks", err="client must be an IP address and server an IP or network")
    try:
        await run_cpu(
            request,
            live.block,
            client,
            server,
            None,
            None,
            int(minutes * 60),
            "manual block via the web page",
        )
    except ShortflowError as exc:
        return _back("/blocks", err=str(exc))
    return _back("/blocks", msg=f"blocked {client} -> {server} for {minutes:g} min")


@router.post("/blocks/{block_id}/unblock")
async def unblock(request: Request, block_id: str) -> Response:
    got = await _live_post(request, "/blocks")
    if isinstance(got, Response):
        return got
    who_, form, live = got
    try:
        done = await run_cpu(request, live.unblock, block_id[:64])
    except ShortflowError as exc:
        return _back("/blocks", err=str(exc))
    if not done:
        return _back("/blocks", err=f"no block {block_id[:64]} is in force")
    return _back("/blocks", msg="unblocked")


# -- policy -----------------------------------------------------------------------------------


def _policy_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "mode": doc.get("mode", ""),
        "categories": list(doc.get("categories", [])),
        "block_seconds": doc.get("block_seconds", ""),
        "agreement_k": doc.get("agreement", {}).get("k", ""),
        "agreement_n": doc.get("agreement", {}).get("n", ""),
        "agreement_threshold": doc.get("agreement", {}).get("threshold", ""),
        **{
            field: "\n".join(
                str(v)
                for v in ((doc.get(key) if table is None else doc.get(table, {}).get(key)) or [])
            )
            for field, (table, key) in policy_form.LIST_FIELDS.items()
        },
        "sinkhole_answer": doc.get("sinkhole", {}).get("answer", ""),
    }


def _policy_page(
    request: Request,
    who_: Who,
    live: LiveState | None,
    fields: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    raw: str | None = None,
    status: int = 200,
) -> Response:
    doc = live.policy() if live is not None else {}
    path = live.policy_holder.path if live is not None else None
    if raw is None:
        raw = policy_form.to_toml(doc) if doc else ""
    return _render(
        request,
        "policy.html",
        who_,
        status=status,
        f=fields if fields is not None else _policy_fields(doc),
        errors=errors or {},
        raw=raw,
        policy_path=str(path) if path is not None else "",
        modes=MODES,
        categories=CATEGORIES,
        answers=SINKHOLE_ANSWERS,
        enforcement=live.enforcement() if live is not None else None,
    )


@router.get("/policy")
async def policy_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    return _policy_page(request, who_, _live(request))


@router.post("/policy")
async def save_policy(request: Request) -> Response:
    got = await _live_post(request, "/policy")
    if isinstance(got, Response):
        return got
    who_, form, live = got
    source = "policy page"
    raw_text = form.get("raw")
    if form.get("save_raw") is not None and isinstance(raw_text, str):
        doc, errors = policy_form.parse_raw(raw_text, source)
        if errors or doc is None:
            return _policy_page(request, who_, live, errors=errors, raw=raw_text, status=422)
    else:
        values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        values["categories"] = [c for c in form.getlist("categories") if isinstance(c, str)]
        doc, errors = policy_form.form_to_doc(values)
        if not errors:
            errors = policy_form.check_doc(doc, source)
        fields = {**_policy_fields({}), **values}
        if errors:
            return _policy_page(request, who_, live, fields=fields, errors=errors, status=422)
    path = live.policy_holder.path
    try:
        if path is not None:
            text = policy_form.to_toml(doc)
            await run_cpu(request, policy_form.write_policy, path, text)
            live.reload_policy()
            note = f"saved to {path} and in force"
        else:
            live.set_policy_doc(doc, source)
            note = "in force (not saved: live mode runs without --policy)"
    except ShortflowError as exc:
        return _policy_page(request, who_, live, errors={"raw": str(exc)}, status=422)
    log.info("policy changed on the web page: %s", note)
    return _back("/policy", msg=f"Policy {note}.")


# -- model ------------------------------------------------------------------------------------


def _model_dirs(request: Request) -> list[str]:
    root: Path | None = request.app.state.settings.models_dir
    if root is None:
        return []
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.json").is_file())
    except OSError:
        return []


_FIRST = (
    "source",
    "horizon",
    "macro_f1",
    "short_precision",
    "short_recall",
    "false_block_long",
    "false_block_call",
    "accuracy",
)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """The figures' columns: what a row is about and the main scores first."""
    seen = [k for r in rows for k in r]
    return [k for k in _FIRST if k in seen] + sorted({k for k in seen if k not in _FIRST})


def _load(directory: Path) -> tuple[Any, Any]:
    from classifier.model.loading import load_flow_model, load_session

    return load_flow_model(directory), load_session(directory)


@router.get("/model")
async def model_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    model = request.app.state.model
    info = model.info.to_json() if model is not None else None
    metrics = dict(info.get("metrics") or {}) if info else {}
    rows = [r for r in metrics.get("per_horizon") or [] if isinstance(r, dict)]
    return _render(
        request,
        "model.html",
        who_,
        info=info,
        model_path=str(model.path) if model is not None else "",
        session=request.app.state.session_model is not None,
        model_error=request.app.state.model_error or "",
        data=metrics.get("data") or {},
        per_horizon=rows,
        per_horizon_cols=_columns(rows),
        chosen=metrics.get("chosen", ""),
        selection=metrics.get("selection", ""),
        dirs=_model_dirs(request),
        models_dir=str(request.app.state.settings.models_dir or ""),
    )


@router.post("/model")
async def choose_model(request: Request) -> Response:
    who_, form, refused = await _post_guard(request)
    if refused is not None or form is None:
        return refused or _back("/model")
    name = _field(form, "directory")
    if name not in _model_dirs(request):  # only a listed directory: no paths from the form
        return _back("/model", err=f"{name!r} is not a model directory under SHORTFLOW_MODELS_DIR")
    directory = request.app.state.settings.models_dir / name
    try:
        loaded, session = await run_cpu(request, _load, directory)
        live = request.app.state.live
        if live is not None and live.use_model is not None:  # the router decides with it
            await run_cpu(request, live.use_model, loaded, session)
    except ShortflowError as exc:
        return _back("/model", err=str(exc))
    request.app.state.model = loaded
    request.app.state.session_model = session
    request.app.state.model_error = None
    log.info("model %s loaded from %s via the web page", loaded.info.name, directory)
    where = " and in use by the live router" if request.app.state.live is not None else ""
    return _back("/model", msg=f"model {loaded.info.name} loaded from {name}{where}")


# -- captures ---------------------------------------------------------------------------------


def _timeline_chart(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per client: services of each kind active every 10 s (a step chart)."""
    out = []
    for client in sorted({s["client"] for s in spans}):
        mine = [s for s in spans if s["client"] == client]
        start = min(s["start"] for s in mine)
        end = max(s["end"] for s in mine)
        step = max(10.0, (end - start) / 400.0)
        ts: list[float] = []
        series: dict[str, list[int]] = {k: [] for k in KINDS}
        t = start
        while t <= end + 1e-9:
            ts.append(round(t, 3))
            for kind, name in zip(KINDS, ("short-form", "long-form", None), strict=True):
                series[kind].append(
                    sum(
                        1
                        for s in mine
                        if s["start"] <= t < s["end"] + step
                        and (
                            s["label"] == name
                            if name
                            else s["label"] not in ("short-form", "long-form")
                        )
                    )
                )
            t += step
        out.append({"client": client, "unit": "services", "t": ts, **series})
    return out


@router.get("/captures")
async def captures_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    return _render(request, "captures.html", who_, result=None, charts=[], error="")


@router.post("/captures")
async def classify_upload(request: Request) -> Response:
    from classifier.api.routers.captures import classify_file

    who_, form, refused = await _post_guard(request)
    if refused is not None or form is None:
        return refused or _back("/captures")
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _render(
            request,
            "captures.html",
            who_,
            status=422,
            result=None,
            charts=[],
            error="choose a pcap or pcapng file to upload",
        )
    model = request.app.state.model
    if model is None:
        return _render(
            request,
            "captures.html",
            who_,
            status=503,
            result=None,
            charts=[],
            error=f"no model loaded: {request.app.state.model_error}",
        )
    settings = request.app.state.settings
    display = Path(upload.filename).name[:120] or "upload"
    directory = str(settings.upload_dir) if settings.upload_dir is not None else None
    fd, name = tempfile.mkstemp(prefix="shortflow-web-", suffix=".cap", dir=directory)
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            while chunk := await upload.read(1 << 20):
                fh.write(chunk)
                size += len(chunk)
        result = await run_cpu(
            request,
            classify_file,
            path,
            display,
            size,
            settings,
            model,
            None,
            None,
            False,
            request.app.state.session_model,
        )
    except ShortflowError as exc:
        return _render(
            request, "captures.html", who_, status=422, result=None, charts=[], error=str(exc)
        )
    finally:
        path.unlink(missing_ok=True)
    doc = result.model_dump()
    return _render(
        request,
        "captures.html",
        who_,
        result=doc,
        flows=doc["flows"][:_TABLE_ROWS],
        charts=_timeline_chart(doc["timeline"]),
        error="",
    )


# -- a client's page and its recordings -------------------------------------------------------


_LABEL_NAMES = {
    "shorts": "Shorts (YouTube)",
    "reels": "Reels (Instagram)",
    "tiktok": "TikTok",
    "long-form": "long-form video",
}


def _size(n: Any) -> str:
    if not isinstance(n, int | float):
        return ""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


_env.filters["size"] = _size


def _client_ip(text: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()[:64]))
    except ValueError:
        return None


def _client_path(ip: str) -> str:
    return "/clients/" + quote_path(ip)


def _recording_view(live: LiveState | None) -> dict[str, Any]:
    """What the recordings section needs besides the list."""
    from classifier.live.recording import RECORDING_LABELS

    return {
        "rec_labels": [(lab, _LABEL_NAMES.get(lab, lab)) for lab in RECORDING_LABELS],
        "rec_on": live is not None and live.recorder is not None,
        "rec_off_reason": live.recording_off_reason if live is not None else "",
    }


def _client_page(
    request: Request,
    who_: Who,
    live: LiveState,
    ip: str,
    status: int = 200,
    form: dict[str, str] | None = None,
    rec_error: str = "",
) -> Response:
    now = time.time()
    lease = read_leases(live.leases_path).get(ip)
    mac = lease.mac if lease else None
    alias = _aliases(request, live).get(ip, mac) or (lease.hostname if lease else None)
    usage: UsageLog | None = live.usage
    chart = usage.last_hours(ip, now) if usage is not None else None
    charts = [{"unit": "min per hour", **chart}] if chart is not None else []
    return _render(
        request,
        "client.html",
        who_,
        status=status,
        ip=ip,
        mac=mac,
        alias=alias,
        here=_client_path(ip),
        today=usage.total(ip, UsageLog.day_start(now)) if usage else [0.0, 0.0, 0.0],
        week=usage.total(ip, UsageLog.week_start(now)) if usage else [0.0, 0.0, 0.0],
        charts=charts,
        sessions=[s for s in live.sessions() if s["client"] == ip][:_TABLE_ROWS],
        blocks=[b for b in live.blocks() if b["client"] == ip],
        now=now,
        recordings=[r for r in live.recordings() if r["client"] == ip],
        form=form or {"minutes": "10", "label": "shorts", "app": "", "alias": alias or ""},
        rec_error=rec_error,
        list_error=request.query_params.get("rec_err", "")[:300],
        enforcement=live.enforcement(),
        **_recording_view(live),
    )


@router.get("/clients/{ip}")
async def client_page(request: Request, ip: str) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    if live is None:
        return _render(request, "client.html", who_, ip=ip, recordings=[])
    client = _client_ip(ip)
    if client is None:
        return _error(request, who_, 404, f"{ip[:64]!r} is not a client's IP address")
    return _client_page(request, who_, live, client)


@router.post("/clients/{ip}/record")
async def start_recording(request: Request, ip: str) -> Response:
    who_, form, refused = await _post_guard(request)
    if refused is not None or form is None:
        return refused or _back("/")
    live = _live(request)
    client = _client_ip(ip)
    if live is None or client is None:
        return _back("/", err="live mode is not running" if live is None else "not a client IP")
    values = {k: _field(form, k) for k in ("minutes", "label", "app", "alias")}
    try:
        rec = await run_cpu(
            request,
            live.start_recording,
            client,
            values["minutes"],
            values["label"],
            values["app"] or None,
            values["alias"] or None,
        )
    except RecordingError as exc:
        message = " ".join(str(exc).split())
        return _client_page(request, who_, live, client, 422, form=values, rec_error=message)
    return _back(
        _client_path(client),
        msg=f"recording {rec['id']} started: {values['minutes']} min as {rec['label']}",
    )


def _rec_back(form: FormData | None, msg: str = "", err: str = "") -> Response:
    """Back to the page the recordings form was on (a local path only)."""
    target = _safe_next(_field(form, "next")) if form is not None else "/recordings"
    query = urlencode({k: v for k, v in (("msg", msg), ("rec_err", err)) if v})
    return _secure(RedirectResponse(target + ("?" + query if query else ""), status_code=303))


async def _rec_action(request: Request, rec_id: str, action: str) -> Response:
    who_, form, refused = await _post_guard(request)
    if refused is not None or form is None:
        return refused or _back("/recordings")
    live = _live(request)
    if live is None:
        return _rec_back(form, err="live mode is not running")
    rec_id = rec_id[:64]
    try:
        if action == "stop":
            rec = await run_cpu(request, live.stop_recording, rec_id)
            msg = f"recording {rec_id} {rec['state']}"
        elif action == "relabel":
            rec = await run_cpu(request, live.relabel_recording, rec_id, _field(form, "label"))
            msg = f"recording {rec_id} relabelled as {rec['label']}"
        elif not await run_cpu(request, live.delete_recording, rec_id):
            return _rec_back(form, err=f"no recording {rec_id!r}")
        else:
            msg = f"recording {rec_id} deleted"
    except RecordingError as exc:
        return _rec_back(form, err=" ".join(str(exc).split()))
    return _rec_back(form, msg=msg)


@router.post("/recordings/{rec_id}/stop")
async def stop_recording(request: Request, rec_id: str) -> Response:
    return await _rec_action(request, rec_id, "stop")


@router.post("/recordings/{rec_id}/relabel")
async def relabel_recording(request: Request, rec_id: str) -> Response:
    return await _rec_action(request, rec_id, "relabel")


@router.post("/recordings/{rec_id}/delete")
async def delete_recording(request: Request, rec_id: str) -> Response:
    return await _rec_action(request, rec_id, "delete")


@router.get("/recordings/{rec_id}/capture")
async def download_recording(request: Request, rec_id: str) -> Response:
    from classifier.api.routers.recordings import PCAP_MEDIA_TYPE

    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    if live is None:
        return _error(request, who_, 404, "live mode is not running")
    try:
        path = await run_cpu(request, live.recording_file, rec_id[:64])
    except RecordingError as exc:  # 404 for an unknown one, 409 while it runs (as the API)
        status = 404 if isinstance(exc, RecordingNotFound) else 409
        return _error(request, who_, status, " ".join(str(exc).split()))
    return _secure(FileResponse(path, media_type=PCAP_MEDIA_TYPE, filename=path.name))


@router.get("/recordings")
async def recordings_page(request: Request) -> Response:
    who_ = who(request, _signer(request))
    if not who_.ok:
        return _denied(request, who_)
    live = _live(request)
    return _render(
        request,
        "recordings.html",
        who_,
        here="/recordings",
        recordings=live.recordings() if live is not None else [],
        list_error=request.query_params.get("rec_err", "")[:300],
        show_client=True,
        manifest=str(live.recorder.manifest) if live and live.recorder else "",
        **_recording_view(live),
    )


def quote_path(text: str) -> str:
    return quote(text, safe="")


_env.filters["q"] = quote_path
