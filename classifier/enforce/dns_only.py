"""The DNS-only router's blocking rules: the policy's clients and hours as nft matches.

A router that runs only the DNS part of shortflow (``shortflow dnsmasq-files``) blocks the
addresses dnsmasq resolves for the ``[sinkhole]`` names. Without shortflow running, the
policy's ``[clients]`` and ``schedules`` have to live in the ruleset itself:

* ``[clients] only``: one rule per kind of listed client (its addresses, its MACs);
  ``never``: ``!=`` matches on every rule. A MAC is matched on the client's own packets
  (``ether saddr``; nft checks the packet came in over Ethernet, so a client behind a
  tunnel never matches one, as live mode does not block a client of unknown MAC while
  ``never`` lists MACs). Replies carry the upstream router's MAC, so for a client listed
  by MAC, and for everyone while ``never`` lists MACs, only the client's own packets to
  the blocked addresses are stopped (a TCP reset or a drop ends the connection as well).
* ``schedules``: ``meta hour`` ranges; a window across midnight is split in two. nft turns
  the local times into UTC when it loads the file, with the time zone of the ``nft``
  command, so the file has to be loaded again after a daylight-saving change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, time, timedelta

from classifier.enforce.nft import dns_rule
from classifier.enforce.policy import Policy, Schedule

__all__ = ["dns_block_rules"]

_LAST = time(23, 59, 59)


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _before(t: time) -> time:
    """The second before ``t`` (nft hour ranges include their end)."""
    return (datetime.combine(datetime.min, t) - timedelta(seconds=1)).time()


def _ranges(schedule: Schedule) -> list[tuple[time, time]]:
    start, end = schedule.start, schedule.end
    if end is None:
        return [(start, _LAST)]
    if start < end:
        return [(start, _before(end))]
    if start == end:
        return [(time(0), _LAST)]
    return [(start, _LAST)] + ([(time(0), _before(end))] if end > time(0) else [])


def _hours(schedules: Iterable[Schedule]) -> str:
    """``meta hour { ... } `` for the schedules, or "" when there are none (always)."""
    spans: list[tuple[time, time]] = []
    for a, b in sorted(r for s in schedules for r in _ranges(s)):
        # overlapping ranges become one (older nft refuses overlaps in a set)
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    if not spans:
        return ""
    return "meta hour " + _set(f'"{a:%H:%M:%S}"-"{b:%H:%M:%S}"' for a, b in spans) + " "


def _nets(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    return _set(str(n) for n in nets)


def dns_block_rules(policy: Policy) -> list[str]:
    """The forward chain's rules blocking traffic to and from the ``dns4``/``dns6``
    members for the clients and hours ``policy`` covers (see the module docstring)."""
    hours = _hours(policy.schedules)
    no_macs = f"ether saddr != {_set(sorted(policy.never_macs))} " if policy.never_macs else ""
    rules: list[str] = []
    for v in ("4", "6"):
        fam = "ip" if v == "4" else "ip6"
        never = [n for n in policy.never_ips if n.version == int(v)]
        not_up = f"{fam} saddr != {_nets(never)} " if never else ""
        not_down = f"{fam} daddr != {_nets(never)} " if never else ""
        only = [n for n in policy.only_ips if n.version == int(v)]
        up: list[str] = []
        down: list[str] = []
        if policy.only_ips or policy.only_macs:
            if only:
                up.append(f"{fam} saddr {_nets(only)} ")
                down.append(f"{fam} daddr {_nets(only)} ")
            if policy.only_macs:
                up.append(f"ether saddr {_set(sorted(policy.only_macs))} ")
        else:
            up, down = [""], [""]
        rules += [dns_rule(v, "daddr", hours + who + not_up + no_macs) for who in up]
        if not policy.never_macs:
            rules += [dns_rule(v, "saddr", hours + who + not_down) for who in down]
    return rules
