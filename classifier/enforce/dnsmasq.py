"""A dnsmasq config snippet that fills shortflow's ``dns4``/``dns6`` sets from DNS answers.

For routers that already run dnsmasq: instead of (or besides) the embedded sinkhole,
dnsmasq puts every address it resolves for a listed name into the nftables sets
``inet shortflow dns4`` / ``dns6`` (``nftset=`` needs dnsmasq >= 2.87 built with nftset
support), and the forward chain of :class:`~classifier.enforce.nft.NftTable` blocks traffic to
and from them; elements get the set's default timeout, so they expire by themselves.

Drop the file into ``/etc/dnsmasq.d/`` and restart dnsmasq after ``NftTable.create()``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from classifier.enforce.nft import DNS_SETS, TABLE
from classifier.enforce.policy import clean_dns_name
from classifier.errors import EnforcementError

__all__ = ["render_dnsmasq_conf", "write_dnsmasq_conf"]

_PER_LINE = 20  # names per nftset= line: keeps lines short for dnsmasq and humans


def _clean(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in names:
        name = clean_dns_name(raw)
        if name is None:
            raise EnforcementError(f"{raw!r} is not a DNS name usable in a dnsmasq nftset line")
        if name not in out:
            out.append(name)
    if not out:
        raise EnforcementError("no names given for the dnsmasq nftset snippet")
    return out


def render_dnsmasq_conf(
    names: Iterable[str],
    *,
    table: str = TABLE,
    set4: str = DNS_SETS[0],
    set6: str = DNS_SETS[1],
) -> str:
    """Return the snippet text: a comment header and ``nftset=/a/b/4#inet#T#S4,6#inet#T#S6``.

    Names match themselves and every subdomain (dnsmasq's rule). Raises EnforcementError for
    an empty list or a name that is not a plain DNS name (no slashes, spaces, wildcards
    other than a leading ``*.``).
    """
    for ident in (table, set4, set6):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", ident):
            raise EnforcementError(f"{ident!r} is not a valid nftables table or set name")
    clean = _clean(names)
    target = f"4#inet#{table}#{set4},6#inet#{table}#{set6}"
    lines = [
        "# Written by shortflow: resolved addresses of these names go into the nftables",
        f"# sets inet {table} {set4}/{set6}, whose members shortflow blocks until they expire.",
        "# Regenerate rather than edit.",
    ]
    for i in range(0, len(clean), _PER_LINE):
        chunk = clean[i : i + _PER_LINE]
        lines.append(f"nftset=/{'/'.join(chunk)}/{target}")
    return "\n".join(lines) + "\n"


def write_dnsmasq_conf(path: str | Path, names: Iterable[str], **kwargs: str) -> Path:
    """Write the snippet atomically (temp file + rename) and return the path.

    Raises EnforcementError for bad names or when the file cannot be written.
    """
    text = render_dnsmasq_conf(names, **kwargs)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".shortflow-", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise EnforcementError(f"cannot write dnsmasq snippet {target}: {exc.strerror}") from None
    return target
