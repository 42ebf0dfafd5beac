"""The names plugin on the flow table: the names one extractor fed every packet finds,
with nothing held for the flows that carry none (docs/performance.md, "Memory holding
many flows")."""

from __future__ import annotations

import pytest

from classifier.capture.packet import Packet
from classifier.flows import FlowConfig, FlowTable
from classifier.names.extract import NameExtractor
from classifier.names.plugin import MAX_NAME_PACKETS, NamesPlugin, flow_names
from classifier.names.quic import QUIC_V1, encrypt_initial
from classifier.names.tls import build_client_hello
from tests.packets import udp

_RTP = b"\x80\x60" + b"\x00" * 40


def _initial(sni: str) -> bytes:
    hello = build_client_hello(sni, ("h3",), record=False)
    frame = b"\x06\x00" + (len(hello) | 0x4000).to_bytes(2, "big") + hello
    return encrypt_initial(QUIC_V1, b"\x01" * 8, b"", 0, frame, pad_to=1200)


def _datagrams(kinds: str) -> list[Packet]:
    """One flow's datagrams: "j" other traffic, "q" a QUIC Initial, "e" no payload,
    "t" a payload the capture did not keep; alternately up and down."""
    payloads = {"j": _RTP, "q": _initial("rr1---sn-x.googlevideo.com"), "e": b"", "t": b""}
    return [
        udp(0.1 * i, i % 2 == 0, 0 if k == "e" else 42, payload=payloads[k])
        for i, k in enumerate(kinds)
    ]


def _fed_everything(packets: list[Packet]) -> NameExtractor:
    """The reference: one extractor fed every name packet (as the plugin did before it
    made extractors only when needed)."""
    ex = NameExtractor()
    for n, pkt in enumerate(packets, 1):
        if n <= MAX_NAME_PACKETS and pkt.payload:
            ex.feed(1 if n % 2 else -1, pkt.proto, pkt.payload, pkt.seq)
    return ex


@pytest.mark.parametrize(
    ("kinds", "named"),
    [
        ("q", True),
        ("jq", True),
        ("jjjq", True),
        ("jjjjq", False),  # 4 datagrams of other traffic: the flow is not QUIC
        ("ejtejq", True),
        ("tjtjtjq", True),
        ("tjtjtjtjq", False),
        ("jjjj", False),
        ("e" * 23 + "q", True),
        ("e" * 24 + "q", False),  # past the first 24 packets
    ],
)
def test_udp_names_are_those_of_one_extractor_fed_everything(kinds: str, named: bool) -> None:
    names = NamesPlugin()
    table = FlowTable(FlowConfig(), plugins=[names])
    packets = _datagrams(kinds)
    for pkt in packets:
        flow = table.add(pkt)
    got = flow_names(flow, names.cache)
    ref = _fed_everything(packets)
    assert (got["sni"], got["alpn"]) == (ref.sni, ref.alpn)
    assert (got["sni"] is not None) == named


@pytest.mark.parametrize("kinds", ["j", "jjjjj", "eee", "jjjjq"])
def test_a_flow_without_a_name_holds_nothing(kinds: str) -> None:
    table = FlowTable(FlowConfig(), plugins=[NamesPlugin()])
    for pkt in _datagrams(kinds):
        flow = table.add(pkt)
    assert flow.ext is None
