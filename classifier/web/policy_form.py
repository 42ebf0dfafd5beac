"""The policy page's form: fields -> a policy document, errors by key, and TOML text out."""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from classifier.enforce.policy import CATEGORIES, parse_policy
from classifier.errors import PolicyError, ShortflowError

__all__ = ["form_to_doc", "check_doc", "to_toml", "write_policy", "error_key", "LIST_FIELDS"]

#: form field -> (table or None, key) for the fields that take a list
LIST_FIELDS = {
    "schedules": (None, "schedules"),
    "clients_only": ("clients", "only"),
    "clients_never": ("clients", "never"),
    "allow_names": ("allow", "names"),
    "allow_ips": ("allow", "ips"),
    "sinkhole_names": ("sinkhole", "names"),
}
_KEY_RE = re.compile(r"key '([^']+)'")


def _items(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,]+", text) if t]


def error_key(message: str) -> str:
    """The policy key a PolicyError message names (``agreement.k``), else ``raw``."""
    m = _KEY_RE.search(message)
    return m.group(1) if m else "raw"


def form_to_doc(form: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy document the form's fields give, and the errors of fields that are not
    even numbers (by policy key)."""
    errors: dict[str, str] = {}
    doc: dict[str, Any] = {"mode": str(form.get("mode", "")).strip()}
    cats = form.get("categories")
    doc["categories"] = [c for c in (cats or []) if isinstance(c, str)]

    def number(key: str, raw: Any, kind: type) -> Any:
        text = str(raw if raw is not None else "").strip()
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            errors[key] = f"key '{key}' must be {what}, got {text!r}"
            return None

    secs = number("block_seconds", form.get("block_seconds"), int)
    if secs is not None:
        doc["block_seconds"] = secs
    agreement: dict[str, Any] = {}
    for key, kind in (("k", int), ("n", int), ("threshold", float)):
        value = number(f"agreement.{key}", form.get(f"agreement_{key}"), kind)
        if value is not None:
            agreement[key] = value
    doc["agreement"] = agreement
    for field, (table, key) in LIST_FIELDS.items():
        values = _items(str(form.get(field, "")))
        if table is None:
            doc[key] = values
        else:
            doc.setdefault(table, {})[key] = values
    answer = str(form.get("sinkhole_answer", "")).strip()
    if answer:
        doc.setdefault("sinkhole", {})["answer"] = answer
    return doc, errors


def check_doc(doc: Mapping[str, Any], source: str) -> dict[str, str]:
    """Errors of ``doc`` by key (empty when the policy parser takes it)."""
    try:
        parse_policy(doc, source)
    except PolicyError as exc:
        return {error_key(str(exc)): str(exc)}
    return {}


def parse_raw(text: str, source: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The document of raw TOML text and its errors (key ``raw`` when not TOML)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, {"raw": f"{source}: not valid TOML: {exc}"}
    doc.pop("source", None)
    return doc, check_doc(doc, source)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ShortflowError(f"cannot write {type(value).__name__} to a policy file")


def to_toml(doc: Mapping[str, Any]) -> str:
    """``doc`` (the policy shape: top-level values, then one level of tables) as TOML."""
    lines = ["# shortflow policy, written by the web page"]
    tables = []
    for key, value in doc.items():
        if key == "source":
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for name, table in tables:
        if not table:
            continue
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def write_policy(path: Path, text: str) -> None:
    """Replace the policy file atomically (same permissions when it existed).

    Raises ShortflowError when it cannot be written.
    """
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=".policy-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ShortflowError(f"cannot write policy file {path}: {exc.strerror}") from None


CATEGORY_CHOICES = CATEGORIES
