"""`shortflow dnsmasq-files`: the nftables table and the dnsmasq snippet for a router that
runs only the DNS part of shortflow (e.g. OpenWrt, where Python is too heavy).

The table is the one live mode builds (``inet shortflow``; load it with ``nft -f``), with
the policy's ``[clients]`` and ``schedules`` in its rules for the ``dns4``/``dns6`` sets
(:mod:`classifier.enforce.dns_only`); the snippet makes dnsmasq put the addresses it
resolves for the policy's ``[sinkhole]`` names into those sets, whose members are then
blocked until they expire.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.errors import ShortflowError

if TYPE_CHECKING:
    from classifier.enforce.policy import Policy

__all__ = ["register"]

log = logging.getLogger(__name__)

NFT_FILE = "shortflow.nft"
DNSMASQ_FILE = "shortflow-dnsmasq.conf"
_SCHEDULE_NOTE = (
    "# The policy's schedules are local times, which nft turns into UTC when it loads this\n"
    "# file: load it again (nft -f) after a daylight-saving change.\n"
)


def _not_applied(policy: Policy) -> list[str]:
    """The settings of ``policy`` that a DNS-only router does not apply: once loaded, it
    blocks the addresses of the ``[sinkhole]`` names for the policy's clients and hours."""
    out = []
    if policy.mode != "nft":
        out.append(f"mode is {policy.mode!r}, but these files block once loaded")
    if policy.allowed_sinkhole_names():
        out.append("[allow] names under a [sinkhole] name are not applied: dnsmasq adds them")
    return out


def _cmd_dnsmasq_files(args: argparse.Namespace) -> int:
    from classifier.enforce.dns_only import dns_block_rules
    from classifier.enforce.dnsmasq import render_dnsmasq_conf
    from classifier.enforce.nft import ruleset_text
    from classifier.enforce.policy import Policy, load_policy

    policy = load_policy(args.policy) if args.policy is not None else Policy.default()
    nft = ruleset_text(
        default_timeout_s=policy.block_seconds,
        dns_timeout_s=args.dns_seconds,
        dns_rules=dns_block_rules(policy),
    )
    if policy.schedules:
        nft = _SCHEDULE_NOTE + nft
    conf = render_dnsmasq_conf(sorted(policy.sinkhole_names))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / NFT_FILE).write_text(nft)
        (args.out / DNSMASQ_FILE).write_text(conf)
    except OSError as exc:
        raise ShortflowError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    for what in _not_applied(policy):
        log.warning("%s: %s (DNS-only setup)", args.policy or "built-in policy", what)
    print(
        f"wrote {args.out / NFT_FILE} (load it with: nft -f {NFT_FILE}) and "
        f"{args.out / DNSMASQ_FILE} ({len(policy.sinkhole_names)} names; put it in "
        "dnsmasq's conf-dir and restart dnsmasq)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``dnsmasq-files``."""
    p = sub.add_parser(
        "dnsmasq-files",
        help="write the nftables table and a dnsmasq nftset "
        "snippet that block the policy's [sinkhole] names (DNS-only routers)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="policy TOML whose [sinkhole] names and block_seconds are used "
        "(default: the built-in policy)",
    )
    p.add_argument(
        "--dns-seconds",
        type=int,
        default=3600,
        metavar="S",
        help="how long a resolved address stays blocked (default 3600)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"directory for {NFT_FILE} and {DNSMASQ_FILE}",
    )
    p.set_defaults(handler=_cmd_dnsmasq_files)
