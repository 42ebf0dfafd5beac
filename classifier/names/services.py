"""Host name -> service -> category, from the rules in ``services.toml``.

The rules are data: a list of services, each with a category, host-name suffixes and,
where a platform's hosts sit under another one's domain, wildcard patterns. Matching is
case-insensitive and ignores a trailing dot; a pattern that matches wins, else the
longest matching suffix (respecting label boundaries). The default file next to this
module is loaded (and checked) once, on first use; :func:`load_rules` reads another file,
e.g. a user's override.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

from classifier.errors import ModelError

__all__ = [
    "DEFAULT_RULES_PATH",
    "UNKNOWN",
    "ServiceMatch",
    "ServiceRules",
    "category_for",
    "default_rules",
    "may_be_long_form",
    "may_be_short_form",
    "load_rules",
    "match",
    "service_for",
]

DEFAULT_RULES_PATH = Path(__file__).with_name("services.toml")
#: Service and category of a name no rule matches (or of no name at all).
UNKNOWN = "unknown"

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SUFFIX = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)*{_LABEL}$")
_PATTERN = re.compile(r"^(?=[^*]*\*)[a-z0-9_*-]+(?:\.[a-z0-9_*-]+)+$")


@dataclass(frozen=True, slots=True)
class ServiceMatch:
    """The rule a name matched: the service, its category and the suffix (or pattern)
    that matched."""

    service: str
    category: str
    suffix: str


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


class ServiceRules:
    """Validated service rules. Build with :func:`load_rules` (or from a parsed dict)."""

    def __init__(self, data: dict[str, Any], source: str = "<rules>") -> None:
        """Check ``data`` (the parsed TOML) and index it.

        Raises :class:`~classifier.errors.ModelError` naming ``source`` and the first problem.
        """
        self.source = source
        self._categories = self._check_categories(data)
        self._short_form = self._check_listed(data, "short_form_categories")
        self._long_form = self._check_listed(data, "long_form_categories")
        self._by_suffix: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str, str]] = []
        self._category_of: dict[str, str] = {}
        services = data.get("service")
        if not isinstance(services, list) or not services:
            self._fail("needs at least one [[service]] table")
        for i, entry in enumerate(services):
            self._add_service(i, entry)
        self._max_labels = max(s.count(".") + 1 for s in self._by_suffix)

    def _fail(self, reason: str) -> NoReturn:
        raise ModelError(f"service rules {self.source}: {reason}")

    def _check_categories(self, data: dict[str, Any]) -> dict[str, str]:
        cats = data.get("categories")
        if not isinstance(cats, dict) or not cats:
            self._fail("needs a non-empty [categories] table")
        for key, desc in cats.items():
            if not _ID.match(key) or not isinstance(desc, str):
                self._fail(f"category {key!r} needs a lower-case id and a text description")
        return dict(cats)

    def _check_listed(self, data: dict[str, Any], key: str) -> frozenset[str]:
        listed = data.get(key, list(self._categories))
        if not isinstance(listed, list) or not all(c in self._categories for c in listed):
            self._fail(f"{key} must list categories of the [categories] table")
        return frozenset(listed)

    def _add_service(self, index: int, entry: Any) -> None:
        if not isinstance(entry, dict):
            self._fail(f"service #{index + 1} is not a table")
        name = entry.get("name")
        if not isinstance(name, str) or not _ID.match(name) or name == UNKNOWN:
            self._fail(f"service #{index + 1} has a bad name {name!r}")
        if name in self._category_of:
            self._fail(f"service {name!r} is defined twice")
        category = entry.get("category")
        if category not in self._categories:
            self._fail(f"service {name!r} has unknown category {category!r}")
        suffixes = entry.get("suffixes")
        if not isinstance(suffixes, list) or not suffixes:
            self._fail(f"service {name!r} needs a non-empty suffixes list")
        extra = set(entry) - {"name", "category", "suffixes", "patterns", "note"}
        if extra:
            self._fail(f"service {name!r} has unknown keys {sorted(extra)}")
        self._category_of[name] = category
        self._add_patterns(name, entry.get("patterns", []))
        for suffix in suffixes:
            if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
                self._fail(f"service {name!r} has a bad suffix {suffix!r} (lower-case host name)")
            owner = self._by_suffix.get(suffix)
            if owner is not None:
                self._fail(f"suffix {suffix!r} is in both {owner!r} and {name!r}")
            self._by_suffix[suffix] = name

    def _add_patterns(self, name: str, patterns: Any) -> None:
        if not isinstance(patterns, list):
            self._fail(f"service {name!r}: patterns must be a list")
        for pattern in patterns:
            if not isinstance(pattern, str) or not _PATTERN.match(pattern):
                self._fail(
                    f"service {name!r} has a bad pattern {pattern!r} (a lower-case host name "
                    "with at least one '*', e.g. 'instagram.*.fbcdn.net')"
                )
            regex = re.compile(fnmatch.translate(pattern))
            self._patterns.append((regex, name, pattern))

    @property
    def services(self) -> list[str]:
        """Service names, in file order."""
        return list(self._category_of)

    @property
    def categories(self) -> dict[str, str]:
        """Category id -> description."""
        return dict(self._categories)

    def match(self, name: str | None) -> ServiceMatch | None:
        """The first pattern matching ``name``, else the longest-suffix rule, or ``None``."""
        if not name:
            return None
        host = _normalize(name)
        for regex, owner, pattern in self._patterns:
            if regex.match(host):
                return ServiceMatch(owner, self._category_of[owner], pattern)
        labels = host.split(".")
        for start in range(max(0, len(labels) - self._max_labels), len(labels)):
            suffix = ".".join(labels[start:])
            service = self._by_suffix.get(suffix)
            if service is not None:
                return ServiceMatch(service, self._category_of[service], suffix)
        return None

    def service_for(self, name: str | None) -> str:
        """Service of a host name; ``"unknown"`` when no rule matches or name is empty."""
        found = self.match(name)
        return found.service if found else UNKNOWN

    def category_for(self, service: str) -> str:
        """Category of a service name; ``"unknown"`` for unknown services."""
        return self._category_of.get(service, UNKNOWN)

    def may_be_short_form(self, category: str) -> bool:
        """Whether traffic of a service in ``category`` can be short-form video: the
        name is a prior that rules short-form out for the other categories (a call, music,
        a search page). An unknown category (no name, or a name no rule knows) is judged
        by its shape alone."""
        return category == UNKNOWN or category in self._short_form

    def may_be_long_form(self, category: str) -> bool:
        """Whether traffic of a service in ``category`` can be long-form video. Where it
        cannot, what fetches like a long video is short-form video on a platform whose
        video is short clips only (it may be short-form), and other traffic elsewhere (a
        music stream, a call). An unknown category is judged by its shape alone."""
        return category == UNKNOWN or category in self._long_form


def load_rules(path: str | Path = DEFAULT_RULES_PATH) -> ServiceRules:
    """Read and check a rules file.

    Raises :class:`~classifier.errors.ModelError` naming the file when it is missing,
    not TOML, or breaks the rules' schema.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ModelError(f"service rules {p}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"service rules {p}: not valid TOML ({exc})") from exc
    if data.get("schema") != 1:
        raise ModelError(f"service rules {p}: needs 'schema = 1'")
    return ServiceRules(data, source=str(p))


@lru_cache(maxsize=1)
def default_rules() -> ServiceRules:
    """The packaged rules, loaded once. Raises ModelError if the packaged file is broken."""
    return load_rules(DEFAULT_RULES_PATH)


def match(name: str | None) -> ServiceMatch | None:
    """Rule of ``name`` under the packaged rules, or ``None``."""
    return default_rules().match(name)


def service_for(name: str | None) -> str:
    """Service of a host name under the packaged rules (``"unknown"`` if none)."""
    return default_rules().service_for(name)


def category_for(service: str) -> str:
    """Category of a service under the packaged rules (``"unknown"`` if none)."""
    return default_rules().category_for(service)


def may_be_short_form(category: str) -> bool:
    """:meth:`ServiceRules.may_be_short_form` under the packaged rules."""
    return default_rules().may_be_short_form(category)


def may_be_long_form(category: str) -> bool:
    """:meth:`ServiceRules.may_be_long_form` under the packaged rules."""
    return default_rules().may_be_long_form(category)
