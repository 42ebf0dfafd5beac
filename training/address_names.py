"""Names by server address, for evaluating captures that have none.

The packet traces keep real server addresses but no names, so a model's figures on them
are those of traffic without names. Live mode and `shortflow classify` usually see the
names (TLS/QUIC SNI, DNS), and names change what the session view groups: every flow of
one service is one group, where a nameless flow's group is its server's /24. To estimate
that effect, `shortflow evaluate-sessions --names-by-address FILE` gives each nameless
flow whose server lies in a listed network the service (and, from the service rules, the
category) it would have had with its name. It is an evaluation aid, never a model input
or a product rule: addresses are shared by services and change over time.

FILE is TOML::

    [[service]]
    name = "youtube"              # a service of classifier/names/services.toml
    networks = ["74.125.0.0/16"]  # where its servers are, as seen in the captures
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifier.errors import DatasetError
from classifier.names.services import UNKNOWN, category_for, default_rules

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AddressNames", "load_address_names"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AddressNames:
    """Networks and the service each stands for (first match wins, file order)."""

    networks: tuple[tuple[_Network, str], ...]

    def service_of(self, server: str) -> str | None:
        """The service of ``server``'s network, or None."""
        try:
            address = ipaddress.ip_address(server)
        except ValueError:
            return None
        return next((s for net, s in self.networks if address in net), None)

    def apply(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` (with ``server``, ``service`` and ``category`` columns) where each row
        without a name's service gets its server's listed service and its category."""
        service = rows["service"].fillna(UNKNOWN).astype(str)
        nameless = service.isin(("", UNKNOWN))
        servers = rows.loc[nameless, "server"].astype(str)
        found = {s: self.service_of(s) for s in servers.unique()}
        named = servers.map(found).dropna()
        if named.empty:
            return rows
        out = rows.copy()
        out.loc[named.index, "service"] = named
        out.loc[named.index, "category"] = named.map(category_for)
        return out


def load_address_names(path: str | Path) -> AddressNames:
    """Read a names-by-address file. Raises :class:`DatasetError` naming the file and
    what is wrong."""
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: not valid TOML ({exc})") from exc
    entries = data.get("service")
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{p}: needs at least one [[service]] table with name and networks")
    known = set(default_rules().services)
    networks: list[tuple[_Network, str]] = []
    for i, entry in enumerate(entries, 1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in known:
            raise DatasetError(f"{p}: service #{i} {name!r} is not a service of the rules")
        listed = entry.get("networks")
        if not isinstance(listed, list) or not listed:
            raise DatasetError(f"{p}: service {name!r} needs a non-empty networks list")
        for text in listed:
            try:
                networks.append((ipaddress.ip_network(str(text)), str(name)))
            except ValueError as exc:
                raise DatasetError(f"{p}: service {name!r}: bad network {text!r}") from exc
    return AddressNames(tuple(networks))
