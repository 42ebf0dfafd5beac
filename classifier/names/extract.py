"""Names in clear for a flow: SNI, ALPN and QUIC version from its first packets.

:class:`NameExtractor` is fed the first packets of one flow and reads the server name from
the TLS ClientHello (TCP, reassembled by sequence number), from the decrypted QUIC client
Initials (UDP) or from a Google QUIC CHLO (UDP, :mod:`classifier.names.gquic`). It never
raises on odd payloads: unreadable bytes are ignored. Its compiled twin for the common case
(a whole ClientHello or gQUIC CHLO in the first payload) is
:mod:`classifier.names.extract_fast`.
"""

from __future__ import annotations

from classifier.capture.packet import TCP, UDP
from classifier.names.gquic import parse_gquic_packet
from classifier.names.quic import QuicInitialParser, is_long_header
from classifier.names.tls import ClientHelloInfo, HelloReassembler

__all__ = ["NameExtractor"]

#: After this many UDP datagrams without a QUIC long header, the flow is not QUIC.
_UDP_GIVE_UP = 4


class NameExtractor:
    """Per-flow reader of the names a flow's first packets carry in clear.

    Attributes (read after any :meth:`feed`):

    * ``sni``: server name from the ClientHello, or ``None``;
    * ``alpn``: offered ALPN protocols as a comma list (``"h2,http/1.1"``), or ``None``;
    * ``source``: ``"tls"`` or ``"quic"`` once a ClientHello was parsed, ``"gquic"`` once a
      Google QUIC CHLO gave the name (Q024-Q047 in clear, Q050 decrypted), else ``None``;
    * ``quic_version``: version of the first decrypted client Initial or of the gQUIC
      packet that gave the name, else ``None``;
    * ``hello``: the full :class:`~classifier.names.tls.ClientHelloInfo` (``None`` for
      gQUIC: a CHLO is not a TLS hello);
    * ``done``: True when feeding more packets cannot change the result.
    """

    # one per flow in live mode: no instance dict
    __slots__ = (
        "sni",
        "alpn",
        "source",
        "quic_version",
        "hello",
        "done",
        "_tcp",
        "_quic",
        "_udp_seen",
    )

    def __init__(self) -> None:
        self.sni: str | None = None
        self.alpn: str | None = None
        self.source: str | None = None
        self.quic_version: int | None = None
        self.hello: ClientHelloInfo | None = None
        self.done = False
        self._tcp: dict[int, HelloReassembler] | None = None  # made at the first TCP payload
        self._quic: QuicInitialParser | None = None
        self._udp_seen = 0

    @classmethod
    def for_datagram(cls, payload: bytes, seen: int) -> NameExtractor | None:
        """The extractor to feed ``payload``, a UDP flow's datagram that follows ``seen``
        datagrams (with payload) that held no QUIC long header nor gQUIC packet: None when
        an extractor fed all of them could only count this one too, or had given up. A
        caller holding many such flows (live mode) keeps no extractor for them."""
        if seen >= _UDP_GIVE_UP or (
            not is_long_header(payload) and parse_gquic_packet(payload) is None
        ):
            return None
        extractor = cls()
        extractor._udp_seen = seen
        return extractor

    def feed(self, direction: int, proto: int, payload: bytes, seq: int = 0) -> None:
        """Feed one packet: ``direction`` +1 client->server / -1 server->client, ``proto``
        6 (TCP) or 17 (UDP), the transport payload as captured (may be truncated or empty)
        and the TCP sequence number (ignored for UDP). Never raises on odd input."""
        if self.done or not payload:
            return
        if proto == TCP:
            self._feed_tcp(direction, payload, seq)
        elif proto == UDP:
            self._feed_udp(payload)
        else:
            self.done = True

    def _feed_tcp(self, direction: int, payload: bytes, seq: int) -> None:
        # Both directions are read: a capture that starts mid-handshake can give the flow
        # the wrong orientation, and only a ClientHello (type 1) is ever accepted.
        tcp = self._tcp
        if tcp is None:
            tcp = self._tcp = {}
        side = tcp.get(direction)
        if side is None:
            side = tcp[direction] = HelloReassembler()
        hello = side.feed(payload, seq)
        if hello is not None:
            self._found(hello, "tls")
        elif len(tcp) == 2 and all(r.done for r in tcp.values()):
            self.done = True

    def _feed_udp(self, payload: bytes) -> None:
        self._udp_seen += 1
        if self._quic is None:
            chlo = parse_gquic_packet(payload)
            if chlo is not None and chlo.sni is not None:
                self.quic_version = chlo.version
                self._found_name(chlo.sni, "gquic")
                return
            if chlo is not None or not is_long_header(payload):
                if self._udp_seen >= _UDP_GIVE_UP:
                    self.done = True
                return
            self._quic = QuicInitialParser()
        hello = self._quic.feed(payload)
        if self._quic.version is not None:
            self.quic_version = self._quic.version
        if hello is not None:
            self._found(hello, "quic")
        elif self._quic.chlo_sni is not None:  # Q050
            self._found_name(self._quic.chlo_sni, "gquic")
        elif self._quic.failed:
            self.done = True

    def _found(self, hello: ClientHelloInfo, source: str) -> None:
        self.hello = hello
        self.sni = hello.sni
        self.alpn = ",".join(hello.alpn) if hello.alpn else None
        self.source = source
        self.done = True

    def _found_name(self, sni: str, source: str) -> None:
        self.sni = sni
        self.source = source
        self.done = True
