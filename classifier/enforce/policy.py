"""The blocking policy: what to block, for whom, when, and how sure the model must be.

A policy is a small TOML file; every key is optional (defaults in brackets)::

    mode = "dry-run"                 # off | dry-run | nft                      ["dry-run"]
    categories = ["shorts", "reels", "tiktok"]   # labels to block             [all three]
    block_seconds = 300              # how long one block lasts (1..86400)      [300]
    schedules = ["21:00-07:00"]      # local times; empty = always; may cross midnight [[]]

    [agreement]                      # block only when k of the last n verdicts
    k = 3                            # for a client+service have probability
    n = 5                            # >= threshold                             [3 of 5, 0.8]
    threshold = 0.8

    [clients]
    only = ["10.77.1.0/24", "aa:bb:cc:dd:ee:ff"]   # IPs, CIDRs or MACs; empty = everyone
    never = ["10.77.1.50"]                         # exempt, wins over ``only``

    [allow]                          # never blocked, whatever the model says
    names = ["classroom.example.org"]  # suffix match on each connection's SNI / DNS name
    ips = ["10.77.2.0/24"]           # server addresses or networks

    [sinkhole]                       # DNS answers for names that are short-form as a whole
    names = ["tiktok.com", ...]      # suffix match               [TikTok/ByteDance names]
    answer = "zero"                  # zero (0.0.0.0 / ::) | nxdomain           ["zero"]

:func:`load_policy` refuses unknown keys and bad values with a :class:`PolicyError` that
names the file, the key and what to do. :class:`PolicyHolder` reloads on demand and keeps
the running policy when the new file is bad.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any

from classifier.errors import PolicyError

__all__ = [
    "Policy",
    "PolicyHolder",
    "Schedule",
    "load_policy",
    "parse_policy",
    "enforcement_status",
    "MODES",
    "CATEGORIES",
    "SINKHOLE_ANSWERS",
    "DEFAULT_SINKHOLE_NAMES",
    "clean_dns_name",
]

log = logging.getLogger(__name__)

MODES = ("off", "dry-run", "nft")
CATEGORIES = ("shorts", "reels", "tiktok")
SINKHOLE_ANSWERS = ("zero", "nxdomain")

#: TikTok and ByteDance names: TikTok is short-form as a whole, so its names can go.
DEFAULT_SINKHOLE_NAMES: tuple[str, ...] = (
    "tiktok.com",
    "tiktokv.com",
    "tiktokv.us",
    "tiktokv.eu",
    "tiktokcdn.com",
    "tiktokcdn-us.com",
    "tiktokcdn-eu.com",
    "tiktokw.us",
    "tiktokw.eu",
    "ttwstatic.com",
    "ttlivecdn.com",
    "byteoversea.com",
    "byteoversea.net",
    "bytefcdn-oversea.com",
    "bytefcdn-ttpeu.com",
    "ibytedtos.com",
    "ibyteimg.com",
    "ipstatp.com",
    "muscdn.com",
    "musical.ly",
)

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
# \Z, not $: "$" also matches before a final newline, which let "a.com\n" through
_NAME_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\Z")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")

_TOP_KEYS = {
    "mode",
    "categories",
    "block_seconds",
    "schedules",
    "agreement",
    "clients",
    "allow",
    "sinkhole",
}
_TABLE_KEYS = {
    "agreement": {"k", "n", "threshold"},
    "clients": {"only", "never"},
    "allow": {"names", "ips"},
    "sinkhole": {"names", "answer"},
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Schedule:
    """A daily time window ``start``-``end`` (local time); ``end < start`` crosses midnight."""

    start: time
    end: time | None  # None means 24:00
    text: str

    def contains(self, t: time) -> bool:
        """Whether the wall-clock time ``t`` falls inside the window (start inclusive)."""
        t = t.replace(tzinfo=None)
        if self.end is None:
            return t >= self.start
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Policy:
    """A validated, immutable policy (see the module docstring for the file format)."""

    mode: str = "dry-run"
    categories: frozenset[str] = frozenset(CATEGORIES)
    block_seconds: int = 300
    schedules: tuple[Schedule, ...] = ()
    agreement_k: int = 3
    agreement_n: int = 5
    threshold: float = 0.8
    only_ips: tuple[Network, ...] = ()
    only_macs: frozenset[str] = frozenset()
    never_ips: tuple[Network, ...] = ()
    never_macs: frozenset[str] = frozenset()
    allow_names: frozenset[str] = frozenset()
    allow_ips: tuple[Network, ...] = ()
    sinkhole_names: frozenset[str] = frozenset(DEFAULT_SINKHOLE_NAMES)
    sinkhole_answer: str = "zero"
    source: str = field(default="<default>", compare=False)

    @classmethod
    def default(cls) -> Policy:
        """The built-in policy: dry-run, all categories, everyone, always, 3 of 5 at 0.8."""
        return cls()

    # -- who and when ---------------------------------------------------------------------

    @property
    def names_macs(self) -> bool:
        """Whether the client lists name any MAC address."""
        return bool(self.only_macs or self.never_macs)

    def match(
        self, client_ip: str | None, client_mac: str | None, now: datetime | None = None
    ) -> str | None:
        """Why the policy covers this client at ``now`` (a short rule text), or None.

        ``now`` defaults to the local time; a naive datetime is taken as local time. While
        ``never`` lists MAC addresses, a client whose MAC is not known is not covered: it
        may be one of them (fail open).
        """
        ip = _maybe_ip(client_ip)
        mac = client_mac.lower() if client_mac else None
        if (ip is not None and _in_any(ip, self.never_ips)) or (
            mac in self.never_macs if mac is not None else bool(self.never_macs)
        ):
            return None
        parts: list[str] = []
        if self.only_ips or self.only_macs:
            hit_ip = next((n for n in self.only_ips if ip is not None and ip in n), None)
            if hit_ip is not None:
                parts.append(f"client {hit_ip}")
            elif mac is not None and mac in self.only_macs:
                parts.append(f"client {mac}")
            else:
                return None
        else:
            parts.append("all clients")
        if self.schedules:
            wall = now or datetime.now()
            if wall.tzinfo is not None:
                wall = wall.astimezone()  # schedules are in the router's local time
            hit = next((s for s in self.schedules if s.contains(wall.time())), None)
            if hit is None:
                return None
            parts.append(f"schedule {hit.text}")
        else:
            parts.append("always")
        return ", ".join(parts)

    def applies(
        self, client_ip: str | None, client_mac: str | None, now: datetime | None = None
    ) -> bool:
        """Whether this client is covered at ``now`` (client lists and schedules)."""
        return self.match(client_ip, client_mac, now) is not None

    # -- what -----------------------------------------------------------------------------

    def should_block(self, category: str) -> bool:
        """Whether verdicts of this category (``shorts``, ``reels``, ``tiktok``) are blocked."""
        return self.mode != "off" and category.lower() in self.categories

    def allowed(self, name: str | None = None, server_ip: str | None = None) -> bool:
        """Whether a server name (suffix match) or address is on the allowlist."""
        if name and _suffix_hit(name, self.allow_names) is not None:
            return True
        ip = _maybe_ip(server_ip)
        return ip is not None and _in_any(ip, self.allow_ips)

    def allowed_sinkhole_names(self) -> list[str]:
        """The ``[allow]`` names that fall under a ``[sinkhole]`` name: the DNS sinkhole
        answers them, a resolver that only knows the sinkhole names (dnsmasq) does not."""
        return sorted(n for n in self.allow_names if _suffix_hit(n, self.sinkhole_names))

    def sinkhole_rule(self, name: str) -> str | None:
        """The sinkhole suffix ``name`` falls under, or None (not sinkholed / allowlisted)."""
        if self.mode == "off" or _suffix_hit(name, self.allow_names) is not None:
            return None
        return _suffix_hit(name, self.sinkhole_names)

    def votes(self, probabilities: Sequence[float]) -> int:
        """How many of the last ``n`` probabilities reach the threshold."""
        recent = list(probabilities)[-self.agreement_n :]
        return sum(1 for p in recent if p >= self.threshold)

    def agrees(self, probabilities: Sequence[float]) -> bool:
        """Whether at least ``k`` of the last ``n`` probabilities reach the threshold."""
        return self.votes(probabilities) >= self.agreement_k


_MODE_EFFECT = {"off": "do anything", "dry-run": "log would-be blocks", "nft": "block"}


def enforcement_status(flag: str, policy_mode: str) -> dict[str, str | None]:
    """How ``shortflow live --enforce FLAG`` and the policy's ``mode`` combine: the more
    cautious wins (off < dry-run < nft, the order of :data:`MODES`).

    Returns ``{"flag", "policy", "effective", "note"}``; ``note`` is None when the two
    agree, else one line saying which is used and what to change to get the other.
    """
    effective = min(flag, policy_mode, key=MODES.index)
    note = None
    if flag != policy_mode:
        if effective == flag:
            fix = f"Pass --enforce {policy_mode} to {_MODE_EFFECT[policy_mode]}."
        else:
            fix = f'Set mode = "{flag}" in the policy to {_MODE_EFFECT[flag]}.'
        note = (
            f"enforcement: --enforce {flag} and policy mode {policy_mode} disagree; "
            f"using {effective} (the more cautious). {fix}"
        )
    return {"flag": flag, "policy": policy_mode, "effective": effective, "note": note}


def clean_dns_name(raw: str) -> str | None:
    """``raw`` as a name rule: trimmed, lower case, no trailing dot, no leading ``*.``;
    None unless the result is a plain DNS name (labels of 1-63 letters, digits, ``-``,
    ``_``; 253 characters in all; nothing else anywhere, not even a final newline)."""
    name = raw.strip().lower().strip(".")
    if name.startswith("*."):
        name = name[2:]
    return name if _NAME_RE.match(name) else None


def _maybe_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _in_any(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Iterable[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def _suffix_hit(name: str, suffixes: frozenset[str]) -> str | None:
    """Return the entry of ``suffixes`` that ``name`` equals or ends with (at a dot)."""
    if not suffixes:
        return None
    labels = name.lower().rstrip(".").split(".")
    for i in range(len(labels)):
        cand = ".".join(labels[i:])
        if cand in suffixes:
            return cand
    return None


# -- loading -------------------------------------------------------------------------------


class _Checker:
    """Validates one parsed TOML document; every error names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.source}: key '{key}' {problem}")

    def str_list(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, 'must be a list of strings, e.g. ["a", "b"]')
        return [v.strip() for v in value]

    def int_in(self, key: str, value: Any, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(key, f"must be a whole number in {lo}..{hi}, got {value!r}")
        return value

    def choice(self, key: str, value: Any, options: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def clients(self, key: str, value: Any) -> tuple[tuple[Network, ...], frozenset[str]]:
        nets: list[Network] = []
        macs: set[str] = set()
        for item in self.str_list(key, value):
            low = item.lower().replace("-", ":")
            if _MAC_RE.match(low):
                macs.add(low)
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise self.fail(
                    key, f"has {item!r}, which is neither an IP, a CIDR nor a MAC address"
                ) from None
        return tuple(nets), frozenset(macs)

    def networks(self, key: str, value: Any) -> tuple[Network, ...]:
        nets: list[Network] = []
        for item in self.str_list(key, value):
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise self.fail(key, f"has {item!r}, which is not an IP or CIDR") from None
        return tuple(nets)

    def names(self, key: str, value: Any) -> frozenset[str]:
        out: set[str] = set()
        for item in self.str_list(key, value):
            name = clean_dns_name(item)
            if name is None:
                raise self.fail(key, f"has {item!r}, which is not a DNS name like example.com")
            out.add(name)
        return frozenset(out)

    def schedule(self, key: str, text: str) -> Schedule:
        parts = text.replace(" ", "").split("-")
        if len(parts) != 2:
            raise self.fail(key, f"has {text!r}; write a window as HH:MM-HH:MM, e.g. 21:00-07:00")
        start = self._time(key, text, parts[0], allow_24=False)
        end = self._time(key, text, parts[1], allow_24=True)
        if start is None or end == start:
            raise self.fail(key, f"has {text!r}, an empty window; use 00:00-24:00 for all day")
        return Schedule(start, end, text.replace(" ", ""))

    def _time(self, key: str, text: str, part: str, *, allow_24: bool) -> time | None:
        m = _TIME_RE.match(part)
        if m is None:
            raise self.fail(key, f"has {text!r}; times are HH:MM, e.g. 21:00-07:00")
        h, mi = int(m.group(1)), int(m.group(2))
        if allow_24 and h == 24 and mi == 0:
            return None
        if h > 23 or mi > 59:
            raise self.fail(key, f"has {text!r}, whose time {part!r} does not exist")
        return time(h, mi)


def parse_policy(doc: Mapping[str, Any], source: str = "<policy>") -> Policy:
    """Build a :class:`Policy` from an already parsed TOML mapping.

    Raises PolicyError naming ``source``, the key and what to do.
    """
    chk = _Checker(source)
    for key in doc:
        if key not in _TOP_KEYS:
            raise chk.fail(key, f"is unknown; known keys: {', '.join(sorted(_TOP_KEYS))}")
    for table, keys in _TABLE_KEYS.items():
        sub = doc.get(table, {})
        if not isinstance(sub, dict):
            raise chk.fail(table, f"must be a table, e.g. [{table}]")
        for key in sub:
            if key not in keys:
                raise chk.fail(
                    f"{table}.{key}", f"is unknown; known keys: {', '.join(sorted(keys))}"
                )
    d = Policy.default()
    kw: dict[str, Any] = {"source": source}
    if "mode" in doc:
        kw["mode"] = chk.choice("mode", doc["mode"], MODES)
    if "categories" in doc:
        cats = [c.lower() for c in chk.str_list("categories", doc["categories"])]
        bad = [c for c in cats if c not in CATEGORIES]
        if bad:
            raise chk.fail("categories", f"has {bad[0]!r}; choose from {', '.join(CATEGORIES)}")
        kw["categories"] = frozenset(cats)
    if "block_seconds" in doc:
        kw["block_seconds"] = chk.int_in("block_seconds", doc["block_seconds"], 1, 86400)
    if "schedules" in doc:
        kw["schedules"] = tuple(
            chk.schedule("schedules", s) for s in chk.str_list("schedules", doc["schedules"])
        )
    agr = doc.get("agreement", {})
    n = chk.int_in("agreement.n", agr.get("n", d.agreement_n), 1, 100)
    k = chk.int_in("agreement.k", agr.get("k", d.agreement_k), 1, 100)
    if k > n:
        raise chk.fail("agreement.k", f"({k}) must not exceed agreement.n ({n})")
    thr = agr.get("threshold", d.threshold)
    if isinstance(thr, bool) or not isinstance(thr, int | float) or not 0.0 <= thr <= 1.0:
        raise chk.fail("agreement.threshold", f"must be a number in 0..1, got {thr!r}")
    kw.update(agreement_k=k, agreement_n=n, threshold=float(thr))
    clients = doc.get("clients", {})
    if "only" in clients:
        kw["only_ips"], kw["only_macs"] = chk.clients("clients.only", clients["only"])
    if "never" in clients:
        kw["never_ips"], kw["never_macs"] = chk.clients("clients.never", clients["never"])
    allow = doc.get("allow", {})
    if "names" in allow:
        kw["allow_names"] = chk.names("allow.names", allow["names"])
    if "ips" in allow:
        kw["allow_ips"] = chk.networks("allow.ips", allow["ips"])
    sink = doc.get("sinkhole", {})
    if "names" in sink:
        kw["sinkhole_names"] = chk.names("sinkhole.names", sink["names"])
    if "answer" in sink:
        kw["sinkhole_answer"] = chk.choice("sinkhole.answer", sink["answer"], SINKHOLE_ANSWERS)
    return Policy(**kw)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a TOML policy file.

    Raises PolicyError (one line, naming the file, the key and what to do) when the file is
    missing, unreadable, not TOML, or has an unknown key or a bad value.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{p}: policy file not found") from None
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{p}: policy file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{p}: not valid TOML: {exc}") from None
    return parse_policy(doc, str(p))


class PolicyHolder:
    """Holds the running policy; :meth:`reload` swaps it only when the new file is valid.

    ``path=None`` holds :meth:`Policy.default` (or ``initial``) and reload does nothing.
    Reading :attr:`current` is cheap and thread-safe.
    """

    def __init__(self, path: str | Path | None = None, initial: Policy | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.last_error: PolicyError | None = None
        if initial is not None:
            self._policy = initial
        elif self.path is not None:
            self._policy = load_policy(self.path)
        else:
            self._policy = Policy.default()

    @property
    def current(self) -> Policy:
        """The policy in force."""
        return self._policy

    def reload(self) -> PolicyError | None:
        """Re-read the file. On success swap and return None; on failure keep the running
        policy, log the error and return it (never raises for a bad file)."""
        if self.path is None:
            return None
        try:
            new = load_policy(self.path)
        except PolicyError as exc:
            log.error("policy not reloaded, the running policy stays: %s", exc)
            self.last_error = exc
            return exc
        with self._lock:
            self._policy = new
            self.last_error = None
        log.info("policy reloaded from %s (mode %s)", self.path, new.mode)
        return None

    def set(self, policy: Policy) -> None:
        """Put a policy in force directly (tests, API)."""
        with self._lock:
            self._policy = policy
