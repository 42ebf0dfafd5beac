"""The flow plugin that reads names in clear: SNI/ALPN per flow, DNS answers per capture."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from classifier.capture.packet import UDP, Packet
from classifier.flows.flow import Flow
from classifier.names.cache import NameCache
from classifier.names.extract import NameExtractor

__all__ = ["DNS_PORT", "MAX_NAME_PACKETS", "NamesPlugin", "flow_names"]

#: DNS answers are read from packets to or from this port.
DNS_PORT = 53
#: A flow's packets fed to its name extractor: a ClientHello or QUIC Initial sits in the
#: first ones.
MAX_NAME_PACKETS = 24


class NamesPlugin:
    """Feeds DNS answers into a shared :class:`NameCache` and each flow's first packets into
    its own :class:`NameExtractor`; remembers the DNS name of the server at flow start.

    A flow gets its extractor at the first payload it is fed, and a UDP flow only at the
    first datagram that may hold a name (the datagrams before it were only counted, and
    the flow counts them: ``payload_packets``); the DNS name only when there is one. A
    flow that carries no name (a scan, a flood, a VPN tunnel) holds nothing of this."""

    def __init__(self, cache: NameCache | None = None) -> None:
        self.cache = cache if cache is not None else NameCache()

    def on_init(self, flow: Flow, pkt: Packet) -> None:
        dns_name = self.cache.lookup(flow.key.server, pkt.ts)
        if dns_name:
            flow.attach("dns_name", dns_name)

    def on_update(self, flow: Flow, pkt: Packet, direction: int) -> None:
        if DNS_PORT in (pkt.sport, pkt.dport):
            if pkt.payload:
                self.cache.feed_dns(pkt.payload, pkt.ts, tcp=pkt.proto != UDP)
            return
        if flow.packets > MAX_NAME_PACKETS or not pkt.payload:
            return
        extractor: NameExtractor | None = flow.attached("names")
        if extractor is None:
            if pkt.proto == UDP:
                # every earlier datagram with payload was fed, and held nothing
                extractor = NameExtractor.for_datagram(pkt.payload, flow.payload_packets - 1)
                if extractor is None:
                    return
            else:
                extractor = NameExtractor()
            flow.attach("names", extractor)
        if not extractor.done:
            extractor.feed(direction, pkt.proto, pkt.payload, pkt.seq)

    def steady(self, flow: Flow) -> bool:
        """Past its first ``MAX_NAME_PACKETS`` packets and not DNS: nothing left to read."""
        key = flow.key
        return flow.packets >= MAX_NAME_PACKETS and DNS_PORT not in (
            key.client_port,
            key.server_port,
        )

    def on_extend(
        self,
        flow: Flow,
        ts: npt.NDArray[np.float64],
        size: npt.NDArray[np.int64],
        direction: npt.NDArray[np.int8],
    ) -> None:
        """Nothing: a steady flow's packets hold nothing this plugin reads."""


def flow_names(flow: Flow, cache: NameCache) -> dict[str, str | None]:
    """SNI, ALPN, DNS name and the best name of a flow (SNI first, then DNS)."""
    extractor: NameExtractor | None = flow.attached("names")
    dns_name: str | None = flow.attached("dns_name") or cache.lookup(flow.key.server, flow.first_ts)
    sni = extractor.sni if extractor else None
    alpn = extractor.alpn if extractor else None
    if sni:
        name, source = sni, (extractor.source if extractor else None) or "tls"
    elif dns_name:
        name, source = dns_name, "dns"
    else:
        name, source = None, None
    return {"sni": sni, "alpn": alpn, "dns_name": dns_name, "name": name, "name_source": source}
