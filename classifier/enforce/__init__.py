"""Enforcement: nftables timed sets, DNS sinkhole, dnsmasq snippet, policy, audit log.

Nothing else in shortflow touches the firewall or DNS. Public surface:

* :class:`NftTable` owns the nftables table ``inet shortflow`` (timed sets, forward chain);
* :class:`Enforcer` turns verdicts into blocks according to the policy (off/dry-run/nft);
* :class:`DnsSinkhole` forwards DNS, reports answers and sinkholes short-form names;
* :func:`load_policy`, :class:`Policy`, :class:`PolicyHolder` read the TOML policy;
* :class:`AuditLog` appends JSON lines for every block, unblock and sinkhole;
* :func:`render_dnsmasq_conf` / :func:`write_dnsmasq_conf` for routers running dnsmasq.
"""

from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.dns_sinkhole import DnsSinkhole
from classifier.enforce.dnsmasq import render_dnsmasq_conf, write_dnsmasq_conf
from classifier.enforce.enforcer import BlockRecord, Enforcer
from classifier.enforce.nft import NftBlock, NftTable
from classifier.enforce.policy import Policy, PolicyHolder, load_policy

__all__ = [
    "AuditLog",
    "BlockRecord",
    "DnsSinkhole",
    "Enforcer",
    "NftBlock",
    "NftTable",
    "Policy",
    "PolicyHolder",
    "load_policy",
    "read_audit",
    "render_dnsmasq_conf",
    "write_dnsmasq_conf",
]
