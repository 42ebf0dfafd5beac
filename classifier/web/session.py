"""Browser sessions for the web pages: a signed login cookie and CSRF tokens tied to it.

The pages need what the JSON API needs (:mod:`classifier.api.auth`): with
``SHORTFLOW_API_TOKEN`` set, the token; without one, a loopback peer. A browser gives the
token once, on the login form, and gets a cookie (HttpOnly, SameSite=Strict, Secure over
HTTPS) that holds a random id, its issue time and an HMAC of both, keyed by a secret
drawn when the app starts and the token itself: the cookie never holds the token, dies
with a restart or a new token, and expires after ``MAX_AGE`` seconds. A bearer header
works as well (no cookie, no CSRF token needed: a browser never adds it by itself).

Every form that changes something carries a CSRF token: an HMAC of the cookie's id,
checked in constant time; a POST without the right one answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request

from classifier.api.auth import is_loopback

__all__ = ["COOKIE", "MAX_AGE", "Signer", "Who", "who", "token_matches"]

COOKIE = "shortflow_session"
MAX_AGE = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Who:
    """How a request is let in: ``ok`` (may see and change), ``by`` (token, cookie,
    loopback), ``sid`` (the cookie's id, for CSRF), ``why`` (when not ok)."""

    ok: bool
    by: str = ""
    sid: str | None = None
    why: str = ""


class Signer:
    """Signs and checks session cookies and CSRF tokens with a key drawn at start-up."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def _key(self, token: str | None) -> bytes:
        return hmac.new(self._secret, (token or "").encode(), hashlib.sha256).digest()

    def _mac(self, token: str | None, text: str) -> str:
        return hmac.new(self._key(token), text.encode(), hashlib.sha256).hexdigest()

    def issue(self, token: str | None, now: float | None = None) -> str:
        """A new cookie value."""
        sid = secrets.token_hex(16)
        issued = int(time.time() if now is None else now)
        body = f"{sid}.{issued}"
        return f"{body}.{self._mac(token, 'session:' + body)}"

    def check(self, token: str | None, value: str | None, now: float | None = None) -> str | None:
        """The cookie's id when ``value`` is a valid, unexpired cookie, else None."""
        if not value or len(value) > 200:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        sid, issued, mac = parts
        want = self._mac(token, f"session:{sid}.{issued}")
        if not hmac.compare_digest(mac.encode(), want.encode()):
            return None
        if (time.time() if now is None else now) - int(issued) > MAX_AGE:
            return None
        return sid

    def csrf(self, token: str | None, sid: str) -> str:
        """The CSRF token of session ``sid``."""
        return self._mac(token, "csrf:" + sid)

    def csrf_ok(self, token: str | None, sid: str | None, given: str | None) -> bool:
        if not sid or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf(token, sid).encode())


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def who(request: Request, signer: Signer) -> Who:
    """Whether (and how) ``request`` may see and change the live pages."""
    expected: str | None = request.app.state.settings.token()
    sid = signer.check(expected, request.cookies.get(COOKIE))
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if expected is None:
        peer = request.client.host if request.client is not None else None
        if is_loopback(peer):
            return Who(True, "loopback", sid)
        return Who(
            False,
            why="no API token is configured, so these pages answer loopback clients only; "
            "set SHORTFLOW_API_TOKEN",
        )
    if scheme.lower() == "bearer" and credentials:
        if token_matches(credentials.strip(), expected):
            return Who(True, "token", sid)
        return Who(False, why="the bearer token is not valid")
    if sid is not None:
        return Who(True, "cookie", sid)
    return Who(False, why="log in with the API token")
