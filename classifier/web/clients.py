"""Who a client is: names from a dnsmasq leases file and names set by hand on the page.

A dnsmasq leases file has one lease a line: ``EXPIRY MAC IP HOSTNAME CLIENT-ID`` (the
host name ``*`` when the client sent none). Names set by hand are kept in a small JSON
file (``{"10.77.1.2": "Anna's phone"}``, keyed by IP or MAC) and win over the lease's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from classifier.errors import ShortflowError

__all__ = ["Lease", "read_leases", "parse_leases", "Aliases", "ALIASES_FILE", "MAX_ALIAS"]

log = logging.getLogger(__name__)

ALIASES_FILE = "shortflow-aliases.json"
MAX_ALIAS = 64
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True, slots=True)
class Lease:
    ip: str
    mac: str | None
    hostname: str | None
    expiry: int


def parse_leases(text: str) -> dict[str, Lease]:
    """The leases of a dnsmasq leases file's text, by IP. Malformed lines (and the
    ``duid`` line of DHCPv6) are skipped."""
    out: dict[str, Lease] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            ip = str(ipaddress.ip_address(parts[2]))
        except ValueError:
            continue
        mac = parts[1].lower() if _MAC_RE.match(parts[1].lower()) else None
        host = parts[3] if parts[3] != "*" else None
        out[ip] = Lease(ip=ip, mac=mac, hostname=host, expiry=int(parts[0]))
    return out


def read_leases(path: str | Path | None) -> dict[str, Lease]:
    """The leases in ``path`` (none when ``path`` is None, missing or unreadable: logged)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.debug("leases file %s not read: %s", path, exc)
        return {}
    return parse_leases(text)


def _clean_key(key: str) -> str:
    key = key.strip().lower()
    if _MAC_RE.match(key.replace("-", ":")):
        return key.replace("-", ":")
    try:
        return str(ipaddress.ip_address(key))
    except ValueError:
        raise ShortflowError(f"client {key!r} is neither an IP nor a MAC address") from None


class Aliases:
    """Names set by hand for clients (by IP or MAC), kept in a JSON file when given one."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        if self.path is not None:
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(doc, dict):
                    self._names = {str(k): str(v)[:MAX_ALIAS] for k, v in doc.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.warning("aliases file %s not loaded: %s", self.path, exc)

    def get(self, *keys: str | None) -> str | None:
        with self._lock:
            for key in keys:
                if key and key in self._names:
                    return self._names[key]
        return None

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._names)

    def set(self, key: str, name: str) -> None:
        """Name ``key`` (an IP or MAC); an empty name removes it. Saved to the file.

        Raises ShortflowError for a bad key, a name that is too long, or a failed save.
        """
        clean = _clean_key(key)
        name = " ".join(name.split())
        if len(name) > MAX_ALIAS:
            raise ShortflowError(f"a name has at most {MAX_ALIAS} characters")
        with self._lock:
            if name:
                self._names[clean] = name
            else:
                self._names.pop(clean, None)
            if self.path is None:
                return
            try:
                fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=self.path.parent)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self._names, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except OSError as exc:
                raise ShortflowError(f"cannot save names to {self.path}: {exc.strerror}") from None
